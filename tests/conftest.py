"""Session fixtures: in-process and served example Tesseracts, x64 JAX, a scratch working directory."""

from __future__ import annotations

import os

import pytest
from helpers import EXAMPLE_NAMES, Server, example_api

# Before jax is imported anywhere: float64 is the reference precision of the tests.
os.environ.setdefault("JAX_ENABLE_X64", "1")


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory):
    """In-process Tesseracts write ``run_*`` folders into the working directory."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture(scope="session")
def local_tesseract():
    """Factory: an in-process ``Tesseract.from_tesseract_api`` for an example, one per name."""
    from tesseract_core import Tesseract

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = Tesseract.from_tesseract_api(str(example_api(name)))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def served_tesseract():
    """Factory: a ``Tesseract.from_url`` client of a real served example, one server per name."""
    from tesseract_core import Tesseract

    servers: dict[str, Server] = {}

    def get(name: str, num_workers: int = 1):
        key = f"{name}:{num_workers}"
        if key not in servers:
            servers[key] = Server(example_api(name), num_workers=num_workers).start()
        return Tesseract.from_url(servers[key].url)

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(params=["local", "served"])
def tesseract_factory(request, local_tesseract, served_tesseract):
    """Parametrises a test over an in-process and a served client."""
    return local_tesseract if request.param == "local" else served_tesseract


__all__ = ["EXAMPLE_NAMES"]
