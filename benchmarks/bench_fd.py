"""Finite differences: tess_ad against tesseract-core's experimental helpers, in one run.

Prints Markdown tables:

1. apply calls and wall time of the Jacobian / VJP / JVP on ``examples/meshstats_fd``
   (tess_ad's drop-in helpers against ``tesseract_core.runtime.experimental``);
   then the two ways the drop-ins make perturbed points: re-validated
   (meshstats' mesh has a ``model_validator``, so every point is validated
   again, as tesseract-core does) against model copies (the same schema with
   the validator left out, which the drop-ins may copy without validating);
2. accuracy of the default step on inputs near 1e6, 1 and 1e-6;
3. dense against coloured central Jacobians (``sparsity=``) of a 1-D stencil,
   n = 100 and 1,000: calls, seconds, error;
4. batched evaluation points (``batch_size=``) against one point per call,
   served, 20 ms per call;
5. error estimates against true errors on an analytic Tesseract, float64 and
   float32, per method: how many entries they bound, by how much;
6. wall time of a central-difference Jacobian on ``examples/sleepy`` (apply
   sleeps 40 ms): tesseract-core's helper, tess_ad serial, a thread pool
   against a server with 4 workers, and a dask LocalCluster with 4 workers.

Run: ``python benchmarks/bench_fd.py`` (about two minutes on 2 cores). Times are
medians of a few repeats; quote the ratios, not the absolute numbers.
"""

from __future__ import annotations

import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
from pydantic import create_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Server, example_inputs  # noqa: E402
from tesseract_core import Tesseract  # noqa: E402
from tesseract_core.runtime.core import load_module_from_path  # noqa: E402
from tesseract_core.runtime.experimental import (  # noqa: E402
    finite_difference_jacobian as core_jacobian,
)
from tesseract_core.runtime.experimental import (  # noqa: E402
    finite_difference_jvp as core_jvp,
)
from tesseract_core.runtime.experimental import (  # noqa: E402
    finite_difference_vjp as core_vjp,
)

import tess_ad  # noqa: E402


def timed(fn, repeats=3):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return median(times), out


def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def meshstats_40():
    """The meshstats_fd module and its example inputs on a bigger mesh: 40 points."""
    api = load_module_from_path(ROOT / "examples/meshstats_fd/tesseract_api.py")
    raw = example_inputs("meshstats_fd")
    rng = np.random.default_rng(0)
    raw["mesh"]["points"] = rng.normal(size=(40, 3)).tolist()
    raw["mesh"]["n_points"] = 40
    raw["mesh"]["point_data"] = {"displacement": [[0.0, 0.0, 0.0]] * 40}
    return api, raw


def meshstats_counts():
    api, raw = meshstats_40()
    inputs = api.InputSchema.model_validate(raw)
    outs = {"statistics.barycenter", "statistics.first_point_coordinates"}
    ins = {"mesh.points"}
    ct = {o: np.ones(3) for o in outs}
    tangent = {"mesh.points": np.ones((40, 3))}
    calls = {"n": 0}

    def apply(inp):
        calls["n"] += 1
        return api.apply(inp)

    cases = [
        (
            "jacobian central",
            lambda: tess_ad.finite_difference_jacobian(apply, inputs, ins, outs),
            lambda: core_jacobian(apply, inputs, ins, outs, eps=1e-6),
        ),
        (
            "jacobian forward",
            lambda: tess_ad.finite_difference_jacobian(
                apply, inputs, ins, outs, algorithm="forward"
            ),
            lambda: core_jacobian(
                apply, inputs, ins, outs, algorithm="forward", eps=1e-6
            ),
        ),
        (
            "vjp central",
            lambda: tess_ad.finite_difference_vjp(apply, inputs, ins, outs, ct),
            lambda: core_vjp(apply, inputs, ins, outs, ct, eps=1e-6),
        ),
        (
            "jvp central",
            lambda: tess_ad.finite_difference_jvp(apply, inputs, ins, outs, tangent),
            lambda: core_jvp(apply, inputs, ins, outs, tangent, eps=1e-6),
        ),
    ]
    rows = []
    for name, ours, theirs in cases:
        calls["n"] = 0
        ours()
        n_ours = calls["n"]
        calls["n"] = 0
        theirs()
        n_theirs = calls["n"]
        t_ours, _ = timed(ours)
        t_theirs, _ = timed(theirs)
        rows.append(
            (
                name,
                n_theirs,
                n_ours,
                f"{n_theirs / n_ours:.1f}x",
                f"{t_theirs / t_ours:.1f}x",
            )
        )
    table(
        "meshstats_fd (40 points = 120 differentiated elements, 2 output paths)",
        [
            "endpoint",
            "apply calls tesseract-core",
            "apply calls tess_ad",
            "fewer calls",
            "faster (wall time)",
        ],
        rows,
    )


def _without_validators(model: type) -> type:
    """The same fields as ``model`` (nested models too), with no validator left."""
    fields = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            annotation = _without_validators(annotation)
        fields[name] = (annotation, field)
    return create_model(f"{model.__name__}WithoutValidators", **fields)


def perturbed_points():
    """Central Jacobian on meshstats: re-validated points against model copies."""
    api, raw = meshstats_40()
    validated = api.InputSchema.model_validate(raw)
    plain = _without_validators(api.InputSchema).model_validate(raw)
    outs = {"statistics.barycenter", "statistics.first_point_coordinates"}
    ins = {"mesh.points"}
    rows = []
    t_core, ref = timed(
        lambda: core_jacobian(api.apply, validated, ins, outs, eps=1e-6)
    )
    for what, inputs in (
        ("re-validated (the schema has a model_validator)", validated),
        ("model copies (the same schema without it)", plain),
    ):
        t, out = timed(
            lambda inputs=inputs: tess_ad.finite_difference_jacobian(
                api.apply, inputs, ins, outs
            )
        )
        agree = all(
            np.allclose(out[o]["mesh.points"], ref[o]["mesh.points"], atol=1e-6)
            for o in outs
        )
        rows.append((what, f"{t * 1e3:.0f}", f"{t_core / t:.1f}x", agree))
    rows.append(
        (
            "tesseract-core (re-validates every point)",
            f"{t_core * 1e3:.0f}",
            "1.0x",
            True,
        )
    )
    table(
        "how perturbed points are made: meshstats_fd central Jacobian, 240 apply calls",
        ["tess_ad drop-in", "ms", "faster than tesseract-core", "same Jacobian"],
        rows,
    )


def coloured():
    """Dense against coloured central Jacobians of a 1-D stencil (tridiagonal)."""
    local = Tesseract.from_tesseract_api(
        str(ROOT / "tests/tesseracts/stencil/tesseract_api.py")
    )
    rows = []
    for n in (100, 1000):
        u = np.linspace(-1.0, 1.0, n)
        inputs = {"u": u}
        truth = (
            np.diag(u**2 - 2.0)
            + np.diag(np.ones(n - 1), 1)
            + np.diag(np.ones(n - 1), -1)
        )
        pattern = tess_ad.jacobian_sparsity(local, inputs, ["u"], ["du"])
        for what, fd in (
            ("dense", tess_ad.with_finite_differences(local)),
            ("coloured", tess_ad.with_finite_differences(local, sparsity=pattern)),
        ):
            calls = {"n": 0}
            apply = local.apply

            def counted(*args, _apply=apply, _calls=calls, **kwargs):
                _calls["n"] += 1
                return _apply(*args, **kwargs)

            local.apply = counted
            try:
                t, jac = timed(
                    lambda fd=fd, inputs=inputs: fd.jacobian(inputs, ["u"], ["du"]),
                    repeats=1,
                )
            finally:
                del local.apply
            error = np.max(np.abs(jac["du"]["u"] - truth))
            rows.append((n, what, calls["n"], f"{t:.2f}", f"{error:.1e}"))
    table(
        "dense vs coloured central Jacobian, 1-D stencil (tridiagonal, in-process)",
        ["n", "how", "apply calls", "seconds", "max abs error"],
        rows,
    )


def batched():
    """Unbatched against batched evaluation points, served, 20 ms per call."""
    api = ROOT / "tests/tesseracts/batched_rosenbrock/tesseract_api.py"
    server = Server(api, num_workers=1).start()
    try:
        served = Tesseract.from_url(server.url)
        n = 16
        inputs = {
            "x": np.linspace(-1.0, 1.0, n),
            "y": np.linspace(0.3, 0.9, n),
            "shift": np.zeros(n),
            "delay": 0.02,
        }
        rows = []
        t_ref, ref = timed(
            lambda: tess_ad.with_finite_differences(served).jacobian(
                inputs, ["x", "y"], ["result"]
            ),
            repeats=1,
        )
        rows.append(("unbatched", 4 * n, f"{t_ref:.2f}", "1.0x", True))
        for size in (8, 64):
            fd = tess_ad.with_finite_differences(served, batch_size=size)
            t, out = timed(
                lambda fd=fd: fd.jacobian(inputs, ["x", "y"], ["result"]), repeats=3
            )
            same = all(
                np.array_equal(out["result"][p], ref["result"][p]) for p in ("x", "y")
            )
            rows.append(
                (
                    f"batch_size={size}",
                    -(-4 * n // size),
                    f"{t:.2f}",
                    f"{t_ref / t:.1f}x",
                    same,
                )
            )
    finally:
        server.stop()
    table(
        "central Jacobian of batched_rosenbrock, 2 x 16 elements, served, 20 ms per call",
        ["how", "apply calls", "seconds", "speed-up", "bit-identical"],
        rows,
    )


def error_estimates():
    """Error estimates against true errors on tests/tesseracts/smooth (analytic)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    local = Tesseract.from_tesseract_api(
        str(ROOT / "tests/tesseracts/smooth/tesseract_api.py")
    )

    def truth(x, scale):
        def f(v):
            u = v * scale
            return (
                jnp.exp(0.3 * u) * jnp.sin(jnp.roll(u, -1))
                + u**3 / 50
                + jnp.log1p(u * u) * jnp.cos(jnp.roll(u, 1))
            )

        return np.asarray(jax.jacfwd(f)(jnp.asarray(np.asarray(x, np.float64))))

    rng = np.random.default_rng(0)
    points = [
        (rng.uniform(-2.0, 2.0, 8) / max(scale, 1.0), scale)
        for scale in (1e-3, 1.0, 3.0)
        for _ in range(4)
    ]
    rows = []
    for method in ("central", "richardson", "forward"):
        fd = tess_ad.with_finite_differences(local, method=method)
        for bits, dtype in (("64", np.float64), ("32", np.float32)):
            est, err, rel = [], [], []
            for x, scale in points:
                x = x.astype(dtype)
                inputs = {
                    "x64": x.astype(np.float64),
                    "x32": x.astype(np.float32),
                    "scale": scale,
                }
                jac, e = fd.jacobian_with_error(inputs, ["x" + bits], ["y" + bits])
                true = truth(x, scale)
                value = jac["y" + bits]["x" + bits].astype(np.float64)
                err.append(np.abs(value - true).ravel())
                est.append(e["y" + bits]["x" + bits].astype(np.float64).ravel())
                rel.append(np.max(np.abs(value - true)) / np.max(np.abs(true)))
            est_a, err_a = np.concatenate(est), np.concatenate(err)
            nz = err_a > 0
            rows.append(
                (
                    method,
                    f"float{bits}",
                    f"{np.mean(est_a >= err_a):.1%}",
                    f"{np.median(est_a[nz] / err_a[nz]):.0f}x",
                    f"{max(rel):.1e}",
                )
            )
    table(
        "error estimates vs true errors, smooth analytic Tesseract (12 points x 64 entries)",
        [
            "method",
            "dtype",
            "entries bounded",
            "median estimate / error",
            "worst relative error",
        ],
        rows,
    )


def scales():
    api = load_module_from_path(ROOT / "examples/scales/tesseract_api.py")
    x = np.array([1.5e6, 0.7, 3e-6])
    inputs = api.InputSchema.model_validate({"x": x})
    want = 3 * x**2
    ours = np.diag(
        tess_ad.finite_difference_jacobian(api.apply, inputs, {"x"}, {"y"})["y"]["x"]
    )
    theirs = np.diag(core_jacobian(api.apply, inputs, {"x"}, {"y"})["y"]["x"])
    rows = [
        (f"{xi:.1e}", f"{abs(t - w) / w:.1e}", f"{abs(o - w) / w:.1e}")
        for xi, t, o, w in zip(x, theirs, ours, want, strict=True)
    ]
    table(
        "relative error of d(x^3)/dx, default steps",
        ["x", "tesseract-core (eps=1e-4)", "tess_ad (scale-aware)"],
        rows,
    )


def parallel():
    inputs = example_inputs("sleepy")  # 8 + 1 elements, 40 ms per apply
    ins, outs = ["x", "scale"], ["y", "total"]
    local = Tesseract.from_tesseract_api(str(ROOT / "examples/sleepy/tesseract_api.py"))
    api = local._client.api_module
    model = api.InputSchema.model_validate(inputs)
    calls = {"n": 0}

    def counted(inp):
        calls["n"] += 1
        return api.apply(inp)

    t_core, _ = timed(
        lambda: core_jacobian(counted, model, set(ins), set(outs)), repeats=1
    )
    n_core = calls["n"]
    t_local, ref = timed(
        lambda: tess_ad.with_finite_differences(local).jacobian(inputs, ins, outs),
        repeats=1,
    )
    rows = [
        ("tesseract-core helper, in-process", n_core, f"{t_core:.2f}", "1.0x", "-"),
        (
            "tess_ad, in-process",
            18,
            f"{t_local:.2f}",
            f"{t_core / t_local:.1f}x",
            "reference",
        ),
    ]

    def same(result):
        return all(np.array_equal(result[o][p], ref[o][p]) for o in ref for p in ref[o])

    server = Server(ROOT / "examples/sleepy/tesseract_api.py", num_workers=4).start()
    try:
        served = Tesseract.from_url(server.url)
        serial = tess_ad.with_finite_differences(served)
        serial.jacobian(inputs, ins, outs)  # warm-up: schema fetch, worker imports
        t_serial, out = timed(lambda: serial.jacobian(inputs, ins, outs))
        rows.append(
            (
                "tess_ad, served, serial",
                18,
                f"{t_serial:.2f}",
                f"{t_core / t_serial:.1f}x",
                same(out),
            )
        )
        with ThreadPoolExecutor(4) as pool:
            fd = tess_ad.with_finite_differences(served, executor=pool)
            t_threads, out = timed(lambda: fd.jacobian(inputs, ins, outs))
        rows.append(
            (
                "tess_ad, served, 4 threads -> 4 server workers",
                18,
                f"{t_threads:.2f}",
                f"{t_core / t_threads:.1f}x",
                same(out),
            )
        )
    finally:
        server.stop()
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        rows.append(("tess_ad, dask (not installed)", "-", "-", "-", "-"))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with (
                LocalCluster(
                    n_workers=4, threads_per_worker=1, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                fd = tess_ad.with_finite_differences(local, executor=client)
                fd.jacobian(
                    inputs, ins, outs
                )  # warm-up: each worker loads the tesseract_api.py once
                t_dask, out = timed(lambda: fd.jacobian(inputs, ins, outs))
        rows.append(
            (
                "tess_ad, dask LocalCluster, 4 workers",
                18,
                f"{t_dask:.2f}",
                f"{t_core / t_dask:.1f}x",
                same(out),
            )
        )
    table(
        "central Jacobian of sleepy (9 elements, 2 outputs, apply sleeps 40 ms)",
        [
            "how",
            "apply calls",
            "seconds",
            "speed-up vs tesseract-core",
            "identical to serial",
        ],
        rows,
    )


if __name__ == "__main__":
    meshstats_counts()
    perturbed_points()
    scales()
    coloured()
    batched()
    error_estimates()
    parallel()
