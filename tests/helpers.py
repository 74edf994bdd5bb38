"""Test helpers shared by every test module: example loading, real servers, spies, tree comparison."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE_NAMES = ("rosenbrock", "nested", "float32", "meshstats_fd", "scales", "sleepy")


# ``vmap_method`` values: the ones that make one call for a whole batch, and all.
VECTORISING = ["expand_dims", "broadcast_all", "auto_experimental", "auto"]
VMAP_METHODS = [None, "sequential", *VECTORISING]


def one_call_or_one_per_element(method: str | None, one: int, per_element: int) -> int:
    """The calls a ``vmap`` makes with ``method`` when the Tesseract takes a batch axis."""
    return one if method in VECTORISING else per_element


def example_api(name: str) -> Path:
    """Path of an example's ``tesseract_api.py`` (tests/ fixtures first, then examples/)."""
    local = Path(__file__).parent / "tesseracts" / name / "tesseract_api.py"
    return local if local.exists() else EXAMPLES / name / "tesseract_api.py"


def example_inputs(name: str) -> dict:
    """The example inputs of an example Tesseract, as loaded from its JSON file."""
    path = example_api(name).parent / "example_inputs.json"
    return json.loads(path.read_text())["inputs"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runtime_command() -> str:
    """The ``tesseract-runtime`` script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "tesseract-runtime"
    return (
        str(beside)
        if beside.exists()
        else (shutil.which("tesseract-runtime") or "tesseract-runtime")
    )


class Server:
    """A real ``tesseract-runtime serve`` process on a free loopback port.

    Start fails fast (bounded wait) and shows the server's own output when it
    cannot start. ``stop()`` kills it; ``start()`` may be called again (same
    port) to restart it, as the fault tests do. ``debug=True`` serves with
    TESSERACT_DEBUG=1, so errors carry the Tesseract's own message.
    """

    def __init__(
        self,
        api_path: Path,
        num_workers: int = 1,
        port: int | None = None,
        debug: bool = False,
    ):
        self.api_path = Path(api_path).resolve()
        self.num_workers = num_workers
        self.debug = debug
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 60.0) -> Server:
        env = dict(os.environ, TESSERACT_API_PATH=str(self.api_path))
        if self.debug:
            # Debug mode puts the Tesseract's message into a 500 response. It also
            # starts a debugpy listener, on port 5678 unless told otherwise: two
            # debug servers at once would collide there, so each gets its own.
            env.update(TESSERACT_DEBUG="1", TESSERACT_DEBUGPY_PORT=str(free_port()))
        # the server writes run_* log folders into its working directory
        self._workdir = tempfile.mkdtemp(prefix=f"tess_ad_serve_{self.port}_")
        self._log = open(Path(self._workdir) / "server.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                _runtime_command(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num-workers",
                str(self.num_workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
            start_new_session=True,  # its worker processes share the group: stop() kills them all
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        output = self.output()
        self.stop()
        raise RuntimeError(
            f"tesseract-runtime serve did not start for {self.api_path}:\n{output}"
        )

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if getattr(self, "_workdir", None):
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


class Spy:
    """Counts calls to a client's endpoint methods without changing them.

    Wraps the bound methods of one client object (the real one, not a mock),
    so the numbers are the calls that really reached the Tesseract.
    """

    METHODS = (
        "apply",
        "jacobian",
        "jacobian_vector_product",
        "vector_jacobian_product",
        "abstract_eval",
    )

    def __init__(self, client: Any):
        self.client = client
        self.calls: Counter[str] = Counter()
        self.args: dict[str, list] = {m: [] for m in self.METHODS}
        self._orig = {}
        for name in self.METHODS:
            orig = getattr(client, name, None)
            if orig is None:
                continue
            self._orig[name] = orig
            setattr(client, name, self._wrap(name, orig))

    def _wrap(self, name, orig):
        def wrapper(*args, **kwargs):
            self.calls[name] += 1
            self.args[name].append((args, kwargs))
            return orig(*args, **kwargs)

        return wrapper

    def made(self) -> dict[str, int]:
        """The calls made, by endpoint (endpoints never called left out)."""
        return {k: v for k, v in self.calls.items() if v}

    def reset(self) -> None:
        self.calls.clear()
        for v in self.args.values():
            v.clear()

    def restore(self) -> None:
        for name in self._orig:
            try:
                delattr(self.client, name)
            except AttributeError:
                setattr(self.client, name, self._orig[name])

    def __enter__(self) -> Spy:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def assert_trees_close(
    actual: Any, expected: Any, *, rtol: float = 1e-7, atol: float = 0.0, path: str = ""
) -> None:
    """Compare nested trees leaf by leaf; the failure names every failing leaf path."""
    failures: list[str] = []

    def walk(a, e, p):
        if isinstance(e, Mapping):
            if not isinstance(a, Mapping) or set(a) != set(e):
                failures.append(
                    f"{p or '<root>'}: keys {sorted(a) if isinstance(a, Mapping) else type(a)} != {sorted(e)}"
                )
                return
            for k in e:
                walk(a[k], e[k], f"{p}.{k}" if p else str(k))
        elif isinstance(e, list | tuple):
            if not isinstance(a, list | tuple) or len(a) != len(e):
                failures.append(
                    f"{p}: length/type mismatch {type(a).__name__} vs {type(e).__name__}"
                )
                return
            for i, (x, y) in enumerate(zip(a, e, strict=False)):
                walk(x, y, f"{p}.[{i}]")
        elif isinstance(e, str | bool | int) and not isinstance(e, np.generic):
            if a != e:
                failures.append(f"{p}: {a!r} != {e!r}")
        else:
            a_arr, e_arr = np.asarray(a), np.asarray(e)
            if a_arr.shape != e_arr.shape:
                failures.append(f"{p}: shape {a_arr.shape} != {e_arr.shape}")
            elif not np.allclose(a_arr, e_arr, rtol=rtol, atol=atol, equal_nan=True):
                err = np.max(np.abs(a_arr - e_arr))
                failures.append(
                    f"{p}: max abs err {err:.3e} (rtol={rtol}, atol={atol})\n  got {a_arr}\n  want {e_arr}"
                )

    walk(actual, expected, path)
    if failures:
        raise AssertionError("trees differ at:\n" + "\n".join(failures))


def load_forward_ad_decompositions() -> None:
    """Load torch's forward-AD decompositions once, outside the tests.

    The first dual tensor of a process makes torch ``jit.script`` its
    decompositions, which emits torch's own "`torch.jit.script` is deprecated"
    DeprecationWarning; the suite turns warnings into errors, so this one-off,
    not-ours warning is consumed here and every later forward-AD call is silent.
    """
    import warnings

    import torch
    import torch.autograd.forward_ad as fwAD

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with fwAD.dual_level():
            fwAD.make_dual(torch.zeros(1), torch.ones(1))
