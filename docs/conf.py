"""Sphinx configuration of the tess_ad API reference and tutorials.

Built in CI with warnings as errors: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
The tutorials are the notebooks in ``notebooks/`` (linked from ``docs/tutorials/``),
rendered with their committed outputs: the test suite executes them, the docs
build never does.
"""

from __future__ import annotations

import tess_ad

project = "tess_ad"
author = "tess_ad contributors"
copyright = "tess_ad contributors"  # noqa: A001 - Sphinx's name for it
release = tess_ad.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# Google-style docstrings (Args:, Returns:, Raises:, Example:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"

# Notebooks are rendered as committed, never executed here.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence"]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"tess_ad {release}"
