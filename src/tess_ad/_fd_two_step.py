"""Differences at two steps per direction: Richardson extrapolation and error estimates.

A finite difference is wrong by a truncation part (the step is not zero) and a
rounding part (the outputs carry round-off, which the difference divides by
the step). Evaluating each direction at two steps, ``h`` and ``2h``, measures
the first and bounds the second, so every estimate can come with an error
estimate in its own layout; and it allows Richardson extrapolation, which
cancels the ``h^2`` term of a central difference.

Per direction (an input element for a Jacobian or VJP, the tangent for a
JVP), with ``D(h)`` the difference quotient over the step actually taken:

==========  ============================  ===========  ==========================
method      value                         evaluations  truncation estimate
==========  ============================  ===========  ==========================
central     ``D(h)``                      4 (2 extra)  ``|D(2h) - D(h)| / (r^2-1)``
richardson  ``(r^2 D(h) - D(2h))/(r^2-1)`` 4           ``min(d, 4 d^2 / |value|)``
forward     ``D(h)``                      2 + base     ``|D(2h) - D(h)| / (r-1)``
==========  ============================  ===========  ==========================

(``r`` is the ratio of the two steps actually taken, 2 up to rounding; ``d``
is the central row's estimate, the ``h^2`` term that Richardson removed. What
remains is ``O(h^4)``, which two steps cannot measure: ``d^2 / |value|`` is
its size for a function whose derivatives grow geometrically, as analytic
functions' do (the remainder is 1.2 times that for ``exp`` and ``sin``),
taken 4 times (:data:`REMAINDER_FACTOR`) for values made small by
cancellation, and never more than ``d``.) The truncation estimate is
multiplied by :data:`TRUNCATION_SAFETY`, and the rounding part added: each
evaluated output entry is taken to carry :data:`ROUNDING_ULPS` units in the
last place of its dtype (or of the moved input's, when coarser: float32
inputs are computed in float32 even behind a Float64 output), relative to
the larger of its own magnitude and the
root-mean-square of its output (round-off in a small entry computed from
large ones; but at most :data:`CANCELLATION` times its own magnitude), so a
difference over a total width ``H`` carries ``2 delta / H``.

A central difference with error estimate returns exactly the value a plain
central difference gives (same points ``x +- h``) and costs ``2n`` more
evaluations (the ``x +- 2h``). Richardson's default step is
``eps^(1/5) |x|``, which balances its ``h^4`` truncation against rounding.

For a VJP the estimate is taken on the contracted values (signed errors of
different outputs cancel as they really do), and the rounding parts of the
entries, independent round-offs, add in quadrature; for a JVP the directions are the tangent's groups (see
:func:`tess_ad._fd.jvp_plan`), summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any

import numpy as np

from ._fd import (
    EpsLike,
    Flat,
    Plan,
    _actual,
    _direction_name,
    _directions,
    _Element,
    _elements,
    jvp_groups,
    perturb_all,
)
from ._sparsity import column_rows

__all__ = [
    "CANCELLATION",
    "REMAINDER_FACTOR",
    "ROUNDING_ULPS",
    "TRUNCATION_SAFETY",
    "TWO_STEP_METHODS",
    "two_step_jvp_plan",
    "two_step_plan",
]

# Units in the last place of round-off each evaluated output entry is taken to carry.
ROUNDING_ULPS = 4.0
# How much larger than an output entry the terms it is computed from may be: its
# round-off is taken relative to the output's root-mean-square (an entry made
# small by cancellation carries the round-off of its terms), but at most this
# many times its own magnitude (an output whose entries span many decades, each
# computed on its own scale, does not lend its largest entries' round-off to
# its smallest).
CANCELLATION = 1e3
# Factor on the measured truncation error (the two-step estimate is asymptotic).
TRUNCATION_SAFETY = 2.0
# Richardson's remainder relative to d^2 / |value|: 1.2 for exp and sin (see the
# module docstring); 4 leaves room for a value that is small by cancellation (a
# directional derivative summing terms of both signs).
REMAINDER_FACTOR = 4.0
TWO_STEP_METHODS = ("central", "richardson", "forward")


def _eps(dtype: Any) -> float:
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype if dtype.kind in "fc" else np.float64).eps)


def _rounding(values: Sequence[Any], floor: float = 0.0) -> np.ndarray:
    """``delta``: the round-off of each entry of one output, from its evaluations.

    The output's machine epsilon, or ``floor`` when larger: the epsilon of
    the inputs moved. A Tesseract given float32 inputs computes in float32
    (NumPy keeps float32 through arithmetic with Python floats), so its
    outputs carry float32 round-off even when its schema declares them
    Float64 and they arrive as float64 (tesseract-core's ``vectoradd``: ``a *
    s + b`` with float32 ``a``, ``b`` and a Float64 ``result``).
    """
    arrays = [np.asarray(v) for v in values]
    eps = max(_eps(arrays[0].dtype), floor)
    mag = np.max([np.abs(a.astype(np.float64)) for a in arrays], axis=0)
    rms = float(np.sqrt(np.mean(mag**2))) if mag.size else 0.0
    return ROUNDING_ULPS * eps * np.minimum(np.maximum(mag, rms), CANCELLATION * mag)


def _estimate(method: str, value: Any, diff: Any, rounding: Any) -> np.ndarray:
    """The error estimate from the truncation measure ``diff`` and the rounding part."""
    d = np.abs(np.asarray(diff, dtype=np.float64))
    if method == "richardson":
        v = np.abs(np.asarray(value, dtype=np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(v > 0, np.minimum(d, REMAINDER_FACTOR * d * d / v), d)
    return TRUNCATION_SAFETY * d + rounding


class _Direction:
    """Value, truncation measure and rounding part of one direction, per output."""

    def __init__(
        self,
        method: str,
        outs: Sequence[Flat],
        widths: tuple[float, float],
        out_paths: Sequence[str],
        base: Flat | None = None,
        floor: float = 0.0,
    ) -> None:
        self.value: Flat = {}
        self.diff: Flat = {}
        self.rounding: Flat = {}
        w1, w2 = widths  # the steps actually taken: fine, coarse
        r = w2 / w1
        for o in out_paths:
            raw = [out[o] for out in outs] + ([base[o]] if base is not None else [])
            f = [np.asarray(v, dtype=np.float64) for v in raw]
            delta = _rounding(raw, floor)
            if method == "forward":  # outs: x + h, x + 2h; base: x
                fine = (f[0] - f[2]) / w1
                coarse = (f[1] - f[2]) / w2
                self.value[o] = fine
                self.diff[o] = (coarse - fine) / (r - 1.0)
                self.rounding[o] = 2.0 * delta / w1
                continue
            # outs: x + 2h, x - 2h, x + h, x - h
            coarse = (f[0] - f[1]) / w2
            fine = (f[2] - f[3]) / w1
            self.diff[o] = (coarse - fine) / (r * r - 1.0)
            if method == "richardson":
                self.value[o] = fine - self.diff[o]
                self.rounding[o] = 2.0 * delta * (r * r / w1 + 1.0 / w2) / (r * r - 1.0)
            else:
                self.value[o] = fine
                self.rounding[o] = 2.0 * delta / w1


class _Layout:
    """How a two-step plan lays out its evaluations, and their outputs as they come.

    Forward differences evaluate the base point first (evaluation 0, shared
    by every direction), then ``x + h``, ``x + 2h`` per direction; central
    ones (and Richardson) ``x + 2h``, ``x - 2h``, ``x + h``, ``x - h``.
    """

    def __init__(self, method: str) -> None:
        if method not in TWO_STEP_METHODS:
            raise ValueError(
                f"error estimates and Richardson extrapolation take one of "
                f"{TWO_STEP_METHODS}, got {method!r}"
            )
        self.per = 2 if method == "forward" else 4
        self.offset = 1 if method == "forward" else 0
        self.base: Flat | None = None
        self._pending: list[Flat] = []

    def size(self, directions: int) -> int:
        """Evaluations for this many directions."""
        return self.offset + self.per * directions

    def where(self, k: int) -> tuple[int, float] | None:
        """The direction evaluation ``k`` moves along, and by how many steps (``None``: the base)."""
        if k < self.offset:
            return None
        d, j = divmod(k - self.offset, self.per)
        return d, ((2.0, -2.0, 1.0, -1.0) if self.per == 4 else (1.0, 2.0))[j]

    def collect(
        self, k: int, out: Flat, out_paths: Sequence[str]
    ) -> tuple[int, list[Flat]] | None:
        """Keep evaluation ``k``'s outputs; a direction's, and its index, once all are in."""
        if k < self.offset:
            self.base = {o: out[o] for o in out_paths}
            return None
        self._pending.append(out)
        if len(self._pending) < self.per:
            return None
        outs, self._pending = self._pending, []
        return (k - self.offset) // self.per, outs


def two_step_plan(
    x: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    out_paths: Sequence[str],
    cotangent: Mapping[str, np.ndarray] | None,
    method: str,
    sparsity: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> Plan:
    """Plan a Jacobian (``cotangent=None``) or VJP with two steps per input element.

    With a ``sparsity`` pattern the elements of one colour move together
    (as in :func:`tess_ad._fd.jacobian_plan`), and entries outside the
    pattern are zero, with zero error.

    Evaluation ``k`` of element ``i`` (central, richardson: ``4i + j`` for
    ``x +- 2h, x +- h``; forward: ``0`` is the base, then ``1 + 2i + j`` for
    ``x + h, x + 2h``). The result is ``(value, error)``, both laid out as
    :func:`tess_ad._fd.jacobian_plan` / :func:`tess_ad._fd.vjp_plan` lay out
    theirs, in float64.
    """
    layout = _Layout(method)
    x = {p: np.asarray(v) for p, v in x.items()}
    directions = _directions(x, _elements(x), sparsity)
    ct = (
        None
        if cotangent is None
        else {o: np.asarray(c, dtype=np.float64) for o, c in cotangent.items()}
    )
    value_blocks: dict[str, dict[str, np.ndarray]] = {o: {} for o in out_paths}
    error_blocks: dict[str, dict[str, np.ndarray]] = {o: {} for o in out_paths}
    vjp = {p: np.zeros(v.shape) for p, v in x.items()}
    vjp_error = {p: np.zeros(v.shape) for p, v in x.items()}
    shapes: dict[str, tuple[int, ...]] = {}

    def point(k: int) -> Flat:
        w = layout.where(k)
        return {} if w is None else perturb_all(x, directions[w[0]], steps, w[1])

    def describe(k: int) -> str:
        w = layout.where(k)
        if w is None:
            return "the base point is evaluated"
        return _direction_name(directions[w[0]])

    def widths(e: _Element) -> tuple[float, float]:
        h = float(steps[e.path][e.index])
        if layout.per == 2:
            return _actual(x[e.path], e.index, h), _actual(x[e.path], e.index, 2 * h)
        return (
            _actual(x[e.path], e.index, h) - _actual(x[e.path], e.index, -h),
            _actual(x[e.path], e.index, 2 * h) - _actual(x[e.path], e.index, -2 * h),
        )

    def accumulate(k: int, out: Flat) -> None:
        done = layout.collect(k, out, out_paths)
        if done is not None:
            d, outs = done
            for e in directions[d]:
                # round-off at least that of the moved input's precision
                floor = _eps(x[e.path].dtype)
                column(
                    e,
                    _Direction(method, outs, widths(e), out_paths, layout.base, floor),
                )

    def rows_of(o: str, e: _Element, shape: tuple[int, ...]) -> np.ndarray | None:
        """Where column ``e`` of output ``o`` may be non-zero (``None``: everywhere)."""
        if sparsity is None:
            return None
        rows = column_rows(sparsity, o, e.path, e.index)
        if rows is None:
            return np.zeros(shape, bool)
        if rows.shape != shape:
            raise ValueError(
                f"sparsity[{o!r}][{e.path!r}] has shape "
                f"{(*rows.shape, *x[e.path].shape)}, but the output has shape "
                f"{shape}: the layout is (*out_shape, *in_shape)"
            )
        return rows

    def column(e: _Element, d: _Direction) -> None:
        if ct is None:
            for o in out_paths:
                shapes.setdefault(o, d.value[o].shape)
                rows = rows_of(o, e, d.value[o].shape)
                for blocks, entry in (
                    (value_blocks, d.value[o]),
                    (
                        error_blocks,
                        _estimate(method, d.value[o], d.diff[o], d.rounding[o]),
                    ),
                ):
                    if e.path not in blocks[o]:
                        blocks[o][e.path] = np.zeros((*entry.shape, *x[e.path].shape))
                    key: tuple[EllipsisType | int, ...] = (..., *e.index)
                    blocks[o][e.path][key] = (
                        entry if rows is None else np.where(rows, entry, 0.0)
                    )
            return
        value = diff = rounding = 0.0
        for o in out_paths:
            if ct[o].shape != d.value[o].shape:
                raise ValueError(
                    f"cotangent for output {o!r} has shape {ct[o].shape}, "
                    f"but the output has shape {d.value[o].shape}"
                )
            rows = rows_of(o, e, d.value[o].shape)
            weight = ct[o] if rows is None else np.where(rows, ct[o], 0.0)
            value += float(np.sum(weight * d.value[o]))
            diff += float(np.sum(weight * d.diff[o]))
            rounding += float(np.sum((weight * d.rounding[o]) ** 2))
        vjp[e.path][e.index] = value
        vjp_error[e.path][e.index] = _estimate(method, value, diff, np.sqrt(rounding))

    def finish() -> Any:
        if ct is not None:
            return vjp, vjp_error
        for blocks in (value_blocks, error_blocks):
            for o in out_paths:
                for p in x:
                    blocks[o].setdefault(p, np.zeros((*shapes.get(o, ()), *x[p].shape)))
        return value_blocks, error_blocks

    return Plan(layout.size(len(directions)), point, describe, accumulate, finish)


def two_step_jvp_plan(
    x: Mapping[str, np.ndarray],
    tangent: Mapping[str, np.ndarray],
    out_paths: Sequence[str],
    method: str,
    eps: EpsLike = None,
    dtypes: Mapping[str, np.dtype] | None = None,
) -> Plan:
    """Plan a JVP with two steps along each group of the tangent; result ``(value, error)``."""
    layout = _Layout(method)
    x = {p: np.asarray(v) for p, v in x.items()}
    t = {p: np.asarray(tangent[p], dtype=np.float64) for p in x}
    groups = jvp_groups(x, t, method, eps, dtypes)
    directions: list[_Direction] = []
    shapes: dict[str, tuple[int, ...]] = {}

    def shifted(g: int, m: float) -> Flat:
        paths, h = groups[g]
        return {p: (x[p] + m * h * t[p]).astype(x[p].dtype) for p in paths}

    def point(k: int) -> Flat:
        w = layout.where(k)
        return {} if w is None else shifted(*w)

    def describe(k: int) -> str:
        w = layout.where(k)
        if w is None:
            return "the base point is evaluated"
        paths = groups[w[0]][0]
        return f"input(s) {', '.join(map(repr, paths))} perturbed along the tangent"

    def taken(g: int, m: float) -> float:
        """The step actually taken along the tangent, read off its largest component."""
        paths = groups[g][0]
        p_max = max(paths, key=lambda p: float(np.max(np.abs(t[p]))))
        i_max = np.unravel_index(int(np.argmax(np.abs(t[p_max]))), t[p_max].shape)
        up = float(shifted(g, m)[p_max][i_max])
        down = (
            float(shifted(g, -m)[p_max][i_max])
            if layout.per == 4
            else float(x[p_max][i_max])
        )
        return (up - down) / float(t[p_max][i_max])

    def accumulate(k: int, out: Flat) -> None:
        for o in out_paths:
            shapes.setdefault(o, np.shape(out[o]))
        done = layout.collect(k, out, out_paths)
        if done is not None:
            g, outs = done
            widths = (taken(g, 1.0), taken(g, 2.0))
            # round-off at least that of the least precise input moved
            floor = max(_eps(x[p].dtype) for p in groups[g][0])
            directions.append(
                _Direction(method, outs, widths, out_paths, layout.base, floor)
            )

    def finish() -> tuple[Flat, Flat]:
        value: Flat = {}
        error: Flat = {}
        for o in out_paths:
            zero = np.zeros(shapes.get(o, ()))
            v = sum((d.value[o] for d in directions), zero)
            diff = sum((d.diff[o] for d in directions), zero)
            rounding = sum((d.rounding[o] for d in directions), zero)
            value[o] = np.asarray(v)
            error[o] = _estimate(method, v, diff, rounding)
        return value, error

    if (
        not groups
    ):  # a zero tangent: zeros, known exactly; one evaluation for the shapes

        def finish_zero() -> tuple[Flat, Flat]:
            zeros = {o: np.zeros(shapes.get(o, ())) for o in out_paths}
            return zeros, {o: z.copy() for o, z in zeros.items()}

        return Plan(
            1,
            lambda k: {},
            lambda k: "the base point is evaluated",
            lambda k, out: shapes.update({o: np.shape(out[o]) for o in out_paths}),
            finish_zero,
        )
    return Plan(layout.size(len(groups)), point, describe, accumulate, finish)
