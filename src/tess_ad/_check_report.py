"""The outcome of a gradient check: :class:`Report` (what ``--json`` prints) and its arrays.

A :class:`Report` is a read-only mapping of plain JSON values, so
``to_json`` is the document as built; the arrays behind it (the reference
Jacobian, its error estimate, each way's scaled differences) are kept apart
in :class:`Blocks`, for the HTML page (``to_html``, drawn by
:mod:`tess_ad._check_html` with matplotlib, imported only then).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FRAMEWORK_WAYS", "Blocks", "Report"]

# The ways that check a framework adapter (along probes, not entry by entry).
FRAMEWORK_WAYS = ("jax", "torch")


@dataclass(frozen=True)
class Blocks:
    """The arrays behind a :class:`Report`, which its JSON leaves out (the HTML report draws them).

    ``reference[o][p]`` and ``error[o][p]``: the finite-difference Jacobian
    block of output ``o`` w.r.t. input ``p`` (shape ``o``'s then ``p``'s) and
    its estimated error; ``ratios[way][key]``: ``(way - reference) /
    allowed`` per compared entry, keyed as the way's pairs are (``(o, p)``
    for a Jacobian block, ``("VJP probe k", p)`` or ``(o, "JVP probe k")``
    for a framework's probe).
    """

    reference: Mapping[str, Mapping[str, np.ndarray]]
    error: Mapping[str, Mapping[str, np.ndarray]]
    ratios: Mapping[str, Mapping[tuple[str, str], np.ndarray]]
    output_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


class Report(Mapping[str, Any]):
    """The outcome of :func:`tess_ad.check_gradients`: a read-only mapping, as ``--json`` prints it.

    Keys: ``status`` (``"agrees"``, ``"disagrees"``, ``"error"``), ``ok``,
    ``failures`` (one line per disagreeing way and pair), ``where`` (the
    worst entry of each), ``errors`` (``{"way", "error", "hint"}`` of ways
    that raised; ``hint`` says what to do, or is ``None``), ``skipped``,
    ``ways`` (each way's calls, seconds and per-pair comparison),
    ``reference``, ``method``, ``k``, ``rtol``, the paths, the target and the
    inputs file. The arrays behind it are in :attr:`blocks`.

    Attributes:
        blocks: The reference Jacobian, its error estimate and each way's
            scaled differences (:class:`Blocks`), which the JSON leaves out.
    """

    def __init__(self, data: dict[str, Any], blocks: Blocks | None = None) -> None:
        self._data = data
        self.blocks = blocks or Blocks({}, {}, {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Report(status={self.status!r}, target={self['target']!r})"

    @property
    def ok(self) -> bool:
        """Whether every way agrees with the reference (and nothing raised)."""
        return bool(self._data["ok"])

    @property
    def status(self) -> str:
        """``"agrees"``, ``"disagrees"`` (a way is wrong, whatever else raised) or ``"error"`` (the Tesseract raised, and nothing was found wrong)."""
        return str(self._data["status"])

    @property
    def failures(self) -> list[str]:
        """One line per way and output/input pair that disagrees."""
        return list(self._data["failures"])

    @property
    def where(self) -> list[str]:
        """The worst entry of each disagreement: element, expected, actual, allowed."""
        return list(self._data["where"])

    def to_json(self) -> str:
        """The report as a JSON document (what ``tess-ad check --json`` prints).

        Strict JSON: a number that is not finite (a NaN gradient entry, the
        infinite difference of a block of the wrong shape) is written as the
        string ``"nan"``, ``"inf"`` or ``"-inf"``.
        """
        return json.dumps(_finite(self._data), indent=2, allow_nan=False)

    def to_html(self) -> str:
        """The report as a self-contained HTML page (what ``tess-ad check --report`` writes).

        The summary, then per output/input pair the reference Jacobian and
        each way's difference from it as heatmaps scaled by the allowed
        difference (PNG images embedded in the page). Needs matplotlib
        (``pip install 'tess-ad[report]'``).

        Returns:
            The page, one HTML document with nothing to fetch.

        Raises:
            ImportError: When matplotlib is not installed.

        Example:
            >>> import tess_ad
            >>> from tesseract_core import Tesseract
            >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
            >>> report = tess_ad.check_gradients(
            ...     t, {"x": [0.5, -1.0, 2.0], "a": 1.0, "b": 100.0}, frameworks=()
            ... )
            >>> page = report.to_html()
            >>> page.startswith("<!DOCTYPE html>"), page.count("<img")
            (True, 2)
        """
        from ._check_html import render

        return render(self)

    def summary(self) -> str:
        """The verdict in a few lines of text: what disagrees, where, what raised."""
        lines = [f"gradient check of {self['target']}: {self.status}"]
        lines += [f"  - {line}" for line in self.where or self.failures]
        lines += [f"  - error in {e['way']}: {e['error']}" for e in self["errors"]]
        lines += [f"  hint: {hint}" for hint in self.hints]
        if self.inconclusive:
            lines.append(
                f"  inconclusive (reference too noisy): {', '.join(self.inconclusive)}"
            )
        return "\n".join(lines)

    @property
    def hints(self) -> list[str]:
        """What to do about the errors, each hint once (several ways may share one)."""
        return [h for h in dict.fromkeys(e.get("hint") for e in self["errors"]) if h]

    @property
    def inconclusive(self) -> list[str]:
        """The comparisons the reference was too noisy to judge, by label."""
        return sorted(
            {
                p["label"]
                for w in self["ways"]
                for p in w["pairs"]
                if p["verdict"] == "inconclusive"
            }
        )


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
