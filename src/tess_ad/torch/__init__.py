"""PyTorch adapter: call a Tesseract as a differentiable ``torch.autograd.Function``.

``apply_tesseract`` has the signature of ``tesseract_torch.apply_tesseract``
and adds ``torch.func`` transforms, double backward, and Tesseracts without
gradient endpoints (through :func:`tess_ad.with_finite_differences`). Every
derivative comes from the core's one numeric layer, the same calls the JAX
adapter makes, so both frameworks give the same numbers. ``sow`` and
``save_intermediates`` show the primals, tangents and cotangents inside a
pipeline, with the interface tesseract-jax gives JAX users.
"""

from . import _requires  # noqa: F401 - first: names the extra when the framework is missing
from ._apply import apply_tesseract as apply_tesseract
from ._sow import save_intermediates as save_intermediates
from ._sow import sow as sow

__all__ = ["apply_tesseract", "save_intermediates", "sow"]
