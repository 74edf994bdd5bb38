"""Is tesseract-core's runtime installed? Asked before tess_ad loads a Tesseract in-process.

``pip install tess-ad`` brings tesseract-core's client only, which is all a
served Tesseract (``Tesseract.from_url``) needs. Loading a ``tesseract_api.py``
in-process (``Tesseract.from_tesseract_api``) imports the runtime, and without
it tesseract-core prints a hint naming its own extra and calls ``sys.exit(1)``
from inside the library call. tess_ad asks first, from the package metadata
(the runtime extra's declared requirements), and raises an ``ImportError`` that
names the extra of tess_ad to install.
"""

from __future__ import annotations

import re
from importlib import metadata

__all__ = [
    "RUNTIME_EXTRA",
    "missing_runtime_packages",
    "require_modules",
    "require_runtime",
]

RUNTIME_EXTRA = "pip install 'tess-ad[runtime]'"

_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']runtime["']""")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def missing_runtime_packages() -> list[str]:
    """The packages of ``tesseract-core[runtime]`` that are not installed (sorted)."""
    missing = []
    for requirement in metadata.requires("tesseract-core") or []:
        spec, _, marker = requirement.partition(";")
        if not _EXTRA_MARKER.search(marker):
            continue
        match = _NAME.match(spec.strip())
        if match is None:
            continue
        try:
            metadata.distribution(match.group())
        except metadata.PackageNotFoundError:
            missing.append(match.group())
    return sorted(set(missing))


def require_runtime(what: str) -> None:
    """Raise an ``ImportError`` naming the extra to install when the runtime is missing.

    Args:
        what: What needs the runtime, for the message (``"loading x/tesseract_api.py
            in-process"``).

    Raises:
        ImportError: If a package of ``tesseract-core[runtime]`` is not installed.
    """
    missing = missing_runtime_packages()
    if missing:
        raise ImportError(
            f"{what} needs tesseract-core's runtime, which is not installed "
            f"(missing: {', '.join(missing)}). Install it with: {RUNTIME_EXTRA}. "
            "A served Tesseract (Tesseract.from_url) needs only the client."
        )


def require_modules(what: str, modules: tuple[str, ...], extra: str) -> None:
    """Raise an ``ImportError`` naming the extra to install when a module is missing.

    Args:
        what: What needs the modules, for the message (``"tess_ad.jax"``).
        modules: Top-level module names, looked up without importing them.
        extra: The extra of tess_ad that installs them.

    Raises:
        ImportError: If one of ``modules`` is not installed.
    """
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise ImportError(
            f"{what}: {' and '.join(missing)} not installed. "
            f"Install with: pip install 'tess-ad[{extra}]'"
        )
