"""tess_ad: differentiate any Tesseract from JAX and PyTorch, with the same numbers.

The core (this package) is framework-neutral and imports only NumPy: the
schema-leaf pytree and the finite-difference machinery. The adapters live in
``tess_ad.jax`` and ``tess_ad.torch`` and are imported explicitly.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._cache import CacheCorruptionWarning as CacheCorruptionWarning
from ._check import assert_gradients as assert_gradients
from ._check import check_gradients as check_gradients
from ._check_errors import CheckError as CheckError
from ._check_report import Report as Report
from ._dropin import finite_difference_jacobian as finite_difference_jacobian
from ._dropin import finite_difference_jvp as finite_difference_jvp
from ._dropin import finite_difference_vjp as finite_difference_vjp
from ._endpoints import NoGradientRouteError as NoGradientRouteError
from ._fd import FDNonFiniteError as FDNonFiniteError
from ._proxy import with_finite_differences as with_finite_differences
from ._retry import TesseractConnectionError as TesseractConnectionError
from ._retry import with_retries as with_retries
from ._schema import ArraySpec as ArraySpec
from ._schema import FlatTree as FlatTree
from ._schema import Leaf as Leaf
from ._schema import SchemaError as SchemaError
from ._schema import TesseractSchema as TesseractSchema
from ._schema import TreeSchema as TreeSchema
from ._schema import as_numpy as as_numpy
from ._schema import tesseract_schema as tesseract_schema
from ._sparsity import check_sparsity as check_sparsity
from ._sparsity import jacobian_sparsity as jacobian_sparsity

try:
    __version__ = _version("tess-ad")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ArraySpec",
    "CacheCorruptionWarning",
    "CheckError",
    "FDNonFiniteError",
    "FlatTree",
    "Leaf",
    "NoGradientRouteError",
    "Report",
    "SchemaError",
    "TesseractConnectionError",
    "TesseractSchema",
    "TreeSchema",
    "as_numpy",
    "assert_gradients",
    "check_gradients",
    "check_sparsity",
    "finite_difference_jacobian",
    "finite_difference_jvp",
    "finite_difference_vjp",
    "jacobian_sparsity",
    "tesseract_schema",
    "with_finite_differences",
    "with_retries",
]

# Tracebacks name the exceptions tess_ad.X, not tess_ad._module.X.
from ._public import show_as_public as _show_as_public

_show_as_public(globals(), __all__)
