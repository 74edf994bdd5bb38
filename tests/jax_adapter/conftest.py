"""Fixtures of the JAX adapter tests: clients for the cases, the test-only Tesseracts, eager/jit modes."""

from __future__ import annotations

import pytest
from helpers import Server
from jax_adapter_refs import TESSERACTS, Case, make_case

import tess_ad


@pytest.fixture(scope="session")
def test_tesseract():
    """Factory: an in-process client of a Tesseract in tests/jax_adapter/tesseracts/."""
    from tesseract_core import Tesseract

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = Tesseract.from_tesseract_api(
                str(TESSERACTS / name / "tesseract_api.py")
            )
        return cache[name]

    return get


@pytest.fixture(scope="session")
def served_test_tesseract():
    """Factory: a served client of a Tesseract in tests/jax_adapter/tesseracts/ (one server each)."""
    from tesseract_core import Tesseract

    servers: dict[tuple[str, bool], Server] = {}

    def get(name: str, debug: bool = False):
        """``debug=True`` serves with TESSERACT_DEBUG=1 (errors carry the Tesseract's message)."""
        key = (name, debug)
        if key not in servers:
            api = TESSERACTS / name / "tesseract_api.py"
            servers[key] = Server(api, debug=debug).start()
        return Tesseract.from_url(servers[key].url)

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture
def case_client(local_tesseract, served_tesseract):
    """Factory: ``(case_name, kind) -> (case, client)``; FD cases are wrapped client-side.

    A fresh proxy per call keeps the per-client records of one test away from
    the next; in-process clients are shared (session-cached).
    """

    def get(case_name: str, kind: str) -> tuple[Case, object]:
        case = make_case(case_name)
        client = (
            local_tesseract(case.example)
            if kind == "local"
            else served_tesseract(case.example)
        )
        if case.fd:
            client = tess_ad.with_finite_differences(client)
        return case, client

    return get
