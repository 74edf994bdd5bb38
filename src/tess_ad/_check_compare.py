"""How a check compares one way's derivatives with the reference's, entry by entry.

An entry agrees when ``|way - reference| <= K * (the reference's estimated
error + the way's own rounding)``; a block the reference is too noisy to
judge (it could not tell a right entry from a 10% wrong one) is
"inconclusive". A way that computed Jacobian blocks is compared block by
block; a framework way, checked along random directions (:class:`Probes`), is
compared product by product with the reference's Jacobian contracted along
the same directions. Each comparison also names its worst entry and keeps
``(way - reference) / allowed`` per entry, which the HTML report draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._fd_two_step import ROUNDING_ULPS

__all__ = ["INCONCLUSIVE", "SIGNIFICANT", "K", "Probes"]

# An entry agrees when |way - reference| <= K * (the reference's estimated error
# + the way's own rounding). The estimate already bounds the true error (with a
# safety factor on its truncation part, see _fd_two_step); K leaves room for the
# way's own error, which is of the same kind (an FD proxy behind the adapters).
K = 2.0
# A pair is "inconclusive" when, at an entry that matters (at least SIGNIFICANT
# times the block's largest), K times the reference's estimated error exceeds
# this fraction of the entry: the reference cannot tell right from 10% wrong.
INCONCLUSIVE = 0.1
SIGNIFICANT = 1e-3


@dataclass
class Probes:
    """Random directions a framework way is checked along, and what it gave.

    ``cotangents[k]`` (``{out_path: array}``) and ``tangents[k]``
    (``{in_path: array}``) have random signs in every entry (so every row and
    column of the Jacobian takes part; see :func:`make_probes`); ``vjps[k]``
    and ``jvps[k]`` are the framework's products along them.
    ``jvp_errors[k]`` (``{out_path: array}``), when the framework's JVPs are
    directional finite differences (a Tesseract without gradient endpoints),
    is their own estimated error: one step along a tangent that moves inputs
    of different precisions is sized for the least precise, so such a JVP
    can be less accurate than the reference's per-element differences, and
    is allowed its own error on top of the reference's.
    """

    cotangents: list[dict[str, np.ndarray]]
    tangents: list[dict[str, np.ndarray]]
    vjps: list[dict[str, np.ndarray]] = field(default_factory=list)
    jvps: list[dict[str, np.ndarray]] = field(default_factory=list)
    jvp_errors: list[dict[str, np.ndarray]] = field(default_factory=list)


def _contract(
    blocks: Mapping[str, Mapping[str, np.ndarray]],
    vector: Mapping[str, np.ndarray],
    reverse: bool,
) -> dict[str, np.ndarray]:
    """``ct . J`` per input (``reverse``) or ``J . t`` per output, from Jacobian blocks."""
    result: dict[str, np.ndarray] = {}
    for o, row in blocks.items():
        for p, block in row.items():
            block = np.asarray(block, np.float64)
            if reverse:
                term = np.tensordot(vector[o], block, axes=np.ndim(vector[o]))
                result[p] = result.get(p, 0.0) + term
            else:
                n_in = np.ndim(vector[p])
                term = np.tensordot(
                    block,
                    vector[p],
                    axes=(
                        list(range(block.ndim - n_in, block.ndim)),
                        list(range(n_in)),
                    ),
                )
                result[o] = result.get(o, 0.0) + term
    return result


def _compare(
    ref: np.ndarray,
    got: np.ndarray,
    error: np.ndarray,
    rtol: float | None,
    terms: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One way's block against the reference's: the verdict, the worst entry, the ratios.

    Returns the comparison (``max_abs_diff``, ``max_rel_diff`` relative to
    the block's largest entry in the reference or the way, ``verdict``:
    ``"agrees"``, ``"disagrees"`` or ``"inconclusive"``, ``ok`` (not
    ``"disagrees"``) and ``worst``: the entry that exceeds its allowance the
    most, with its ``index`` into the block, ``expected``, ``actual``,
    ``allowed``) and, per entry, ``(way - reference) / allowed`` (beyond
    +-1: the entry disagrees; NaN where either is not finite; ``None`` when
    the shapes differ), which the HTML report draws.

    ``terms``, for a product along a probe, is the size of what each entry
    sums (``|J| |t|`` or ``|ct| |J|``): an entry small by cancellation is
    judged "too noisy" against that, not against its own small value (a 10%
    error in the Jacobian moves it by 10% of its terms).

    Entries that are not finite: a NaN or infinite entry of the way where the
    reference is finite disagrees; where the reference (or its error
    estimate) is not finite, the entry cannot be judged, and the block is at
    best inconclusive.
    """
    got_raw = np.asarray(got)
    ref, got = np.asarray(ref, np.float64), got_raw.astype(np.float64)
    if ref.shape != got.shape:
        return {
            "max_abs_diff": float("inf"),
            "max_rel_diff": float("inf"),
            "verdict": "disagrees",
            "ok": False,
            "worst": {"shape": list(got.shape), "expected_shape": list(ref.shape)},
        }, None
    error = np.asarray(error, np.float64)
    judged = np.isfinite(ref) & np.isfinite(error)
    with np.errstate(invalid="ignore"):
        diff = np.abs(got - ref)
    # the block's size: the reference's or the way's largest finite entry (a
    # reference swamped by noise can be exactly zero where the way is not)
    sizes = np.concatenate([np.abs(ref).ravel(), np.abs(got).ravel()])
    sizes = sizes[np.isfinite(sizes)]
    scale = float(np.max(sizes)) if sizes.size else 0.0
    kind = got_raw.dtype if got_raw.dtype.kind in "fc" else np.dtype(np.float64)
    magnitude = np.where(np.isfinite(got), np.abs(got), 0.0)
    rounding = ROUNDING_ULPS * float(np.finfo(kind).eps) * magnitude
    allowed = K * (error + rounding)
    if rtol is not None:
        allowed = allowed + rtol * scale
    # judged entries beyond their allowance, a NaN or infinite way's among them
    with np.errstate(invalid="ignore"):
        bad = judged & ~(diff <= allowed)
    max_diff = float(np.max(diff[judged])) if judged.any() else 0.0
    if np.isnan(max_diff):
        max_diff = float("inf")
    rel = max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else float("inf"))
    worst: dict[str, Any] = {}
    if diff.size:
        with np.errstate(invalid="ignore"):
            excess = np.where(judged, diff - allowed, -np.inf)
        excess = np.where(bad & ~np.isfinite(excess), np.inf, excess).ravel()
        # among entries infinitely off (a NaN or infinite way), the largest
        # reference entry: the one that matters most
        infinite = np.flatnonzero(np.isposinf(excess))
        k = (
            int(infinite[np.argmax(np.abs(ref).ravel()[infinite])])
            if infinite.size
            else int(np.argmax(excess))
        )
        i = np.unravel_index(k, diff.shape)
        worst = {
            "index": [int(j) for j in i],
            "expected": float(ref[i]),
            "actual": float(got[i]),
            "allowed": float(allowed[i]),
        }
    if bad.any():
        verdict = "disagrees"
    elif not judged.all() or _too_noisy(ref, got, error, scale, terms):
        verdict = "inconclusive"
    else:
        verdict = "agrees"
    with np.errstate(invalid="ignore"):
        signed = got - ref
        # nothing allowed (an exact zero reference): any difference is infinitely off
        ratio = np.where(signed == 0, 0.0, np.copysign(np.inf, signed))
        np.divide(signed, allowed, out=ratio, where=allowed > 0)
    ratio[~judged | np.isnan(signed)] = np.nan
    return {
        "max_abs_diff": max_diff,
        "max_rel_diff": rel,
        "verdict": verdict,
        "ok": verdict != "disagrees",
        "worst": worst,
        # entries where the way, the reference or its error is NaN or infinite
        "not_finite": int(np.sum(~(judged & np.isfinite(got)))),
    }, ratio


def _comparisons(
    got: Any,
    reference: Mapping[str, Mapping[str, np.ndarray]],
    estimate: Mapping[str, Mapping[str, np.ndarray]],
    shapes: Mapping[str, tuple[int, ...]],
    in_paths: Sequence[str],
    out_paths: Sequence[str],
    rtol: float | None,
) -> Iterator[
    tuple[
        tuple[str, str],
        str,
        tuple[dict[str, Any], np.ndarray | None],
        Callable[[list[int]], str],
    ]
]:
    """Every comparison of one way with the reference: ``(key, label, compared, describe)``.

    ``compared`` is what :func:`_compare` returns.

    A way that computed Jacobian blocks is compared block by block; one that
    ran probes (:class:`Probes`), product by product with the reference's
    Jacobian contracted along the same directions (and its error estimate
    along their magnitudes). ``describe(index)`` names an entry.
    """
    if isinstance(got, Probes):
        for k, (ct, vjp) in enumerate(zip(got.cotangents, got.vjps, strict=True)):
            expected = _contract(reference, ct, reverse=True)
            size = {o: np.abs(c) for o, c in ct.items()}
            error = _contract(estimate, size, True)
            terms = _contract(_absolute(reference), size, True)
            for p in in_paths:
                yield (
                    (f"VJP probe {k + 1}", p),
                    f"VJP probe {k + 1} (d/d {p})",
                    _compare(expected[p], vjp[p], error[p], rtol, terms[p]),
                    functools.partial(_name_vjp, k, p),
                )
        for k, (t, jvp) in enumerate(zip(got.tangents, got.jvps, strict=True)):
            expected = _contract(reference, t, reverse=False)
            size = {p: np.abs(v) for p, v in t.items()}
            error = _contract(estimate, size, False)
            terms = _contract(_absolute(reference), size, False)
            if got.jvp_errors:
                error = {o: error[o] + got.jvp_errors[k][o] for o in out_paths}
            for o in out_paths:
                yield (
                    (o, f"JVP probe {k + 1}"),
                    f"JVP probe {k + 1} ({o})",
                    _compare(expected[o], jvp[o], error[o], rtol, terms[o]),
                    functools.partial(_name_jvp, k, o),
                )
        return
    for o in out_paths:
        for p in in_paths:
            n_out = len(shapes[o])
            yield (
                (o, p),
                f"d {o} / d {p}",
                _compare(reference[o][p], got[o][p], estimate[o][p], rtol),
                functools.partial(_name_entry, o, p, n_out),
            )


def _absolute(
    blocks: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, dict[str, np.ndarray]]:
    return {o: {p: np.abs(b) for p, b in row.items()} for o, row in blocks.items()}


def _name_vjp(k: int, p: str, index: list[int]) -> str:
    return f"VJP probe {k + 1}, d/d {_element(p, index)}"


def _name_jvp(k: int, o: str, index: list[int]) -> str:
    return f"JVP probe {k + 1}, {_element(o, index)}"


def _name_entry(o: str, p: str, n_out: int, index: list[int]) -> str:
    return f"d {_element(o, index[:n_out])} / d {_element(p, index[n_out:])}"


def _too_noisy(
    ref: np.ndarray,
    got: np.ndarray,
    error: np.ndarray,
    scale: float,
    terms: np.ndarray | None = None,
) -> bool:
    """Whether the reference cannot tell a right entry from a 10% wrong one.

    Asked of the entries that matter in the block (at least
    :data:`SIGNIFICANT` times its largest, in the reference or the way):
    entries far below the block's size, or zero in both, are not evidence
    either way. An entry's size is its own magnitude, or for a product along
    a probe the size of its ``terms`` when larger.
    """
    size = np.maximum(np.abs(ref), np.abs(got))
    if terms is not None:
        size = np.maximum(size, np.asarray(terms, np.float64))
        scale = max(scale, float(np.max(terms)) if np.size(terms) else 0.0)
    matters = size >= SIGNIFICANT * scale if scale > 0 else np.zeros(size.shape, bool)
    return bool(np.any(matters & (K * error > INCONCLUSIVE * size)))


def _element(path: str, index: Sequence[int]) -> str:
    return f"{path}[{', '.join(map(str, index))}]" if index else path
