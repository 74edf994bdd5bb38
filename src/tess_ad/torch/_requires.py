"""Imported first by ``tess_ad.torch``: without PyTorch, say which extra to install."""

from .._runtime import require_modules

require_modules("tess_ad.torch", ("torch",), "torch")
