"""Finite-difference estimators as plans: which points to evaluate, then how to combine.

An estimator here never calls anything. It returns a :class:`Plan`: a number
of evaluation points (perturbed values of the differentiated input leaves,
made on demand so a sweep over a large input never holds every point in
memory) and a streaming ``accumulate``/``result`` pair that turns the outputs
at those points into a Jacobian, JVP or VJP. The evaluation layer
(``_evaluate.py``) decides how the points are evaluated: serially, on a thread
pool, on a dask cluster, from an on-disk cache. So the client-side proxy and
the server-side drop-in helpers share one implementation, and "parallel gives
the same numbers as serial" holds by construction (outputs are accumulated in
plan order whatever order they finish in).

Costs, with ``n`` the number of differentiated input elements and one set of
evaluations serving every output path at once:

============  ==================  =========================  ================
method        Jacobian            VJP                        JVP
============  ==================  =========================  ================
central       ``2n``              ``2n``                     ``2``
forward       ``n + 1``           ``n + 1``                  ``1 + 1``
stochastic    ``2 * num_samples`` ``2 * num_samples``        ``2`` (central)
============  ==================  =========================  ================

(tesseract-core's helpers re-run ``apply`` per input element *and* output
path, ``2nm + 1`` for a central Jacobian.)

Steps are scale-aware by default: element ``i`` moves by ``c * |x_i|``, with
``c`` the cube root (central, stochastic) or square root (forward) of the
machine epsilon of the leaf's dtype, which balances truncation against
rounding error at every magnitude; an element equal to zero moves by ``c``
times the median magnitude of its leaf's non-zero elements (``c`` if there
are none). SPSA uses one step per leaf instead (``c`` times the leaf's RMS
magnitude), since it moves all elements at once and unequal steps inflate its
variance. The difference quotient divides by the step actually taken,
``(x + h) - (x - h)`` in the leaf's dtype, not by the nominal ``2h``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, Literal

import numpy as np

from ._sparsity import colour, column_rows

__all__ = [
    "ACCURACY",
    "METHODS",
    "FDNonFiniteError",
    "Method",
    "Plan",
    "directional_step",
    "jacobian_plan",
    "jvp_groups",
    "jvp_plan",
    "resolve_steps",
    "validate_method",
    "vjp_plan",
]

Method = Literal["central", "forward", "stochastic", "richardson"]
METHODS: tuple[str, ...] = ("central", "forward", "stochastic", "richardson")

# How accurate each method is: with scale-aware steps, a derivative carries a
# relative error of about ``eps ** ACCURACY[method]`` (``eps`` the machine
# epsilon of the dtype): central differences balance an O(h^2) truncation
# against O(eps / h) rounding at h ~ eps^(1/3), leaving eps^(2/3); forward ones
# balance O(h) against O(eps / h) at h ~ eps^(1/2), leaving eps^(1/2); Richardson
# extrapolation of central differences at h and 2h (``_fd_two_step``) balances
# O(h^4) against O(eps / h) at h ~ eps^(1/5), leaving eps^(4/5). SPSA has
# central's bias but adds sampling variance on top. The one table that the
# proxy (for Endpoints.vjp_jvp's step), the CLI's tolerances and the docs use.
ACCURACY: dict[str, float] = {
    "central": 2.0 / 3.0,
    "forward": 0.5,
    "stochastic": 2.0 / 3.0,
    "richardson": 4.0 / 5.0,
}

Flat = dict[str, np.ndarray]
EpsLike = float | Mapping[str, float] | None


class FDNonFiniteError(FloatingPointError):
    """An evaluated output turned NaN or Inf; names the output and perturbed input."""


def validate_method(method: str) -> str:
    """Check ``method`` is one of :data:`METHODS`; return it."""
    if method not in METHODS:
        raise ValueError(
            f"unknown finite-difference method {method!r}; use one of "
            f"{', '.join(repr(m) for m in METHODS)}"
        )
    return method


def _relative_factor(dtype: np.dtype, method: str) -> float:
    """The relative step eps^(1/3) (central, stochastic), eps^(1/2) (forward), eps^(1/5) (Richardson).

    That is ``eps ** (1 - ACCURACY[method])``, written with the exact exponent.
    """
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype if dtype.kind in "fc" else np.float64).eps)
    exponent = {"forward": 0.5, "richardson": 0.2}.get(method, 1.0 / 3.0)
    return float(eps**exponent)


def _scale_aware(x: np.ndarray, factor: float) -> np.ndarray:
    mag = np.abs(x.astype(np.float64))
    nonzero = mag[mag > 0]
    typical = float(np.median(nonzero)) if nonzero.size else 1.0
    return factor * np.where(mag > 0, mag, typical)


def resolve_steps(
    x: Mapping[str, np.ndarray],
    method: str,
    eps: EpsLike = None,
    dtypes: Mapping[str, np.dtype] | None = None,
) -> dict[str, np.ndarray]:
    """Per-element step sizes for every differentiated leaf.

    Args:
        x: ``path -> array`` of the differentiated input leaves.
        method: ``"central"``, ``"forward"`` or ``"stochastic"``.
        eps: ``None`` for scale-aware steps; a positive float for one absolute
            step everywhere (tesseract-core's convention); or a mapping
            ``path -> positive float`` giving absolute steps for some paths
            (the others stay scale-aware).
        dtypes: The dtype each leaf is computed in (default: the array's).

    Returns:
        ``path -> array`` of positive steps with the shape of each leaf.

    Raises:
        ValueError: For an unknown method, a non-positive or non-finite step,
            or an ``eps`` mapping that names a path not being differentiated.
    """
    validate_method(method)
    if isinstance(eps, Mapping):
        unknown = sorted(set(eps) - set(x))
        if unknown:
            raise ValueError(
                f"eps names input path(s) that are not being differentiated: "
                f"{', '.join(map(repr, unknown))}; differentiated paths are "
                f"{', '.join(map(repr, x)) or '(none)'}"
            )
        absolute = {p: _check_eps(v, f"eps[{p!r}]") for p, v in eps.items()}
    elif eps is not None:
        step = _check_eps(eps, "eps")
        absolute = dict.fromkeys(x, step)
    else:
        absolute = {}
    steps = {}
    for path, value in x.items():
        arr = np.asarray(value)
        if path in absolute:
            steps[path] = np.full(arr.shape, absolute[path])
        else:
            dtype = (dtypes or {}).get(path, arr.dtype)
            factor = _relative_factor(dtype, method)
            if method == "stochastic":
                # SPSA moves every element at once: the estimate of element i carries
                # the others' terms scaled by h_j / h_i, so per-element steps of very
                # different sizes would inflate its variance. One step per leaf.
                mag = np.abs(arr.astype(np.float64))
                rms = float(np.sqrt(np.mean(mag**2))) if mag.size else 0.0
                steps[path] = np.full(arr.shape, factor * (rms if rms > 0 else 1.0))
            else:
                steps[path] = _scale_aware(arr, factor)
    return steps


def _check_eps(value: Any, name: str) -> float:
    try:
        step = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"{name} must be a positive finite step, got {value!r}")
    return step


def directional_step(
    x: Mapping[str, np.ndarray],
    direction: Mapping[str, np.ndarray],
    dtypes: Sequence[np.dtype] = (),
    method: str = "central",
    accuracy: float = 1.0,
) -> float:
    """A scalar step ``h`` for a difference along a direction ``t``: ``f(x +- h t)``.

    Chosen so the perturbation ``h t`` has about ``c`` times the size of the
    inputs it moves (root-mean-square over the elements where ``t`` is
    non-zero), ``c`` as in :func:`resolve_steps` for the least precise dtype.
    A zero direction gives ``0.0`` (nothing to evaluate).

    ``accuracy`` says how precise the differenced function is: its values
    carry relative errors of ``eps ** accuracy`` (1 for a function computed to
    round-off; 2/3 for central-difference derivatives, 1/2 for forward ones).
    The step grows accordingly, ``c = (eps ** accuracy) ** (1/3)`` for central
    differences, since a noisier function needs a longer baseline.
    """
    factor = max(
        [_relative_factor(np.dtype(d), method) for d in dtypes]
        or [_relative_factor(np.dtype(np.float64), method)]
    ) ** float(accuracy)
    t_sq = 0.0
    x_sq = 0.0
    count = 0
    for path, t in direction.items():
        t = np.asarray(t, dtype=np.float64)
        mask = t != 0
        if not mask.any():
            continue
        xv = np.broadcast_to(np.abs(np.asarray(x[path], dtype=np.float64)), t.shape)
        t_sq += float(np.sum(t[mask] ** 2))
        x_sq += float(np.sum(_scale_aware(xv, 1.0)[mask] ** 2))
        count += int(mask.sum())
    if count == 0:
        return 0.0
    return factor * float(np.sqrt(x_sq / t_sq))


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------


@dataclass
class _Element:
    path: str
    index: tuple[int, ...]


class Plan:
    """Points to evaluate and how to combine their outputs.

    Attributes:
        size: Number of evaluations.
    """

    def __init__(
        self,
        size: int,
        point: Callable[[int], Flat],
        describe: Callable[[int], str],
        accumulate: Callable[[int, Flat], None],
        result: Callable[[], Any],
    ) -> None:
        self.size = size
        self._point = point
        self._describe = describe
        self._accumulate = accumulate
        self._result = result
        self._done = 0

    def point(self, k: int) -> Flat:
        """Perturbed values (``path -> array``) of the differentiated leaves at evaluation ``k``."""
        return self._point(k)

    def describe(self, k: int) -> str:
        """Which input evaluation ``k`` perturbs, for error messages."""
        return self._describe(k)

    def accumulate(self, k: int, outputs: Flat) -> None:
        """Fold the outputs of evaluation ``k`` in; must be called in order ``k = 0, 1, ...``."""
        if k != self._done:
            raise RuntimeError(
                f"plan outputs must be accumulated in order: got {k}, expected {self._done}"
            )
        for out_path, value in outputs.items():
            arr = np.asarray(value)
            if not np.all(np.isfinite(arr)):
                raise FDNonFiniteError(
                    f"finite differences: output {out_path!r} is not finite "
                    f"(NaN or Inf) when {self.describe(k)}. The Tesseract is not "
                    "defined there: use a smaller step (eps=...) or move the point."
                )
        self._accumulate(k, outputs)
        self._done += 1

    def mapped(self, fn: Callable[[Any], Any]) -> Plan:
        """The same evaluations, with ``fn`` applied to the result."""
        return Plan(
            self.size,
            self._point,
            self._describe,
            self._accumulate,
            lambda: fn(self._result()),
        )

    def result(self) -> Any:
        """The estimate, once every evaluation has been accumulated."""
        if self._done != self.size:
            raise RuntimeError(
                f"plan has {self.size} evaluations, only {self._done} accumulated"
            )
        return self._result()


def _elements(x: Mapping[str, np.ndarray]) -> list[_Element]:
    return [_Element(p, idx) for p, v in x.items() for idx in np.ndindex(np.shape(v))]


def _perturb(
    x: Mapping[str, np.ndarray], path: str, index: tuple[int, ...], delta: float
) -> Flat:
    arr = np.array(x[path], copy=True)
    arr[index] = arr[index] + delta
    return {path: arr}


def _element_name(e: _Element) -> str:
    return (
        f"input {e.path!r}"
        + (f" element {list(e.index)}" if e.index else "")
        + " is perturbed"
    )


def _actual(x: np.ndarray, index: tuple, delta: float) -> float:
    """The step really taken in ``x``'s dtype: ``(x + delta) - x``."""
    v = np.asarray(x)[index]
    return float(
        np.asarray(v + np.asarray(delta, dtype=v.dtype), dtype=v.dtype).astype(
            np.float64
        )
        - float(v)
    )


def _rademacher(rng: np.random.Generator, x: Mapping[str, np.ndarray]) -> Flat:
    return {
        p: rng.choice(np.array([-1.0, 1.0]), size=np.shape(v)) for p, v in x.items()
    }


def _default_samples(n: int) -> int:
    return max(10, int(np.sqrt(n)))


def _check_samples(num_samples: int | None, n: int) -> int:
    if num_samples is None:
        return _default_samples(n)
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int | np.integer)
        or num_samples < 1
    ):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return int(num_samples)


def jacobian_plan(
    x: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    out_paths: Sequence[str],
    *,
    method: str = "central",
    num_samples: int | None = None,
    seed: int | None = None,
    sparsity: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    with_error: bool = False,
) -> Plan:
    """Plan the Jacobian ``{out: {in: array(*out_shape, *in_shape)}}``.

    Args:
        x: ``path -> array`` of the differentiated inputs at the base point.
        steps: Per-element steps from :func:`resolve_steps`.
        out_paths: Output paths to differentiate (all served by the same points).
        method: ``"central"``, ``"forward"`` or ``"stochastic"``.
        num_samples: SPSA samples (default ``max(10, sqrt(n))``).
        seed: SPSA seed.
        sparsity: A checked pattern (:func:`tess_ad._sparsity.validate_sparsity`):
            columns that share no row are perturbed together
            (:func:`tess_ad._sparsity.colour`), and entries outside it are zero.
        with_error: SPSA only: the result is ``(jacobian, error)``, the
            error from the spread of the samples (the two-step methods of
            ``_fd_two_step`` estimate the others').

    The blocks come back in float64; the endpoint casts them.
    """
    return _linear_plan(
        x, steps, out_paths, None, method, num_samples, seed, sparsity, with_error
    )


def vjp_plan(
    x: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    cotangent: Mapping[str, np.ndarray],
    *,
    method: str = "central",
    num_samples: int | None = None,
    seed: int | None = None,
    sparsity: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    with_error: bool = False,
) -> Plan:
    """Plan the VJP ``{in: sum_out ct[out] . J[out, in]}`` (keys of ``cotangent`` are the outputs).

    ``with_error``: as for :func:`jacobian_plan`.
    """
    return _linear_plan(
        x,
        steps,
        list(cotangent),
        cotangent,
        method,
        num_samples,
        seed,
        sparsity,
        with_error,
    )


class _Accumulator:
    """Columns of a Jacobian (``ct is None``) or a VJP, folded in one at a time."""

    def __init__(
        self,
        x: Mapping[str, np.ndarray],
        out_paths: Sequence[str],
        ct: Mapping[str, np.ndarray] | None,
        sparsity: Mapping[str, Mapping[str, np.ndarray]] | None,
    ) -> None:
        self.x, self.out_paths, self.ct, self.sparsity = x, out_paths, ct, sparsity
        self.blocks: dict[str, dict[str, np.ndarray]] = {}
        self.vjp = {p: np.zeros(np.shape(v)) for p, v in x.items()}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def _block(self, o: str, p: str, out_shape: tuple[int, ...]) -> np.ndarray:
        by_in = self.blocks.setdefault(o, {})
        if p not in by_in:
            by_in[p] = np.zeros((*out_shape, *np.shape(self.x[p])))
        return by_in[p]

    def fold(self, out: Flat, e: _Element, scale: float) -> None:
        """Add ``scale * out`` as column ``e`` of the Jacobian (or contract it into the VJP)."""
        x, ct, sparsity = self.x, self.ct, self.sparsity
        for o in self.out_paths:
            val = np.asarray(out[o], dtype=np.float64)
            self.shapes.setdefault(o, val.shape)
            if sparsity is not None:  # rows outside the pattern: not this column's
                rows = column_rows(sparsity, o, e.path, e.index)
                if rows is None:
                    continue
                if rows.shape != val.shape:
                    raise ValueError(
                        f"sparsity[{o!r}][{e.path!r}] has shape "
                        f"{(*rows.shape, *np.shape(x[e.path]))}, but the output has "
                        f"shape {val.shape}: the layout is (*out_shape, *in_shape)"
                    )
                val = np.where(rows, val, 0.0)
            if ct is None:
                column: tuple[EllipsisType | int, ...] = (..., *e.index)
                self._block(o, e.path, val.shape)[column] += scale * val
            else:
                if ct[o].shape != val.shape:
                    # no broadcasting: a cotangent of another shape is a mistake
                    raise ValueError(
                        f"cotangent for output {o!r} has shape {ct[o].shape}, "
                        f"but the output has shape {val.shape}"
                    )
                self.vjp[e.path][e.index] += scale * float(np.sum(ct[o] * val))

    def result(self) -> Any:
        """The Jacobian blocks ``{out: {in: array}}`` or the VJP ``{in: array}``."""
        if self.ct is not None:
            return self.vjp
        return {
            o: {p: self._block(o, p, self.shapes.get(o, ())) for p in self.x}
            for o in self.out_paths
        }


def _linear_plan(
    x: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    out_paths: Sequence[str],
    cotangent: Mapping[str, np.ndarray] | None,
    method: str,
    num_samples: int | None,
    seed: int | None,
    sparsity: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    with_error: bool = False,
) -> Plan:
    validate_method(method)
    if method == "richardson" or (with_error and method != "stochastic"):
        # two steps per element; imported here, as _fd_two_step builds on this module
        from ._fd_two_step import two_step_plan

        plan = two_step_plan(x, steps, out_paths, cotangent, method, sparsity)
        return plan if with_error else plan.mapped(lambda result: result[0])
    x = {p: np.asarray(v) for p, v in x.items()}
    elements = _elements(x)
    n = len(elements)
    directions = _directions(x, elements, sparsity)
    ct = (
        None
        if cotangent is None
        else {o: np.asarray(c, dtype=np.float64) for o, c in cotangent.items()}
    )

    def accumulator() -> _Accumulator:
        return _Accumulator(x, out_paths, ct, sparsity)

    acc = accumulator()
    fold, finish = acc.fold, acc.result

    if method == "stochastic":
        samples = _check_samples(num_samples, n)
        if samples < n:
            return _spsa_plan(x, steps, samples, seed, accumulator, with_error)
        method = (
            "central"  # as many samples as elements: central is exact and no dearer
        )
        if with_error:  # central with its error estimate: the two-step plan
            return _linear_plan(
                x, steps, out_paths, cotangent, method, None, None, sparsity, True
            )

    m = len(directions)
    if method == "central":
        actual = [
            (
                _actual(x[e.path], e.index, steps[e.path][e.index]),
                _actual(x[e.path], e.index, -steps[e.path][e.index]),
            )
            for e in elements
        ]
        position = {id(e): i for i, e in enumerate(elements)}

        def point(k: int) -> Flat:
            return perturb_all(
                x, directions[k // 2], steps, 1.0 if k % 2 == 0 else -1.0
            )

        def accumulate(k: int, out: Flat) -> None:
            for e in directions[k // 2]:
                up, down = actual[position[id(e)]]
                fold(out, e, (1.0 if k % 2 == 0 else -1.0) / (up - down))

        return Plan(
            2 * m,
            point,
            lambda k: _direction_name(directions[k // 2]),
            accumulate,
            finish,
        )

    # forward: evaluation 0 is the base point, shared by every direction
    base: dict[str, Flat] = {}

    def point_fwd(k: int) -> Flat:
        if k == 0:
            return {}
        return perturb_all(x, directions[k - 1], steps, 1.0)

    def accumulate_fwd(k: int, out: Flat) -> None:
        if k == 0:
            base["out"] = {o: np.asarray(out[o], dtype=np.float64) for o in out_paths}
            return
        diff = {
            o: np.asarray(out[o], dtype=np.float64) - base["out"][o] for o in out_paths
        }
        for e in directions[k - 1]:
            fold(diff, e, 1.0 / _actual(x[e.path], e.index, steps[e.path][e.index]))

    def describe_fwd(k: int) -> str:
        if k == 0:
            return "the base point is evaluated"
        return _direction_name(directions[k - 1])

    plan = Plan(m + 1, point_fwd, describe_fwd, accumulate_fwd, finish)
    return plan


def _directions(
    x: Mapping[str, np.ndarray],
    elements: list[_Element],
    sparsity: Mapping[str, Mapping[str, np.ndarray]] | None,
) -> list[list[_Element]]:
    """The input elements moved together: one each, or the colours of a sparsity pattern."""
    if sparsity is None:
        return [[e] for e in elements]
    groups = colour(
        sparsity,
        [(e.path, e.index) for e in elements],
        {p: tuple(np.shape(v)) for p, v in x.items()},
    )
    return [[elements[j] for j in group] for group in groups]


def perturb_all(
    x: Mapping[str, np.ndarray],
    elements: Sequence[_Element],
    steps: Mapping[str, np.ndarray],
    multiple: float,
) -> Flat:
    """The leaves of ``elements``, each element moved by ``multiple`` times its step."""
    out: Flat = {}
    for e in elements:
        arr = out.get(e.path)
        if arr is None:
            arr = out[e.path] = np.array(x[e.path], copy=True)
        arr[e.index] = arr[e.index] + multiple * steps[e.path][e.index]
    return out


def _direction_name(elements: Sequence[_Element]) -> str:
    if len(elements) == 1:
        return _element_name(elements[0])
    paths = sorted({e.path for e in elements})
    return (
        f"{len(elements)} elements of input(s) {', '.join(map(repr, paths))} are "
        "perturbed together (one colour of the sparsity pattern)"
    )


def _spsa_plan(
    x: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    samples: int,
    seed: int | None,
    accumulator: Callable[[], _Accumulator],
    with_error: bool = False,
) -> Plan:
    """Simultaneous perturbation: all elements move at once along random signs.

    Each sample evaluates ``x + h*d`` and ``x - h*d`` for a Rademacher ``d``;
    element ``i`` of the estimate is ``(f+ - f-) / (x+_i - x-_i)``, averaged
    over samples. Unbiased to ``O(h^2)`` since ``E[d_i d_j] = 0`` for ``i != j``.
    The directions are drawn up front from ``numpy.random.default_rng(seed)``,
    so a seed gives the same estimate in any evaluation order.

    With ``with_error`` the result is ``(estimate, error)``: the error is
    :func:`spsa_error_factor` standard errors of the mean over the samples
    (their spread is the other elements' terms that the random signs did not
    cancel, which dominates the estimate's error), in the estimate's layout.
    """
    rng = np.random.default_rng(seed)
    directions = [_rademacher(rng, x) for _ in range(samples)]
    elements = _elements(x)
    pending: dict[int, Flat] = {}
    total = accumulator()
    squares: list[Any] = []  # running sum of squared per-sample estimates

    def shifted(s: int, sign: float) -> Flat:
        return {
            p: (
                x[p] + np.asarray(sign * steps[p] * directions[s][p], dtype=np.float64)
            ).astype(x[p].dtype)
            for p in x
        }

    def point(k: int) -> Flat:
        return shifted(k // 2, 1.0 if k % 2 == 0 else -1.0)

    def accumulate(k: int, out: Flat) -> None:
        s = k // 2
        if k % 2 == 0:
            pending[s] = {o: np.asarray(v, dtype=np.float64) for o, v in out.items()}
            return
        plus = pending.pop(s)
        diff = {o: plus[o] - np.asarray(out[o], dtype=np.float64) for o in plus}
        up, down = shifted(s, 1.0), shifted(s, -1.0)
        one = accumulator() if with_error else None
        for e in elements:
            actual = float(up[e.path][e.index]) - float(down[e.path][e.index])
            total.fold(diff, e, 1.0 / (actual * samples))
            if one is not None:
                one.fold(diff, e, 1.0 / actual)
        if one is not None:
            estimate = _tree_map(lambda a: a * a, one.result())
            squares[:] = [estimate if not squares else _tree_add(squares[0], estimate)]

    def finish() -> Any:
        mean = total.result()
        if not with_error:
            return mean

        def error(m: np.ndarray, sq: np.ndarray) -> np.ndarray:
            variance = (
                np.maximum(sq / samples - m * m, 0.0) * samples / max(samples - 1, 1)
            )
            return spsa_error_factor(samples) * np.sqrt(variance / samples)

        return mean, _tree_map2(error, mean, squares[0])

    return Plan(
        2 * samples,
        point,
        lambda k: (
            f"all differentiated inputs are perturbed together (SPSA sample {k // 2})"
        ),
        accumulate,
        finish,
    )


# Standard errors an SPSA error estimate spans: the 99.865% quantile of Student's
# t with (samples - 1) degrees of freedom (3 standard errors of a normal mean,
# widened for the few samples the spread is measured from), scipy.stats.t.ppf.
_T_QUANTILE = {
    1: 235.784, 2: 19.206, 3: 9.219, 4: 6.62, 5: 5.507, 6: 4.904, 7: 4.53,
    8: 4.277, 9: 4.094, 10: 3.957, 12: 3.764, 15: 3.586, 20: 3.422, 25: 3.33,
    30: 3.27, 40: 3.199, 60: 3.13, 120: 3.064,
}  # fmt: skip


def spsa_error_factor(samples: int) -> float:
    """Standard errors an SPSA estimate from ``samples`` samples is taken to be off by."""
    df = samples - 1
    known = [d for d in _T_QUANTILE if d <= df]
    return _T_QUANTILE[max(known)] if known else _T_QUANTILE[1]


def _tree_map(fn: Callable[[np.ndarray], np.ndarray], tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def _tree_map2(fn: Callable[[Any, Any], np.ndarray], a: Any, b: Any) -> Any:
    if isinstance(a, Mapping):
        return {k: _tree_map2(fn, a[k], b[k]) for k in a}
    return fn(a, b)


def _tree_add(a: Any, b: Any) -> Any:
    return _tree_map2(lambda u, v: u + v, a, b)


def jvp_groups(
    x: Mapping[str, np.ndarray],
    t: Mapping[str, np.ndarray],
    method: str,
    eps: EpsLike = None,
    dtypes: Mapping[str, np.dtype] | None = None,
) -> list[tuple[list[str], float]]:
    """The paths a JVP moves together along the tangent ``t``, each group with its scalar step.

    One scale-aware group of every moved path when ``eps`` is ``None``;
    otherwise paths sharing an absolute step move together, and those the
    mapping leaves out form one scale-aware group (see :func:`jvp_plan`).
    """
    kind = method if method in ("forward", "richardson") else "central"
    moved = [p for p in x if np.any(t[p] != 0)]

    def scale_aware_step(paths: Sequence[str]) -> float:
        return directional_step(
            {p: x[p] for p in paths},
            {p: t[p] for p in paths},
            [np.dtype((dtypes or {}).get(p, x[p].dtype)) for p in x],
            kind,
        )

    # groups of paths moved together, each with its scalar step, in input order
    groups: list[tuple[list[str], float]] = []
    if eps is None:
        if moved:
            groups.append((moved, scale_aware_step(moved)))
    else:
        steps = resolve_steps(x, method, eps)  # validates eps, names unknown paths
        given = eps if isinstance(eps, Mapping) else x
        by_step: dict[float, list[str]] = {}
        for p in moved:
            if p in given:
                by_step.setdefault(float(steps[p].flat[0]), []).append(p)
        groups.extend((paths, h) for h, paths in by_step.items())
        rest = [p for p in moved if p not in given]
        if rest:
            groups.append((rest, scale_aware_step(rest)))

    return groups


def jvp_plan(
    x: Mapping[str, np.ndarray],
    tangent: Mapping[str, np.ndarray],
    out_paths: Sequence[str],
    *,
    method: str = "central",
    eps: EpsLike = None,
    dtypes: Mapping[str, np.dtype] | None = None,
    with_error: bool = False,
) -> Plan:
    """Plan the JVP ``{out: sum_in J[out, in] . t[in]}`` as directional differences.

    Richardson, and any method ``with_error`` (the result is then ``(jvp,
    error)``), take two steps along each group (``_fd_two_step``); SPSA is a
    central difference here.

    Central (and stochastic, which gains nothing for a JVP) evaluates
    ``f(x + h t)`` and ``f(x - h t)``; forward evaluates ``f(x + h t)`` and the
    base. The scalar ``h`` comes from :func:`directional_step`, or is ``eps``
    when one absolute step is given: one direction, 2 evaluations (central) or
    2 with the base (forward).

    An ``eps`` mapping may give the moved paths different steps. Since the JVP
    is linear in the tangent, paths sharing a step move together and the
    directional derivatives of the groups are summed (as tesseract-core
    does); paths the mapping leaves out form one scale-aware group. Each group
    costs 2 evaluations (central) or 1 plus the shared base (forward).
    """
    validate_method(method)
    if method == "richardson" or with_error:
        from ._fd_two_step import two_step_jvp_plan  # builds on this module

        two_step = "central" if method == "stochastic" else method
        plan = two_step_jvp_plan(x, tangent, out_paths, two_step, eps, dtypes)
        return plan if with_error else plan.mapped(lambda result: result[0])
    x = {p: np.asarray(v) for p, v in x.items()}
    t = {
        p: np.asarray(tangent.get(p, np.zeros(np.shape(v))), dtype=np.float64)
        for p, v in x.items()
    }
    for p in x:
        if t[p].shape != x[p].shape:
            raise ValueError(
                f"tangent for input {p!r} has shape {t[p].shape}, expected {x[p].shape}"
            )
    central = method != "forward"
    groups = jvp_groups(x, t, method, eps, dtypes)

    if not groups:
        # zero tangent: the JVP is zero, but output shapes still need one evaluation
        zeros: dict[str, np.ndarray] = {}

        def accumulate_zero(k: int, out: Flat) -> None:
            zeros.update({o: np.zeros(np.shape(out[o])) for o in out_paths})

        return Plan(
            1,
            lambda k: {},
            lambda k: "the base point is evaluated",
            accumulate_zero,
            lambda: zeros,
        )

    def shifted(g: int, sign: float) -> Flat:
        # made on demand: a non-finite first evaluation stops the plan before the next
        paths, h = groups[g]
        return {p: (x[p] + sign * h * t[p]).astype(x[p].dtype) for p in paths}

    n_groups = len(groups)
    size = 2 * n_groups if central else n_groups + 1

    def where(k: int) -> tuple[int, float] | None:
        """The group and sign evaluation ``k`` moves, or ``None`` for the base point."""
        if central:
            return k // 2, (1.0 if k % 2 == 0 else -1.0)
        return (k, 1.0) if k < n_groups else None

    def point(k: int) -> Flat:
        w = where(k)
        return {} if w is None else shifted(*w)

    def describe(k: int) -> str:
        w = where(k)
        if w is None:
            return "the base point is evaluated"
        paths = groups[w[0]][0]
        return (
            f"input{'s' if len(paths) > 1 else ''} {', '.join(map(repr, paths))} "
            f"{'are' if len(paths) > 1 else 'is'} perturbed along the tangent"
        )

    outs: list[Flat] = []

    def accumulate(k: int, out: Flat) -> None:
        outs.append({o: np.asarray(out[o], dtype=np.float64) for o in out_paths})

    def taken(g: int) -> float:
        # the step actually taken in the inputs' dtype, read off the group's largest component
        paths = groups[g][0]
        up = shifted(g, 1.0)
        down = shifted(g, -1.0) if central else x
        p_max = max(paths, key=lambda p: float(np.max(np.abs(t[p]))))
        i_max = np.unravel_index(int(np.argmax(np.abs(t[p_max]))), t[p_max].shape)
        step = float(up[p_max][i_max]) - float(down[p_max][i_max])
        return step / float(t[p_max][i_max])

    def finish() -> dict[str, np.ndarray]:
        result = {o: np.zeros_like(outs[0][o]) for o in out_paths}
        for g in range(n_groups):
            up = outs[2 * g] if central else outs[g]
            down = outs[2 * g + 1] if central else outs[n_groups]
            h = taken(g)
            for o in out_paths:
                result[o] = result[o] + (up[o] - down[o]) / h
        return result

    return Plan(size, point, describe, accumulate, finish)
