"""JAX adapter: make a Tesseract call differentiable under every JAX transformation.

``apply_tesseract(tesseract, inputs)`` is a drop-in for
``tesseract_jax.apply_tesseract``; ``TesseractModule`` wraps it as an equinox
layer. Every derivative number comes from the core's one numeric layer (the
same calls the PyTorch adapter makes), never from this package.
``OutputShapeError`` is what ``jit`` raises when a Tesseract's output shapes
cannot be known before it runs. ``sow``/``save_intermediates`` (tesseract-jax's
interface) show the primals, tangents and cotangents inside a pipeline.
Importing this package makes Tesseract clients JAX pytrees without leaves, as
tesseract-jax does, so they can be ``jit`` arguments.
"""

from . import _requires  # noqa: F401 - first: names the extra when the framework is missing
from ._apply import apply_tesseract as apply_tesseract
from ._module import TesseractModule as TesseractModule
from ._pytree import register_clients as _register_clients
from ._sow import save_intermediates as save_intermediates
from ._sow import sow as sow
from ._spec import OutputShapeError as OutputShapeError

__all__ = [
    "OutputShapeError",
    "TesseractModule",
    "apply_tesseract",
    "save_intermediates",
    "sow",
]

_register_clients()  # Tesseract clients pass through jit as arguments (see _pytree)
