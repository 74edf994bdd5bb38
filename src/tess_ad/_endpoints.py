"""Derivative calls through whichever route a Tesseract client offers.

Both adapters (``tess_ad.jax`` and ``tess_ad.torch``) get every number from
this one class, never from their own arithmetic: that is why the same
Tesseract gives the same gradients in JAX and in PyTorch, to the last bit.

Routes, in order of preference:

* reverse mode (:meth:`Endpoints.vjp`): ``vector_jacobian_product``, else the
  ``jacobian`` endpoint contracted with the cotangent;
* forward mode (:meth:`Endpoints.jvp`): ``jacobian_vector_product``, else the
  ``jacobian`` endpoint contracted with the tangent;
* whole Jacobians (:meth:`Endpoints.jacobian`): the ``jacobian`` endpoint, else
  one VJP per output element or one JVP per input element, whichever is fewer;
* second order (:meth:`Endpoints.vjp_jvp`): the derivative of the VJP along a
  tangent direction, by a central difference of two VJP calls.

A Tesseract with none of these raises :class:`NoGradientRouteError`, whose
message says to wrap it in :func:`tess_ad.with_finite_differences`: finite
differences are never switched on silently, since they cost ``O(n)`` apply
calls and are less accurate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._fd import directional_step
from ._schema import FlatTree, SchemaError, as_numpy, tesseract_schema

__all__ = ["Endpoints", "NoGradientRouteError"]

VJP = "vector_jacobian_product"
JVP = "jacobian_vector_product"
JAC = "jacobian"


class NoGradientRouteError(NotImplementedError):
    """The Tesseract has no endpoint that can give the requested derivative."""


def _no_route(what: str, needs: str) -> NoGradientRouteError:
    return NoGradientRouteError(
        f"cannot compute {what}: this Tesseract has no {needs} endpoint. "
        "Wrap it to get derivatives from finite differences of apply: "
        "`tesseract = tess_ad.with_finite_differences(tesseract)`, "
        "or add the gradient endpoints to its tesseract_api.py."
    )


class Endpoints:
    """The gradient routes of one Tesseract client.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` or a
            :func:`tess_ad.with_finite_differences` proxy.

    Example:
        >>> ep = Endpoints(tesseract)  # doctest: +SKIP
        >>> ep.vjp(inputs, ["x"], ["loss"], {"loss": np.float64(1.0)})  # doctest: +SKIP
        {'x': array([...])}
    """

    def __init__(self, tesseract: Any) -> None:
        self.tesseract = tesseract
        self.schema = tesseract_schema(tesseract)
        self.has_vjp = self.schema.has(VJP)
        self.has_jvp = self.schema.has(JVP)
        self.has_jacobian = self.schema.has(JAC)

    @property
    def has_reverse(self) -> bool:
        """Whether VJPs can be computed."""
        return self.has_vjp or self.has_jacobian

    @property
    def has_forward(self) -> bool:
        """Whether JVPs can be computed."""
        return self.has_jvp or self.has_jacobian

    # -- plain calls -----------------------------------------------------------

    def apply(self, inputs: Mapping[str, Any]) -> dict:
        """Call ``apply``."""
        return self.tesseract.apply(dict(inputs))

    def vjp(
        self,
        inputs: Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        """Vector-Jacobian product: ``{in_path: sum_out ct[out] . J[out, in]}``.

        Raises:
            NoGradientRouteError: If neither a VJP nor a jacobian endpoint exists.
        """
        flat = self._flat_inputs(inputs, vjp_inputs)
        if not vjp_inputs:
            return {}
        if not vjp_outputs:
            return {p: np.zeros(flat[p].shape, _dtype(flat, p)) for p in vjp_inputs}
        if self.has_vjp:
            result = self.tesseract.vector_jacobian_product(
                dict(inputs),
                list(vjp_inputs),
                list(vjp_outputs),
                dict(cotangent_vector),
            )
        elif self.has_jacobian:
            jac = self.tesseract.jacobian(
                dict(inputs), list(vjp_inputs), list(vjp_outputs)
            )
            result = {}
            for p in vjp_inputs:
                total = 0.0
                for o in vjp_outputs:
                    ct = as_numpy(cotangent_vector[o])
                    total = total + np.tensordot(ct, as_numpy(jac[o][p]), axes=ct.ndim)
                result[p] = total
        else:
            raise _no_route(
                "a vector-Jacobian product (reverse mode)", f"{VJP} or {JAC}"
            )
        return {
            p: _checked(result, p, flat[p].shape, _dtype(flat, p), VJP)
            for p in vjp_inputs
        }

    def jvp(
        self,
        inputs: Mapping[str, Any],
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangent_vector: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        """Jacobian-vector product: ``{out_path: sum_in J[out, in] . t[in]}``.

        Raises:
            NoGradientRouteError: If neither a JVP nor a jacobian endpoint exists.
        """
        flat = self._flat_inputs(inputs, jvp_inputs)
        if not jvp_outputs:
            return {}
        if self.has_jvp:
            result = self.tesseract.jacobian_vector_product(
                dict(inputs), list(jvp_inputs), list(jvp_outputs), dict(tangent_vector)
            )
        elif self.has_jacobian:
            jac = self.tesseract.jacobian(
                dict(inputs), list(jvp_inputs), list(jvp_outputs)
            )
            result = {}
            for o in jvp_outputs:
                total = 0.0
                for p in jvp_inputs:
                    t = as_numpy(tangent_vector[p])
                    j = as_numpy(jac[o][p])
                    total = total + np.tensordot(
                        j,
                        t,
                        axes=(
                            list(range(j.ndim - t.ndim, j.ndim)),
                            list(range(t.ndim)),
                        ),
                    )
                result[o] = total
        else:
            raise _no_route(
                "a Jacobian-vector product (forward mode)", f"{JVP} or {JAC}"
            )
        del flat
        return {
            o: _checked(result, o, None, self._out_dtype(o), JVP) for o in jvp_outputs
        }

    def jacobian(
        self,
        inputs: Mapping[str, Any],
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
        route: str = "auto",
    ) -> dict[str, dict[str, np.ndarray]]:
        """Whole Jacobian blocks ``{out: {in: array(*out_shape, *in_shape)}}``.

        Args:
            inputs: The inputs.
            jac_inputs: Input paths to differentiate with respect to.
            jac_outputs: Output paths to differentiate.
            output_shapes: Shapes of the outputs, if known (else one ``apply``
                call finds them when a row or column route needs them).
            route: ``"auto"`` uses the ``jacobian`` endpoint when present, and
                otherwise one VJP per output element or one JVP per input
                element, whichever needs fewer calls. ``"jacobian"``,
                ``"vjp"`` or ``"jvp"`` use that endpoint alone (``tess-ad
                check`` compares them, so a wrong one cannot hide behind
                another).

        Raises:
            NoGradientRouteError: The route's endpoint is missing.
        """
        if route not in ("auto", "jacobian", "vjp", "jvp"):
            raise ValueError(
                f"route must be 'auto', 'jacobian', 'vjp' or 'jvp', got {route!r}"
            )
        flat = self._flat_inputs(inputs, jac_inputs)
        if route == "jacobian" or (route == "auto" and self.has_jacobian):
            if not self.has_jacobian:
                raise _no_route("a Jacobian from the jacobian endpoint", JAC)
            result = self.tesseract.jacobian(
                dict(inputs), list(jac_inputs), list(jac_outputs)
            )
            return {
                o: {
                    p: _checked(result.get(o, {}), p, None, None, JAC)
                    for p in jac_inputs
                }
                for o in jac_outputs
            }
        if route == "vjp" and not self.has_vjp:
            raise _no_route("a Jacobian from VJP rows", VJP)
        if route == "jvp" and not self.has_jvp:
            raise _no_route("a Jacobian from JVP columns", JVP)
        if route == "auto" and not (self.has_vjp or self.has_jvp):
            raise _no_route("a Jacobian", f"{JAC}, {VJP} or {JVP}")
        if output_shapes is None:
            outs = self.schema.outputs.flatten(self.apply(inputs), check=False)
            output_shapes = {o: outs[o].shape or () for o in jac_outputs}
        if route == "auto":
            n_in = sum(int(np.prod(flat[p].shape)) for p in jac_inputs)
            n_out = sum(int(np.prod(output_shapes[o])) for o in jac_outputs)
            route = (
                "vjp" if self.has_vjp and (n_out <= n_in or not self.has_jvp) else "jvp"
            )
        if route == "vjp":
            return self._jacobian_rows(
                inputs, flat, jac_inputs, jac_outputs, output_shapes
            )
        return self._jacobian_columns(
            inputs, flat, jac_inputs, jac_outputs, output_shapes
        )

    def _jacobian_rows(
        self,
        inputs: Mapping[str, Any],
        flat: FlatTree,
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        output_shapes: Mapping[str, tuple[int, ...]],
    ) -> dict[str, dict[str, np.ndarray]]:
        """The Jacobian from one VJP per output element."""
        blocks: dict[str, dict[str, np.ndarray]] = {}
        for o in jac_outputs:
            shape = tuple(output_shapes[o])
            rows = {
                p: np.zeros((*shape, *flat[p].shape), _dtype(flat, p))
                for p in jac_inputs
            }
            for idx in np.ndindex(shape):
                ct = {q: np.zeros(output_shapes[q]) for q in jac_outputs}
                ct[o][idx] = 1.0
                row = self.vjp(inputs, jac_inputs, jac_outputs, ct)
                for p in jac_inputs:
                    rows[p][idx] = row[p]
            blocks[o] = rows
        return blocks

    def _jacobian_columns(
        self,
        inputs: Mapping[str, Any],
        flat: FlatTree,
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        output_shapes: Mapping[str, tuple[int, ...]],
    ) -> dict[str, dict[str, np.ndarray]]:
        """The Jacobian from one JVP per input element."""
        blocks: dict[str, dict[str, np.ndarray]] = {o: {} for o in jac_outputs}
        for p in jac_inputs:
            in_shape = flat[p].shape
            cols = {o: np.zeros((*output_shapes[o], *in_shape)) for o in jac_outputs}
            for idx in np.ndindex(in_shape):
                t = {q: np.zeros(flat[q].shape, _dtype(flat, q)) for q in jac_inputs}
                t[p][idx] = 1.0
                col = self.jvp(inputs, jac_inputs, jac_outputs, t)
                for o in jac_outputs:
                    cols[o][(..., *idx)] = col[o]
            for o in jac_outputs:
                blocks[o][p] = cols[o]
        return blocks

    def vjp_jvp(
        self,
        inputs: Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        tangent_vector: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        """Derivative of the VJP along a direction of the inputs (second order).

        Computes ``d/de VJP(x + e t, ct)`` at ``e = 0`` by the central
        difference ``(VJP(x + h t) - VJP(x - h t)) / 2h``: exactly two VJP
        calls, whatever the input size. With the cotangent of a scalar loss
        this is the Hessian-vector product ``H t``.

        The step ``h`` moves the inputs by about ``cbrt(eps) * (1 + |x|)`` in
        total (eps of the least precise perturbed dtype), so the error is
        ``O(h^2)`` truncation plus ``O(eps_vjp / h)`` rounding: about ``1e-10``
        relative for an exact float64 VJP, ``1e-4`` in float32, and worse when
        the VJP itself comes from finite differences.

        Args:
            inputs: The inputs (the point ``x``).
            vjp_inputs: Input paths whose VJP is differentiated.
            vjp_outputs: Output paths the cotangent applies to.
            cotangent_vector: The cotangent ``ct``.
            tangent_vector: The direction ``t``: ``{in_path: array}`` over any
                differentiable input paths (missing paths do not move).

        Returns:
            ``{in_path: array}`` for every path of ``vjp_inputs``.
        """
        flat = self._flat_inputs(inputs, [*vjp_inputs, *tangent_vector])
        x = {p: as_numpy(flat[p].value, _dtype(flat, p)) for p in tangent_vector}
        t = {p: as_numpy(tangent_vector[p], np.float64) for p in tangent_vector}
        # a VJP that is itself a finite difference is noisier: difference it over a longer step
        accuracy = getattr(self.tesseract, "tess_ad_derivative_accuracy", 1.0)
        h = directional_step(
            x, t, [_dtype(flat, p) for p in tangent_vector], accuracy=accuracy
        )
        if h == 0.0:
            return {p: np.zeros(flat[p].shape, _dtype(flat, p)) for p in vjp_inputs}
        plus = flat.unflatten({p: (x[p] + h * t[p]).astype(x[p].dtype) for p in x})
        minus = flat.unflatten({p: (x[p] - h * t[p]).astype(x[p].dtype) for p in x})
        g_plus = self.vjp(plus, vjp_inputs, vjp_outputs, cotangent_vector)
        g_minus = self.vjp(minus, vjp_inputs, vjp_outputs, cotangent_vector)
        return {
            p: ((g_plus[p].astype(np.float64) - g_minus[p]) / (2.0 * h)).astype(
                _dtype(flat, p)
            )
            for p in vjp_inputs
        }

    # -- helpers -------------------------------------------------------------

    def _out_dtype(self, out_path: str) -> np.dtype:
        outputs = self.schema.outputs
        pattern = outputs.differentiable_pattern(out_path)
        spec = (
            outputs.differentiable_arrays.get(pattern) if pattern is not None else None
        )
        return (
            np.dtype(spec.dtype)
            if spec is not None and spec.dtype
            else np.dtype(np.float64)
        )

    def _flat_inputs(self, inputs: Mapping[str, Any], paths: Sequence[str]) -> FlatTree:
        flat = self.schema.inputs.flatten(dict(inputs), check=False)
        flat.check_paths(list(paths), "differentiated input")
        for p in paths:
            if not flat[p].differentiable:
                raise SchemaError(
                    f"input {p!r} is not marked Differentiable in the Tesseract's "
                    "schema, so no derivative can be taken with respect to it. Mark it "
                    "`Differentiable[...]` in tesseract_api.py, or leave it out."
                )
        return flat


def _dtype(flat: FlatTree, path: str) -> np.dtype:
    leaf = flat[path]
    if leaf.spec is not None and leaf.spec.dtype is not None:
        return np.dtype(leaf.spec.dtype)
    return leaf.dtype if leaf.dtype is not None else np.dtype(np.float64)


def _checked(
    result: Mapping[str, Any],
    path: str,
    shape: tuple[int, ...] | None,
    dtype: np.dtype | None,
    endpoint: str,
) -> np.ndarray:
    """Take one entry of an endpoint's result, checking it is there and fits."""
    if path not in result:
        raise RuntimeError(
            f"the Tesseract's {endpoint} endpoint returned no value for {path!r} "
            f"(it returned {sorted(result)}); its gradient code must return every "
            "requested path"
        )
    arr = as_numpy(result[path])
    if shape is not None and arr.shape != tuple(shape):
        raise RuntimeError(
            f"the Tesseract's {endpoint} endpoint returned shape {arr.shape} for "
            f"{path!r}, expected {tuple(shape)}"
        )
    return arr.astype(dtype, copy=False) if dtype is not None else arr
