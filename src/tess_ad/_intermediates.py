"""Where ``sow`` puts what it sees while ``save_intermediates`` listens.

``sow(value, name)`` is the identity in both adapters; it also reports the
value (and, when a derivative passes through it, the tangent or cotangent)
to the :class:`Collector` that the innermost running ``save_intermediates``
opened. The adapters differ only in *when* they report: JAX reports when the
program runs (eagerly, or from a host callback of a compiled program), PyTorch
when the value is made and when autograd passes the gradient back. Keeping
the bookkeeping here gives both the same result format, tesseract-jax's::

    {name: {"primal": value, "tangent": value, "cotangent": value}}

(only the modes that occurred), and the same rules: one ``sow`` call site per
name (a second site with the same name raises ``ValueError``), while one site
reached several times (a Python loop, ``lax.scan``) stacks its values along
a new leading axis. A site is where ``sow`` was called from (file, line and
bytecode offset), so a loop reaches one site again and again.

Collectors form a process-wide stack, not a per-thread one, because a
compiled JAX program may report from a thread of its own: run one
``save_intermediates`` at a time per process.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

__all__ = ["Collector", "call_site", "collecting", "report", "saving"]

MODES = ("primal", "tangent", "cotangent")

_LOCK = threading.Lock()
_STACK: list[Collector] = []


def call_site(depth: int = 2) -> tuple[str, int, int]:
    """Where ``sow`` was called from: file, line and bytecode offset of the call.

    ``depth`` frames up from this function (2: the caller of ``sow``). The
    same call reached again (a loop) is the same site; two calls, even on
    one line, are two sites.
    """
    frame = sys._getframe(depth)
    return (frame.f_code.co_filename, frame.f_lineno, frame.f_lasti)


class Collector:
    """The values reported to one ``save_intermediates`` call, for one tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._values: dict[tuple[str, str], list[Any]] = {}
        self._sites: dict[tuple[str, str], Any] = {}
        self._error: ValueError | None = None

    def add(self, site: Any, name: str, mode: str, value: Any) -> None:
        key = (name, mode)
        first = self._sites.setdefault(key, site)
        if first != site and self._error is None:
            self._error = ValueError(
                f"Duplicate sow name {name!r} (mode {mode!r}): two different sow "
                "calls use it; each sow call needs its own name within one "
                "save_intermediates. Rename one of them."
            )
        self._values.setdefault(key, []).append(value)

    def result(self, stack: Callable[[list[Any]], Any]) -> dict[str, dict[str, Any]]:
        """``{name: {mode: value}}``; repeated reports of one site stacked by ``stack``.

        Raises:
            ValueError: If two ``sow`` call sites used the same name.
        """
        if self._error is not None:
            raise self._error
        out: dict[str, dict[str, Any]] = {}
        for (name, mode), values in self._values.items():
            out.setdefault(name, {})[mode] = (
                values[0] if len(values) == 1 else stack(values)
            )
        return out


def report(site: Any, name: str, tag: str, mode: str, value: Any) -> None:
    """Give ``value`` to the innermost collector listening for ``tag``, if any."""
    with _LOCK:
        for collector in reversed(_STACK):
            if collector.tag == tag:
                collector.add(site, name, mode, value)
                return


@contextmanager
def collecting(tag: str) -> Iterator[Collector]:
    """Open a collector for ``tag`` for the duration of the block."""
    collector = Collector(tag)
    with _LOCK:
        _STACK.append(collector)
    try:
        yield collector
    finally:
        with _LOCK:
            _STACK.remove(collector)


def saving(
    fn: Callable[..., Any],
    tag: str,
    stack: Callable[[list[Any]], Any],
    settle: Callable[[Any], None] = lambda result: None,
) -> Callable[..., tuple[Any, dict[str, dict[str, Any]]]]:
    """``save_intermediates`` of an adapter: ``fn`` run with a collector open.

    ``settle(result)`` runs before the collector closes (JAX waits there for
    the reports of compiled programs); ``stack`` stacks a site's repeats.
    """

    @wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
        with collecting(tag) as collector:
            result = fn(*args, **kwargs)
            settle(result)
        return result, collector.result(stack)

    return wrapped
