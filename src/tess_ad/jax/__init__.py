"""JAX adapter: make a Tesseract call differentiable under every JAX transformation.

``apply_tesseract(tesseract, inputs)`` is a drop-in for
``tesseract_jax.apply_tesseract``; ``TesseractModule`` wraps it as an equinox
layer. Every derivative number comes from ``tess_ad._endpoints.Endpoints``
(the same calls the PyTorch adapter makes), never from this package.
"""

from . import _requires  # noqa: F401 - first: names the extra when the framework is missing
from ._apply import apply_tesseract as apply_tesseract
from ._module import TesseractModule as TesseractModule

__all__ = ["TesseractModule", "apply_tesseract"]
