"""Check a Tesseract's derivatives every way: the engine of ``tess-ad check`` and its Python API.

:func:`check_gradients` computes the Jacobian of every differentiable output
with respect to every differentiable input:

1. ``finite differences``: :func:`tess_ad.with_finite_differences` on its
   ``apply``, the reference (it trusts nothing but ``apply``), with an error
   estimate per entry (central differences at two steps: the truncation
   measured, the rounding from the outputs' magnitude and dtype);
2. each of the Tesseract's own gradient endpoints that it has, on its own:
   ``jacobian endpoint``, ``VJP endpoint`` (one VJP per output element) and
   ``JVP endpoint`` (one JVP per input element), so that a wrong one cannot
   hide behind a right one;
3. ``jax`` and ``torch``: :func:`tess_ad.jax.apply_tesseract` and
   :func:`tess_ad.torch.apply_tesseract` along a few seeded random
   cotangents and tangents (a VJP and a JVP each), not a pull-back per
   output element.

and compares every way with the reference (:mod:`tess_ad._check_compare`):
an entry agrees when the difference is within ``K`` times the reference's
estimated error plus the way's own rounding. So a correct float32 Tesseract,
whose finite differences are noisy, is not reported wrong; a reference too
noisy to tell a right entry from a 10% wrong one makes the pair
"inconclusive". The result is a :class:`~tess_ad.Report`;
:func:`assert_gradients` turns a failed one into an ``AssertionError`` for a
test suite. Loading a target and its inputs (:mod:`tess_ad._check_target`)
and the wording of errors (:mod:`tess_ad._check_errors`) are apart. The
framework adapters are imported only when a check runs, so ``import
tess_ad`` stays free of jax and torch.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ._check_compare import K, Probes, _comparisons
from ._check_errors import CheckError, _first_line, _hint
from ._check_report import FRAMEWORK_WAYS, Blocks, Report
from ._check_target import load_inputs, load_target, with_defaults
from ._client import (
    ENDPOINTS,
    ClientWrapper,
    endpoint_label,
    remote_target,
)
from ._endpoints import Endpoints
from ._fd import METHODS
from ._paths import get_at_path
from ._proxy import with_finite_differences
from ._schema import as_numpy, tesseract_schema

__all__ = [
    "CheckError",
    "Report",
    "assert_gradients",
    "check_gradients",
    "run_check",
]


class CountingClient(ClientWrapper):
    """A pass-through view of a client that counts endpoint calls."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = super().__getattr__(name)
        if name not in ENDPOINTS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def describe(self) -> str:
        """The counts as text: ``"8 apply, 1 VJP"``."""
        return (
            ", ".join(
                f"{n} {endpoint_label(k, short=True)}"
                for k, n in sorted(self.calls.items())
            )
            or "none"
        )


@dataclass
class Way:
    """One way of computing the Jacobian, and how it went."""

    name: str
    jacobian: dict[str, dict[str, np.ndarray]] | None = None
    calls: str = ""
    seconds: float = 0.0
    error: str | None = None
    note: str = ""
    diffs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # per compared block: (way - reference) / allowed, for the HTML report
    ratios: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    hint: str | None = None


def _run_way(
    name: str, client: Any, compute: Callable[[Any], dict], note: str = ""
) -> Way:
    counting = CountingClient(client)
    t0 = time.perf_counter()
    hint = None
    try:
        jac, error = compute(counting), None
    except Exception as exc:
        jac, error, hint = None, _first_line(exc), _hint(exc)
    return Way(
        name,
        jac,
        counting.describe(),
        time.perf_counter() - t0,
        error,
        note,
        counts=dict(sorted(counting.calls.items())),
        hint=hint,
    )


def make_probes(
    count: int,
    seed: int,
    out_shapes: Mapping[str, tuple[int, ...]],
    x: Mapping[str, np.ndarray],
) -> Probes:
    """``count`` seeded cotangents and tangents (see :class:`Probes`).

    Cotangents are +-1; tangent entries are +- the magnitude of their input
    element (zeros: the median magnitude of their leaf, else 1), so a
    directional difference along one moves every element on its own scale.
    """
    rng = np.random.default_rng(seed)

    def signs(shape: tuple[int, ...]) -> np.ndarray:
        return rng.choice(np.array([-1.0, 1.0]), size=shape)

    scales = {}
    for p, value in x.items():
        mag = np.abs(np.asarray(value, np.float64))
        nonzero = mag[mag > 0]
        scales[p] = np.where(
            mag > 0, mag, float(np.median(nonzero)) if nonzero.size else 1.0
        )
    return Probes(
        [{o: signs(s) for o, s in out_shapes.items()} for _ in range(count)],
        [{p: signs(v.shape) * v for p, v in scales.items()} for _ in range(count)],
    )


def _jax_probes(
    client: Any, flat: Any, in_paths: list[str], out_paths: list[str], probes: Probes
) -> Probes:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from .jax import apply_tesseract

    x = {
        p: jnp.asarray(as_numpy(flat[p].value, flat[p].compute_dtype)) for p in in_paths
    }

    def f(diff: dict) -> dict:
        out = apply_tesseract(client, flat.unflatten(diff))
        return {o: get_at_path(out, o) for o in out_paths}

    y, pullback = jax.vjp(f, x)
    for ct in probes.cotangents:
        (g,) = pullback({o: jnp.asarray(ct[o], y[o].dtype) for o in out_paths})
        probes.vjps.append({p: np.asarray(g[p]) for p in in_paths})
    for t in probes.tangents:
        tangent = {p: jnp.asarray(t[p], x[p].dtype) for p in in_paths}
        _, jt = jax.jvp(f, (x,), (tangent,))
        probes.jvps.append({o: np.asarray(jt[o]) for o in out_paths})
    return probes


def _torch_probes(
    client: Any, flat: Any, in_paths: list[str], out_paths: list[str], probes: Probes
) -> Probes:
    import torch

    from .torch import apply_tesseract

    def tensors(requires_grad: bool) -> dict[str, torch.Tensor]:
        return {
            p: torch.tensor(
                as_numpy(flat[p].value, flat[p].compute_dtype),
                requires_grad=requires_grad,
            )
            for p in in_paths
        }

    def f(x: dict) -> dict:
        out = apply_tesseract(client, flat.unflatten(x))
        return {o: cast("torch.Tensor", get_at_path(out, o)) for o in out_paths}

    x = tensors(True)
    y = f(x)
    for ct in probes.cotangents:
        grads = torch.autograd.grad(
            [y[o] for o in out_paths],
            [x[p] for p in in_paths],
            grad_outputs=[torch.as_tensor(ct[o], dtype=y[o].dtype) for o in out_paths],
            retain_graph=True,
            allow_unused=True,
        )
        probes.vjps.append(
            {
                p: np.zeros(x[p].shape) if g is None else g.detach().numpy()
                for p, g in zip(in_paths, grads, strict=True)
            }
        )
    base = tensors(False)
    for t in probes.tangents:
        tangent = {p: torch.as_tensor(t[p], dtype=base[p].dtype) for p in in_paths}
        jt = torch.func.jvp(f, (base,), (tangent,))[1]
        probes.jvps.append({o: jt[o].detach().numpy() for o in out_paths})
    return probes


ENDPOINT_WAYS = ("jacobian", "vjp", "jvp")


def _check_options(
    method: str, frameworks: Sequence[str], endpoints: Sequence[str]
) -> None:
    unknown_endpoints = sorted(set(endpoints) - set(ENDPOINT_WAYS))
    if unknown_endpoints:
        raise CheckError(
            f"endpoints: unknown {', '.join(map(repr, unknown_endpoints))}; use "
            f"{', '.join(ENDPOINT_WAYS)}"
        )
    if method not in METHODS:
        raise CheckError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    unknown = sorted(set(frameworks) - {"jax", "torch"})
    if unknown:
        raise CheckError(
            f"frameworks: unknown {', '.join(map(repr, unknown))}; use jax and/or torch"
        )
    if method == "stochastic":
        raise CheckError(
            "--method stochastic cannot be the reference: SPSA estimates are "
            "random (a few samples), so a correct endpoint would disagree with "
            "them by chance. Use --method central (the default) or richardson."
        )


def run_check(
    target: str,
    inputs_file: Path | None = None,
    method: str = "central",
    inputs_paths: Sequence[str] | None = None,
    outputs_paths: Sequence[str] | None = None,
    rtol: float | None = None,
    frameworks: Sequence[str] = FRAMEWORK_WAYS,
    progress: bool | None = None,
    eps: float | None = None,
    endpoints: Sequence[str] = ENDPOINT_WAYS,
    probes: int = 3,
    seed: int = 0,
) -> Report:
    """``tess-ad check TARGET``: load the Tesseract and its inputs, then :func:`check_gradients`.

    ``progress`` shows a bar of the finite-difference evaluations on stderr;
    ``None`` shows it for sweeps of more than 40 evaluations on a terminal.

    Raises:
        CheckError: One-line errors for a bad target, inputs or paths.
    """
    _check_options(method, frameworks, endpoints)
    client, folder = load_target(target)
    inputs, used = load_inputs(inputs_file, folder)
    return check_gradients(
        client,
        inputs,
        method=method,
        input_paths=inputs_paths,
        output_paths=outputs_paths,
        rtol=rtol,
        frameworks=frameworks,
        progress=progress,
        eps=eps,
        endpoints=endpoints,
        probes=probes,
        seed=seed,
        target=target,
        inputs_file=used,
    )


def check_gradients(
    tesseract: Any,
    inputs: Mapping[str, Any],
    *,
    method: str = "central",
    input_paths: Sequence[str] | None = None,
    output_paths: Sequence[str] | None = None,
    rtol: float | None = None,
    frameworks: Sequence[str] = FRAMEWORK_WAYS,
    progress: bool | None = False,
    eps: float | None = None,
    endpoints: Sequence[str] = ENDPOINT_WAYS,
    probes: int = 3,
    seed: int = 0,
    target: str | None = None,
    inputs_file: Path | None = None,
) -> Report:
    """Check a Tesseract's derivatives every way against finite differences of its ``apply``.

    The engine of ``tess-ad check``. The reference is
    ``with_finite_differences(tesseract, method=method).jacobian_with_error``
    (an error estimate per entry); each of the Tesseract's own gradient
    endpoints on its own (``jacobian``, VJP rows, JVP columns) and the JAX and
    PyTorch adapters are compared with it entry by entry: an entry agrees
    when ``|way - reference| <= K * (estimated error + the way's rounding)``
    (plus ``rtol`` times the block's largest entry, when given). Inputs the
    schema gives a default and ``inputs`` leaves out are filled in, and
    checked when they are ``Differentiable``.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (in-process or served).
        inputs: The point, as for ``apply``.
        method: The reference's method: ``"central"`` (default) or
            ``"richardson"`` (both with error estimates) or ``"forward"``;
            ``"stochastic"`` is refused.
        input_paths: Inputs to differentiate (default: every differentiable one).
        output_paths: Outputs to differentiate (default: every differentiable one).
        rtol: An extra tolerance relative to each block's largest entry.
        frameworks: Which adapters to check (``"jax"``, ``"torch"``); one
            not installed is skipped with a note.
        progress: A progress bar of the finite-difference sweep on stderr
            (``None``: on a terminal, for long sweeps).
        eps: An absolute step for the reference (default: scale-aware).
        endpoints: Which of the Tesseract's own endpoints to check, of
            ``"jacobian"``, ``"vjp"``, ``"jvp"`` (default: all it has).
        probes: How many random cotangents and tangents each framework way
            is checked along (a VJP and a JVP each, not a pull-back per
            output element). On a Tesseract with no gradient endpoint the
            adapters go through finite differences, which reuse the
            reference's evaluations: a framework row then costs a few
            applies per probe, whatever the number of inputs.
        seed: The probes' seed.
        target: What to call the Tesseract in the report.
        inputs_file: Where the inputs came from, for the report.

    Returns:
        The :class:`Report` (``report.ok``, ``report.status``,
        ``report.failures``, ``report.where``, ``report.to_json()``).

    Raises:
        CheckError: For bad options, inputs that do not fit the schema, paths
            that are not differentiable, or an ``apply`` that fails at the
            inputs themselves (a ``ValueError``).

    Example:
        >>> import tess_ad
        >>> from tesseract_core import Tesseract
        >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> report = tess_ad.check_gradients(
        ...     t, {"x": [0.5, -1.0, 2.0], "a": 1.0, "b": 100.0}, frameworks=()
        ... )
        >>> report.ok, report.status
        (True, 'agrees')
        >>> [w["name"] for w in report["ways"]]
        ['finite differences', 'jacobian endpoint', 'VJP endpoint', 'JVP endpoint']
    """
    _check_options(method, frameworks, endpoints)
    client = tesseract
    inputs = with_defaults(dict(inputs), client.openapi_schema)
    schema = tesseract_schema(client)
    try:
        flat = schema.inputs.flatten(inputs)
    except ValueError as exc:
        raise CheckError(f"inputs do not match the schema: {exc}") from exc
    in_paths = list(input_paths or flat.differentiable_paths)
    try:
        flat.check_paths(in_paths, "input_paths (--input-paths)")
    except ValueError as exc:
        raise CheckError(str(exc)) from exc
    for p in in_paths:
        if not flat[p].differentiable:
            raise CheckError(
                f"input_paths (--input-paths): {p!r} is not a Differentiable input"
            )
    try:
        outputs = client.apply(inputs=inputs)
    except Exception as exc:
        raise CheckError(
            f"apply failed at these inputs: {_first_line(exc)}", _hint(exc)
        ) from exc
    out_flat = schema.outputs.flatten(outputs, check=False)
    out_paths = list(output_paths or out_flat.differentiable_paths)
    for o in out_paths:
        if o not in out_flat or not out_flat[o].differentiable:
            raise CheckError(
                f"output_paths (--output-paths): {o!r} is not a Differentiable output"
            )
    if not in_paths or not out_paths:
        raise CheckError(
            "nothing to differentiate: the Tesseract has no differentiable inputs or outputs here"
        )

    shapes = {o: out_flat[o].shape or () for o in out_paths}
    n = sum(int(np.prod(flat[p].shape or ())) for p in in_paths)
    if progress is None:
        progress = sys.stderr.isatty() and 2 * n > 40
    own = Endpoints(client)
    has_own = own.has_reverse or own.has_forward
    estimate: dict[str, dict[str, np.ndarray]] = {}
    skipped: list[dict[str, str]] = []

    # Without gradient endpoints, the adapters differentiate through finite
    # differences of apply, at the points the reference already evaluated
    # (the same steps): an evaluation cache they share makes each framework
    # row cost only its new points (along the tangents), and the rows still
    # check the adapters' own work, the contraction with each probe.
    with contextlib.ExitStack() as stack:
        runs_a_framework = any(
            importlib.util.find_spec(name) is not None for name in frameworks
        )
        shared = (
            stack.enter_context(tempfile.TemporaryDirectory(prefix="tess_ad-check-"))
            if runs_a_framework and not has_own
            else None
        )

        def reference_fd(c: Any) -> dict:
            jac, err = with_finite_differences(
                c, method=method, eps=eps, progress=progress, cache=shared
            ).jacobian_with_error(inputs, in_paths, out_paths)
            estimate.update(err)
            return jac

        ways = [
            _run_way(
                "finite differences",
                client,
                reference_fd,
                f"{method} differences of apply, with error estimates",
            )
        ]
        for route, name, present, how in (
            (
                "jacobian",
                "jacobian endpoint",
                own.has_jacobian,
                "the jacobian endpoint",
            ),
            ("vjp", "VJP endpoint", own.has_vjp, "one VJP per output element"),
            ("jvp", "JVP endpoint", own.has_jvp, "one JVP per input element"),
        ):
            if present and route in endpoints:

                def by_route(c: Any, route: str = route) -> dict:
                    return Endpoints(c).jacobian(
                        inputs, in_paths, out_paths, output_shapes=shapes, route=route
                    )

                ways.append(_run_way(name, client, by_route, how))
        # the adapters differentiate through the Tesseract's own endpoints, or FD when it has none
        via = "own endpoints" if has_own else f"{method} differences"
        base_x = {p: as_numpy(flat[p].value, flat[p].compute_dtype) for p in in_paths}
        for name, fn, how in (
            ("jax", _jax_probes, "jax.vjp and jax.jvp"),
            ("torch", _torch_probes, "backward() and torch.func.jvp"),
        ):
            if name not in frameworks:
                continue
            if importlib.util.find_spec(name) is not None:
                # imported before the clock starts: the check times the calls, not
                # the framework's import
                importlib.import_module(f"tess_ad.{name}")
            else:
                skipped.append(
                    {
                        "way": name,
                        "reason": f"{name} is not installed (pip install 'tess-ad[{name}]')",
                    }
                )
                continue

            def compute(c: Any, fn: Callable = fn) -> Any:
                target_client = (
                    c
                    if has_own
                    else with_finite_differences(
                        c, method=method, eps=eps, cache=shared
                    )
                )
                drawn = make_probes(probes, seed, shapes, base_x)
                # a mode the Tesseract has no endpoint for is not probed (with
                # finite differences, both are)
                if has_own and not own.has_reverse:
                    drawn.cotangents = []
                if has_own and not own.has_forward:
                    drawn.tangents = []
                drawn = fn(target_client, flat, in_paths, out_paths, drawn)
                if not has_own:
                    # the error of the framework's directional differences, asked
                    # for every differentiable output as the adapters' JVPs are:
                    # their points are then in the cache (2 more applies per tangent)
                    every = out_flat.differentiable_paths
                    drawn.jvp_errors = [
                        target_client.jacobian_vector_product_with_error(
                            inputs, in_paths, every, t
                        )[1]
                        for t in drawn.tangents
                    ]
                return drawn

            what = (
                f"{how} along {probes} random cotangents and tangents "
                f"through tess_ad.{name} ({via}"
                + ("" if has_own else ", reusing the reference's evaluations")
                + ")"
            )
            ways.append(_run_way(name, client, compute, what))

    reference = ways[0]
    failures: list[str] = []
    where: list[str] = []
    errors = [
        {"way": w.name, "error": w.error, "hint": w.hint}
        for w in ways
        if w.error is not None
    ]
    for way in ways:
        if way.error is not None:
            continue
        assert way.jacobian is not None  # _run_way sets it whenever error is None
        if reference.jacobian is None or way is reference:
            continue
        for key, label, (pair, ratio), describe in _comparisons(
            way.jacobian,
            reference.jacobian,
            estimate,
            shapes,
            in_paths,
            out_paths,
            rtol,
        ):
            pair["label"] = label
            way.diffs[key] = pair
            if ratio is not None:
                way.ratios[key] = ratio
            if pair["verdict"] == "disagrees":
                failures.append(
                    f"{way.name} disagrees with {reference.name} on {label}"
                )
                worst = pair["worst"]
                if "index" in worst:
                    where.append(
                        f"{way.name}: {describe(worst['index'])} is "
                        f"{worst['actual']:.6g}; finite differences: "
                        f"{worst['expected']:.6g} ± {worst['allowed']:.2g}"
                    )
                elif "shape" in worst:
                    where.append(
                        f"{way.name}: {label} has shape {tuple(worst['shape'])}, "
                        f"finite differences {tuple(worst['expected_shape'])}"
                    )
    # a way found wrong is the verdict, even when another way raised (often
    # because of the same fault); nothing compared and something raised: error
    status = "disagrees" if failures else ("error" if errors else "agrees")
    return Report(
        {
            "target": target if target is not None else _describe(tesseract),
            "status": status,
            "errors": errors,
            "skipped": skipped,
            "inputs_file": str(inputs_file) if inputs_file is not None else None,
            "method": method,
            "rtol": rtol,
            "k": K,
            "where": where,
            "reference": reference.name,
            "adapters_via": "own endpoints" if has_own else "finite differences",
            "probes": probes,
            "inputs_paths": in_paths,
            "outputs_paths": out_paths,
            "ways": [
                {
                    "name": w.name,
                    "via": w.note,
                    "calls": w.counts,
                    "calls_text": w.calls,
                    "seconds": w.seconds,
                    "error": w.error,
                    "pairs": [
                        {"output": o, "input": p, **d} for (o, p), d in w.diffs.items()
                    ],
                }
                for w in ways
            ],
            "ok": status == "agrees",
            "failures": failures,
        },
        Blocks(
            reference.jacobian or {},
            estimate,
            {w.name: w.ratios for w in ways if w.ratios},
            shapes,
        ),
    )


def _describe(tesseract: Any) -> str:
    """A Tesseract's URL or ``tesseract_api.py`` path, for a report."""
    found = remote_target(tesseract)
    return found[1] if found is not None else type(tesseract).__name__


def assert_gradients(
    tesseract: Any, inputs: Mapping[str, Any], **options: Any
) -> Report:
    """:func:`check_gradients`, raising ``AssertionError`` unless every way agrees.

    For a test suite, in the spirit of ``torch.autograd.gradcheck`` and
    ``jax.test_util.check_grads``: the message names each disagreeing way,
    the entry where it is worst, and what raised.

    Args:
        tesseract: A ``tesseract_core.Tesseract``.
        inputs: The point.
        **options: As for :func:`check_gradients`.

    Returns:
        The report, when it agrees.

    Raises:
        AssertionError: When a way disagrees or the Tesseract raised.

    Example:
        >>> import tess_ad
        >>> from tesseract_core import Tesseract
        >>> t = Tesseract.from_tesseract_api("tests/tesseracts/wrong_gradient/tesseract_api.py")
        >>> tess_ad.assert_gradients(t, {"x": [0.1, 0.5, 2.0], "s": 1.5}, frameworks=())
        Traceback (most recent call last):
        ...
        AssertionError: gradient check of ...: disagrees
          - VJP endpoint: d y[2] / d x[2] is ...
    """
    report = check_gradients(tesseract, inputs, **options)
    if report.status != "agrees":
        raise AssertionError(report.summary())
    return report
