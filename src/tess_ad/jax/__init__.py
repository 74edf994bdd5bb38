"""JAX adapter: make a Tesseract call differentiable under every JAX transformation.

``apply_tesseract(tesseract, inputs)`` is a drop-in for
``tesseract_jax.apply_tesseract``; ``TesseractModule`` wraps it as an equinox
layer. Every derivative number comes from the core's one numeric layer (the
same calls the PyTorch adapter makes), never from this package.
``OutputShapeError`` is what ``jit`` raises when a Tesseract's output shapes
cannot be known before it runs. Importing this package makes Tesseract
clients JAX pytrees without leaves, as tesseract-jax does, so they can be
``jit`` arguments.
"""

from . import _requires  # noqa: F401 - first: names the extra when the framework is missing
from ._apply import apply_tesseract as apply_tesseract
from ._module import TesseractModule as TesseractModule
from ._pytree import register_clients as _register_clients
from ._spec import OutputShapeError as OutputShapeError

__all__ = ["OutputShapeError", "TesseractModule", "apply_tesseract"]

_register_clients()  # Tesseract clients pass through jit as arguments (see _pytree)
