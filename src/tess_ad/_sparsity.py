"""Sparse Jacobians: which input elements finite differences may move together.

A Jacobian whose pattern is known (``sparsity``: ``{out_path: {in_path: bool
array of shape (*out_shape, *in_shape)}}``, the Jacobian's own layout, a
missing pair meaning all-zero) does not need one perturbation per input
element: columns (input elements) that share no non-zero row (output entry)
can move together, since each output entry then sees at most one of them.
Greedy colouring in input order (Curtis, Powell and Reid's grouping; what
``scipy.optimize.approx_derivative(..., sparsity=)`` does) finds such groups,
3 for a tridiagonal pattern whatever its size, so a central Jacobian costs
``2 x colours`` apply calls instead of ``2n``.

A wrong pattern gives wrong numbers (an entry left out of the pattern is
taken as zero, and a column moved with another one it shares a row with gets
both of their contributions), so patterns come from
:func:`jacobian_sparsity` (once, from the ``jacobian`` endpoint or one dense
finite-difference Jacobian) and can be checked against a dense Jacobian with
:func:`check_sparsity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Sparsity",
    "check_sparsity",
    "colour",
    "column_rows",
    "jacobian_sparsity",
    "validate_sparsity",
]

Sparsity = Mapping[str, Mapping[str, Any]]


def validate_sparsity(
    sparsity: Sparsity, in_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, dict[str, np.ndarray]]:
    """The pattern as bool arrays, checked against the differentiated inputs' shapes.

    Pairs of inputs not differentiated in this call are dropped (so
    ``in_shapes={}`` checks the types alone).

    Raises:
        ValueError: For a pattern that is not boolean, or whose trailing axes
            are not its input's shape; the message names the pair.
    """
    if not isinstance(sparsity, Mapping):
        raise TypeError(
            "sparsity must be {out_path: {in_path: bool array (*out_shape, *in_shape)}}, "
            f"got {type(sparsity).__name__}"
        )
    checked: dict[str, dict[str, np.ndarray]] = {}
    for o, row in sparsity.items():
        if not isinstance(row, Mapping):
            raise TypeError(
                f"sparsity[{o!r}] must be {{in_path: bool array}}, got {type(row).__name__}"
            )
        for p, pattern in row.items():
            arr = np.asarray(pattern)
            if arr.dtype != bool:
                raise ValueError(
                    f"sparsity[{o!r}][{p!r}] must be a bool array (True where the "
                    f"Jacobian may be non-zero), got dtype {arr.dtype}"
                )
            if p not in in_shapes:
                continue
            shape = tuple(in_shapes[p])
            if arr.ndim < len(shape) or arr.shape[arr.ndim - len(shape) :] != shape:
                raise ValueError(
                    f"sparsity[{o!r}][{p!r}] has shape {arr.shape}, but its trailing "
                    f"axes must be the input's shape {shape} (the layout is "
                    "(*out_shape, *in_shape), as the Jacobian's)"
                )
            checked.setdefault(o, {})[p] = arr
    return checked


def column_rows(
    pattern: Mapping[str, Mapping[str, np.ndarray]],
    out_path: str,
    in_path: str,
    index: tuple[int, ...],
) -> np.ndarray | None:
    """The output entries of ``out_path`` that input element ``in_path[index]`` may move.

    ``None`` when the pair is missing (all-zero).
    """
    block = pattern.get(out_path, {}).get(in_path)
    if block is None:
        return None
    key: tuple[Any, ...] = (..., *index)
    return block[key]


def colour(
    pattern: Mapping[str, Mapping[str, np.ndarray]],
    columns: Sequence[tuple[str, tuple[int, ...]]],
    in_shapes: Mapping[str, tuple[int, ...]],
) -> list[list[int]]:
    """Greedy colouring: groups of column positions no two of which share a row.

    Columns are taken in order and each goes to the first group none of
    whose columns touches one of its rows (so a banded pattern needs as
    many groups as its bandwidth). A column with no row at all (a zero
    column) joins the first group.
    """
    sizes = {
        o: int(block.size // max(1, int(np.prod(in_shapes[p]))))
        for o, row in pattern.items()
        for p, block in row.items()
    }
    outs = list(sizes)
    groups: list[list[int]] = []
    covered: list[np.ndarray] = []
    for j, (p, index) in enumerate(columns):
        parts = []
        for o in outs:
            r = column_rows(pattern, o, p, index)
            parts.append(np.zeros(sizes[o], bool) if r is None else np.ravel(r))
        rows = np.concatenate(parts) if parts else np.zeros(0, bool)
        for g, cov in enumerate(covered):
            if not np.any(cov & rows):
                groups[g].append(j)
                cov |= rows
                break
        else:
            groups.append([j])
            covered.append(rows.copy())
    return groups


def jacobian_sparsity(
    tesseract: Any,
    inputs: Mapping[str, Any],
    jac_inputs: Sequence[str],
    jac_outputs: Sequence[str],
    *,
    rtol: float = 1e-10,
    method: str = "central",
) -> dict[str, dict[str, np.ndarray]]:
    """A Jacobian's sparsity pattern at ``inputs``, for ``sparsity=`` in later calls.

    Computed once: from the Tesseract's ``jacobian`` endpoint when it has
    one, else from one dense finite-difference Jacobian (``2n`` apply calls
    with ``method="central"``). An entry is in the pattern when its magnitude
    exceeds ``rtol`` times the largest magnitude of its ``(output, input)``
    block; so a pattern from finite differences also keeps round-off noise
    above that level (harmless: it costs colours, not accuracy). A pattern
    derived at one point holds elsewhere only if the zeros are structural
    (the output does not depend on that input at all); check it at other
    points with :func:`check_sparsity`.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (or a proxy).
        inputs: The point.
        jac_inputs: Input paths.
        jac_outputs: Output paths.
        rtol: Relative threshold per block (``0.0``: every non-zero entry).
        method: Finite-difference method when there is no ``jacobian`` endpoint.

    Returns:
        ``{out_path: {in_path: bool array (*out_shape, *in_shape)}}``.

    Example:
        >>> import numpy as np, tess_ad
        >>> from tesseract_core import Tesseract
        >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> inputs = {"x": np.array([0.5, -1.0, 2.0]), "a": 1.0, "b": 100.0}
        >>> pattern = tess_ad.jacobian_sparsity(t, inputs, ["x"], ["residuals"])
        >>> pattern["residuals"]["x"].astype(int)
        array([[1, 0, 0],
               [0, 1, 0],
               [1, 1, 0],
               [0, 1, 1]])
        >>> fd = tess_ad.with_finite_differences(t, sparsity=pattern)
        >>> jac = fd.jacobian(inputs, ["x"], ["residuals"])  # 2 colours: 4 apply calls, not 6
        >>> np.round(jac["residuals"]["x"], 6)
        array([[ -1.,   0.,   0.],
               [  0.,  -1.,   0.],
               [-10.,  10.,   0.],
               [  0.,  20.,  10.]])
    """
    from ._proxy import with_finite_differences
    from ._schema import tesseract_schema

    if "jacobian" in tesseract_schema(tesseract).endpoints:
        jac = tesseract.jacobian(
            inputs=inputs, jac_inputs=list(jac_inputs), jac_outputs=list(jac_outputs)
        )
    else:
        jac = with_finite_differences(tesseract, method=method).jacobian(
            dict(inputs), list(jac_inputs), list(jac_outputs)
        )
    pattern: dict[str, dict[str, np.ndarray]] = {}
    for o in jac_outputs:
        for p in jac_inputs:
            block = np.abs(np.asarray(jac[o][p], dtype=np.float64))
            top = float(block.max()) if block.size else 0.0
            pattern.setdefault(o, {})[p] = block > rtol * top if top > 0 else block > 0
    return pattern


def check_sparsity(
    sparsity: Sparsity, jacobian: Mapping[str, Mapping[str, Any]], *, atol: float = 0.0
) -> None:
    """Check that a dense Jacobian has no entry outside a sparsity pattern.

    Args:
        sparsity: The pattern (``{out: {in: bool array}}``; a missing pair is all-zero).
        jacobian: A dense Jacobian in the same layout (from a ``jacobian``
            endpoint, or ``with_finite_differences(t).jacobian(...)``).
        atol: Entries up to this magnitude count as zero (finite-difference noise).

    Raises:
        ValueError: Naming the first pair and element where the Jacobian is
            non-zero but the pattern says zero, its value, and what to do.

    Example:
        >>> import numpy as np, tess_ad
        >>> jacobian = {"y": {"x": np.array([[2.0, 0.0], [0.5, 3.0]])}}
        >>> tess_ad.check_sparsity({"y": {"x": np.array([[True, False], [True, True]])}}, jacobian)
        >>> tess_ad.check_sparsity({"y": {"x": np.eye(2, dtype=bool)}}, jacobian)
        Traceback (most recent call last):
        ...
        ValueError: the sparsity pattern is wrong: dy/dx at [1, 0] is 0.5, but the pattern says zero (1 such entries). Finite differences with this pattern would give wrong numbers; derive it again with tess_ad.jacobian_sparsity, or add these entries.
    """
    for o, row in jacobian.items():
        for p, block in row.items():
            values = np.asarray(block)
            allowed = sparsity.get(o, {}).get(p)
            allowed = (
                np.zeros(values.shape, bool) if allowed is None else np.asarray(allowed)
            )
            if allowed.shape != values.shape:
                raise ValueError(
                    f"sparsity[{o!r}][{p!r}] has shape {allowed.shape}, the Jacobian "
                    f"block {values.shape}"
                )
            outside = (np.abs(values) > atol) & ~allowed
            if outside.any():
                where = tuple(int(i) for i in np.argwhere(outside)[0])
                raise ValueError(
                    f"the sparsity pattern is wrong: d{o}/d{p} at {list(where)} is "
                    f"{float(values[where])!r}, but the pattern says zero "
                    f"({int(outside.sum())} such entries). Finite differences with "
                    "this pattern would give wrong numbers; derive it again with "
                    "tess_ad.jacobian_sparsity, or add these entries."
                )
