"""``TesseractModule``: a Tesseract as a layer of an equinox model.

The client is a *static* field: it is not an array, so ``eqx.filter_jit`` and
``eqx.filter_grad`` leave it alone (it becomes part of the treedef, hashed by
identity), and the module can sit anywhere inside a larger ``eqx.Module``.
"""

from __future__ import annotations

from typing import Any, Literal

import equinox as eqx

from ._apply import apply_tesseract

__all__ = ["TesseractModule"]


class TesseractModule(eqx.Module):
    """An ``eqx.Module`` that calls a Tesseract through :func:`apply_tesseract`.

    Attributes:
        tesseract: The Tesseract client (or ``with_finite_differences`` proxy).
        vmap_method: Passed to :func:`apply_tesseract`.
        materialize_jacobian: Passed to :func:`apply_tesseract`.

    Example:
        >>> import equinox as eqx, jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)  # else float64 outputs come back as float32
        >>> from tesseract_core import Tesseract
        >>> from tess_ad.jax import TesseractModule
        >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> layer = TesseractModule(t)
        >>> @eqx.filter_grad
        ... def grad(x):
        ...     return layer({"x": x, "a": 1.0, "b": 100.0})["loss"]
        >>> grad(jnp.array([0.5, 1.5]))
        Array([-251.,  250.], dtype=float64)
    """

    tesseract: Any = eqx.field(static=True)
    vmap_method: (
        Literal["sequential", "auto_experimental", "expand_dims", "broadcast_all"]
        | None
    ) = eqx.field(static=True, default=None)
    materialize_jacobian: bool | None = eqx.field(static=True, default=None)

    def __call__(self, inputs: Any) -> Any:
        """Apply the Tesseract to ``inputs`` (a dict following its InputSchema)."""
        return apply_tesseract(
            self.tesseract,
            inputs,
            vmap_method=self.vmap_method,
            materialize_jacobian=self.materialize_jacobian,
        )
