"""Fixtures of the torch adapter tests: the raising Tesseract, quiet forward-AD start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Server, load_forward_ad_decompositions

RAISING_API = (
    Path(__file__).parent / "tesseracts" / "torch_raising" / "tesseract_api.py"
)


@pytest.fixture(autouse=True, scope="session")
def _forward_ad_decompositions_loaded():
    """Load torch's forward-AD decompositions once, outside the tests (see helpers)."""
    load_forward_ad_decompositions()


@pytest.fixture(scope="session")
def raising_tesseract():
    """Factory: the torch_raising Tesseract, ``"local"`` (in-process) or ``"served"`` (debug mode)."""
    from tesseract_core import Tesseract

    cache: dict[str, object] = {}
    servers: list[Server] = []

    def get(kind: str):
        if kind not in cache:
            if kind == "local":
                cache[kind] = Tesseract.from_tesseract_api(str(RAISING_API))
            else:
                # tesseract-core's server answers an exception in the Tesseract
                # with a bare "500 Internal Server Error" unless it runs in debug
                # mode, where the response carries the traceback and message.
                server = Server(RAISING_API, debug=True).start()
                servers.append(server)
                cache[kind] = Tesseract.from_url(server.url)
        return cache[kind]

    yield get
    for server in servers:
        server.stop()
