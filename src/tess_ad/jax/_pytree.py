"""Tesseract clients are JAX pytrees without leaves, so ``jit`` takes them as arguments.

``jax.jit(f)(tesseract, x)`` flattens every argument; a client that JAX does
not know as a pytree is refused ("not a valid JAX type"). tesseract-jax
registers ``tesseract_core.Tesseract`` as a node with no children whose
auxiliary data is the client itself: it passes through ``jit`` (and ``vmap``,
``grad``...) unchanged, and ``jit`` retraces for another client (clients
compare by identity). tess_ad registers it the same way, so code written for
either package runs on the other.

JAX allows one registration per type and refuses a second with a
``ValueError``. tesseract-jax registers ``Tesseract`` unconditionally when it
is imported, so if tess_ad registered first, a later ``import tesseract_jax``
would fail. Hence, when tesseract-jax is installed, tess_ad imports it (about
0.4 s) and lets its registration stand; only without it (or if it cannot be
imported, or does not register) does tess_ad register ``Tesseract`` itself.

tess_ad's own client wrappers (:func:`tess_ad.with_finite_differences`,
:func:`tess_ad.with_retries`) are registered the same way. A registration
covers one exact type, not its subclasses, so they need their own whether or
not they derive from ``Tesseract``; no other package registers them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from typing import Any

import jax
from tesseract_core import Tesseract

from tess_ad._proxy import FiniteDifferenceTesseract
from tess_ad._retry import RetryingTesseract

__all__ = ["register_clients"]


def _flatten(client: Any) -> tuple[tuple[()], Any]:
    return (), client


def _unflatten(client: Any, _children: Any) -> Any:
    return client


def _register(cls: type) -> None:
    """Register ``cls`` as a leafless node, unless some package already has."""
    try:
        jax.tree_util.register_pytree_node(cls, _flatten, _unflatten)
    except ValueError as exc:  # registered before (tesseract-jax, or a reload)
        if "Duplicate" not in str(exc):
            raise


def register_clients() -> None:
    """Make ``Tesseract`` and tess_ad's client wrappers leafless JAX pytrees."""
    if importlib.util.find_spec("tesseract_jax") is not None:
        # Its import registers Tesseract; ours first would make it fail later. A
        # tesseract-jax that cannot be imported cannot collide either.
        with contextlib.suppress(Exception):
            importlib.import_module("tesseract_jax")
    _register(Tesseract)
    _register(FiniteDifferenceTesseract)
    _register(RetryingTesseract)
