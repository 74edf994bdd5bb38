"""Imported first by ``tess_ad.jax``: without JAX, say which extra to install."""

from .._runtime import require_modules

require_modules("tess_ad.jax", ("jax", "equinox"), "jax")
