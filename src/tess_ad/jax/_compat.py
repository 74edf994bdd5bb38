"""Every private or unstable JAX symbol the adapter uses, in one place.

The adapter defines its own primitives, so it needs a few pieces of JAX that
are not covered by its compatibility promise. Each is imported here, once,
with what it is for and what breaks without it. A new JAX release that moves
one of them means this file to fix: a symbol the adapter cannot work without
raises at import with a message naming it; one it can do without falls back
with a warning, never silently.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np

__all__ = [
    "Primitive",
    "ShapedArray",
    "Tracer",
    "ad",
    "batching",
    "canonical_dtype",
    "emit_python_callback",
    "float0",
    "hold_weakly_in_jax_caches",
    "lower_fun",
    "mlir",
    "under_jit",
]


def _missing(symbol: str, needed_for: str) -> ImportError:
    return ImportError(
        f"tess_ad.jax needs {symbol} ({needed_for}), which JAX {jax.__version__} "
        "does not have. tess_ad is tested with JAX 0.6 to 0.12; install one of "
        "those (`pip install 'jax<0.13'`) or a newer tess_ad."
    )


try:  # Defining primitives: public in jax.extend, whose API JAX may still change.
    import jax.extend.core
    from jax.extend.core import Primitive
except ImportError as exc:  # pragma: no cover - depends on the JAX version
    raise _missing("jax.extend.core.Primitive", "the adapter's primitives") from exc

# Registering JVP, transpose, batching and lowering rules for those primitives.
from jax.interpreters import ad, batching, mlir  # noqa: E402

try:  # Abstract values and tracers: the avals our abstract-eval rules return.
    ShapedArray = jax.core.ShapedArray
    Tracer = jax.core.Tracer
except AttributeError as exc:  # pragma: no cover - depends on the JAX version
    raise _missing("jax.core.ShapedArray/Tracer", "abstract evaluation") from exc

# The tangent dtype of integer inputs: a zero cotangent that needs no call.
float0 = jax.dtypes.float0

try:
    # The host callback of the lowering. jax.pure_callback would copy every
    # operand to a device array and back, and cannot say "no side effect" the
    # way XLA needs to drop unused calls; tesseract-jax uses the same function.
    emit_python_callback = mlir.emit_python_callback
except AttributeError as exc:  # pragma: no cover - depends on the JAX version
    raise _missing("jax.interpreters.mlir.emit_python_callback", "jit") from exc


try:
    # A lowering written as a JAX function: sow's lowering adds a
    # jax.debug.callback (public) to report values when the program runs.
    lower_fun = mlir.lower_fun
except AttributeError as exc:  # pragma: no cover - depends on the JAX version
    raise _missing("jax.interpreters.mlir.lower_fun", "sow under jit") from exc


def canonical_dtype(dtype: Any) -> np.dtype:
    """The dtype JAX uses for ``dtype`` (float64 becomes float32 without x64)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.dtype(dtype)))


# In jax.extend.core since JAX 0.7; in jax.core before (0.4.36 to 0.6).
_UNDER_JIT = getattr(jax.extend.core, "unsafe_am_i_under_a_jit_DO_NOT_USE", None)
if _UNDER_JIT is None:  # pragma: no cover - depends on the JAX version
    _UNDER_JIT = getattr(jax.core, "unsafe_am_i_under_a_jit_DO_NOT_USE", None)
if _UNDER_JIT is None:  # pragma: no cover - depends on the JAX version
    warnings.warn(
        "tess_ad.jax: this JAX has no jax.extend.core.unsafe_am_i_under_a_jit_DO_NOT_USE; "
        "inside jit, a Tesseract call whose inputs are all constants now runs while "
        "tracing (not when the program runs), identical calls are not merged, and the "
        "vmap of a second-order product unrolls one call per element in the program "
        "(all correct, only slower).",
        RuntimeWarning,
        stacklevel=2,
    )


def under_jit() -> bool:
    """Whether we are tracing into a jaxpr (``jit``, a ``lax.map`` body, ...).

    Batching uses it to choose ``jax.lax.map`` (a small program) over a Python
    loop of eager calls; without the probe the loop is used, which is always
    correct.
    """
    return bool(_UNDER_JIT()) if _UNDER_JIT is not None else False


def hold_weakly_in_jax_caches(cls: type) -> None:
    """Let JAX's caches keyed on primitive parameters hold ``cls`` weakly.

    JAX memoises the abstract evaluation of every primitive it traces (an LRU
    of 2048 entries keyed on the parameters). Every eager ``grad`` makes a new
    call object, so without this each call would stay alive in that cache,
    with whatever static input arrays it holds, until 2048 newer calls pushed
    it out: memory grows over a long loop. JAX registers its own ``Jaxpr`` the
    same way (``jax._src.util.weakref_cache_key_types``, a private set,
    which came with that cache: an older JAX has neither).
    """
    from jax._src import util

    registry = getattr(util, "weakref_cache_key_types", None)
    if registry is not None:
        registry.add(cls)
    elif hasattr(util, "multi_weakref_lru_cache"):  # pragma: no cover - JAX-dependent
        # the cache is there but its registry of weak key types moved: say so
        warnings.warn(
            "tess_ad.jax: this JAX has no jax._src.util.weakref_cache_key_types, so "
            "JAX's caches keep each eager Tesseract call alive until 2048 newer ones "
            "push it out; memory grows with the static inputs of those calls.",
            RuntimeWarning,
            stacklevel=2,
        )
    # else (JAX < 0.7): no cache keyed on primitive parameters, nothing to do
