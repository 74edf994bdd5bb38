"""The core never imports a framework: ``import tess_ad`` pulls in neither jax nor torch.

Checked in a fresh interpreter (the test process itself has imported jax and
torch through other test modules), after importing the package and every
core module in it; the adapters (``tess_ad.jax``, ``tess_ad.torch``) are the
only places allowed to import a framework.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRAMEWORKS = ("jax", "jaxlib", "torch", "equinox", "tesseract_jax", "tesseract_torch")

CHECK = """
import json, sys
{imports}
loaded = sorted(
    m for m in sys.modules if m.split(".")[0] in {frameworks!r}
)
print(json.dumps(loaded))
"""

IMPORT_CORE = """
import importlib, pkgutil
import tess_ad
core = [
    m.name for m in pkgutil.iter_modules(tess_ad.__path__) if not m.ispkg
]
assert "_schema" in core and "_paths" in core, core
for name in core:
    importlib.import_module("tess_ad." + name)
"""


def _frameworks_loaded(imports: str) -> list[str]:
    code = CHECK.format(imports=imports, frameworks=set(FRAMEWORKS))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_tess_ad_loads_no_framework():
    assert _frameworks_loaded("import tess_ad") == []


def test_core_modules_load_no_framework():
    loaded = _frameworks_loaded(
        IMPORT_CORE + "\nfrom tess_ad import tesseract_schema, SchemaError, as_numpy"
    )
    assert loaded == []


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_the_check_sees_a_framework_import(framework):
    # Control: the same check reports a framework once one is imported.
    assert framework in _frameworks_loaded(f"import tess_ad\nimport {framework}")


def test_public_names_resolve():
    code = "import tess_ad\nmissing = [n for n in tess_ad.__all__ if not hasattr(tess_ad, n)]\nassert not missing, missing"
    assert _frameworks_loaded(code) == []


def test_every_raised_or_warned_type_has_a_public_name():
    """Users catch what tess_ad raises or warns by its public name, never a private path."""
    import importlib.metadata

    import tess_ad
    import tess_ad.jax
    from tess_ad._cache import CacheCorruptionWarning
    from tess_ad._endpoints import NoGradientRouteError
    from tess_ad._errors import SchemaError, TesseractConnectionError
    from tess_ad._fd import FDNonFiniteError
    from tess_ad.jax._spec import OutputShapeError

    assert tess_ad.CacheCorruptionWarning is CacheCorruptionWarning
    assert tess_ad.NoGradientRouteError is NoGradientRouteError
    assert tess_ad.SchemaError is SchemaError
    assert tess_ad.TesseractConnectionError is TesseractConnectionError
    assert tess_ad.FDNonFiniteError is FDNonFiniteError
    assert tess_ad.jax.OutputShapeError is OutputShapeError
    for name in ("CacheCorruptionWarning", "FDNonFiniteError", "SchemaError"):
        assert name in tess_ad.__all__
    assert "OutputShapeError" in tess_ad.jax.__all__
    assert tess_ad.__version__ == importlib.metadata.version("tess-ad")
