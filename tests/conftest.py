"""Session fixtures: in-process and served example Tesseracts, x64 JAX, a scratch working directory."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import EXAMPLE_NAMES, Server, example_api

# Before jax is imported anywhere: float64 is the reference precision of the tests.
os.environ.setdefault("JAX_ENABLE_X64", "1")

# tesseract-core's in-process client writes a ``run_<uuid>`` folder (its logs) for
# every call, under a ``tesseract_output_*`` temporary directory that it deletes
# only when the client is garbage collected; a served Tesseract writes them into
# its working directory. The session-scoped clients of this suite made tens of
# thousands of them, and deleting them all at interpreter exit took about two
# minutes. So every temporary file of this run (and of its subprocesses, through
# TMPDIR) lives in one directory, the run folders are removed after each test,
# and the directory itself when the session ends.
RUN_TMP = Path(tempfile.mkdtemp(prefix="tess_ad_tests_"))
os.environ["TMPDIR"] = str(RUN_TMP)
tempfile.tempdir = str(RUN_TMP)


def pytest_unconfigure(config):
    shutil.rmtree(RUN_TMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def _remove_run_folders():
    """After each test, delete the ``run_*`` log folders its Tesseract calls wrote."""
    yield
    for run in RUN_TMP.glob("*/run_*"):
        shutil.rmtree(run, ignore_errors=True)


# The slow tier (`pytest -m slow`; `bash dev/test.sh` and CI run both tiers): long
# loops, notebooks, and the costly corners of cross products. Every entry names
# what keeps its behaviour covered in the default tier, or says that only this
# tier checks it. `*` matches any text;
# node ids are relative to the repository root.
SLOW = {
    "tests/test_notebooks.py::test_notebook_runs_and_matches_committed_outputs[*]": "notebooks (marked in place); their code paths are the adapters' tests",
    "tests/test_cli.py::test_every_example_passes[sleepy]": "sleeps 40 ms per apply; the other examples pass in the default tier",
    "tests/test_cli.py::test_installed_script_runs": "a fresh interpreter importing jax and torch; in-process CLI tests cover check",
    "tests/test_memory.py::test_memory_stays_flat[*]": "2,000 calls each; memory growth is checked in this tier only",
    "tests/test_memory.py::test_the_check_catches_a_leak": "the control of the memory checks (2,000 calls), beside them",
    "tests/torch_adapter/test_torch_contract.py::test_import_tess_ad_does_not_load_torch": "a fresh interpreter; test_core_imports checks import tess_ad by default",
    "tests/jax_adapter/test_jax_dtypes.py::test_import_tess_ad_does_not_load_jax": "a fresh interpreter; test_core_imports checks import tess_ad by default",
    "tests/test_concurrency.py::test_threads_served_four_workers_match_serial[*]": "8 threads x 50 steps on a 4-worker server; in-process threads stay default",
    "tests/test_concurrency.py::test_threads_in_process_match_serial[jax-eager]": "jax-jit and torch stay in the default tier",
    "tests/test_concurrency.py::test_threads_through_finite_differences_match_serial[*]": "threads over FD sweeps; in-process threads and FD executors stay default",
    "tests/test_concurrency.py::test_jax_and_torch_threads_share_one_served_client": "mixed-framework threads on one served client",
    "tests/jax_adapter/test_jax_transforms.py::test_transform_matches_reference[nested_fd-served-hessian-*]": "nested_fd Hessian: local-jit stays default; served x eager/jit is slow",
    "tests/jax_adapter/test_jax_transforms.py::test_transform_matches_reference[nested_fd-local-hessian-eager]": "nested_fd Hessian: local-jit stays default",
    "tests/test_evaluate.py::test_dask_local_cluster_is_identical_to_serial": "starts a dask LocalCluster (marked in place); thread executors stay default",
    "tests/test_evaluate.py::test_server_killed_during_a_call_keeps_every_finished_evaluation": "kills a server mid-call; test_killed_server_then_resume_from_cache stays default",
    "tests/torch_adapter/test_torch_autograd.py::test_gradcheck_and_gradgradcheck_nested_finite_differences": "gradgradcheck through FD; the rosenbrock gradcheck stays default",
}
_SLOW = [re.compile(re.escape(p).replace(r"\*", ".*") + "$") for p in SLOW]


def pytest_collection_modifyitems(config, items):
    matched = set()
    for item in items:
        hits = {i for i, p in enumerate(_SLOW) if p.match(item.nodeid)}
        if hits:
            item.add_marker(pytest.mark.slow)
            matched |= hits
    # A renamed test would silently leave the slow tier: when the whole suite is
    # collected, every entry of SLOW must name at least one test.
    whole_suite = (
        [Path(a).resolve() for a in config.args] == [Path(__file__).parent]
        and not config.getoption("ignore")
        and not config.getoption("ignore_glob")
        and not config.getoption("deselect")
    )
    stale = [p for i, p in enumerate(SLOW) if i not in matched]
    if whole_suite and stale:
        raise pytest.UsageError(f"tests/conftest.py SLOW names no test: {stale}")


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
    """Factory: a ``Tesseract.from_url`` client of a real served example, one server per name.

    ``debug=True`` serves with TESSERACT_DEBUG=1 (errors carry the Tesseract's
    traceback), on a server of its own.
    """
    from tesseract_core import Tesseract

    servers: dict[str, Server] = {}

    def get(name: str, num_workers: int = 1, debug: bool = False):
        key = f"{name}:{num_workers}" + (":debug" if debug else "")
        if key not in servers:
            servers[key] = Server(
                example_api(name), num_workers=num_workers, debug=debug
            ).start()
        return Tesseract.from_url(servers[key].url)

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(params=["local", "served"])
def tesseract_factory(request, local_tesseract, served_tesseract):
    """Parametrises a test over an in-process and a served client."""
    return local_tesseract if request.param == "local" else served_tesseract


__all__ = ["EXAMPLE_NAMES"]
