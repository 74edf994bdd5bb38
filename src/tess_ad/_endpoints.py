"""Every derivative number tess_ad gives, made in one place.

Both adapters (``tess_ad.jax`` and ``tess_ad.torch``) translate framework
values to flat NumPy trees, call one method of :class:`Endpoints`, and
translate back; they never contract a Jacobian or pick an endpoint
themselves. That is why the same Tesseract gives the same gradients, and
makes the same endpoint calls, in JAX and in PyTorch, to the last bit.

Routes, in order of preference:

* reverse mode (:meth:`Endpoints.vjp`): ``vector_jacobian_product``, else the
  ``jacobian`` endpoint contracted with the cotangent;
* forward mode (:meth:`Endpoints.jvp`): ``jacobian_vector_product``, else the
  ``jacobian`` endpoint contracted with the tangent;
* a batch of cotangents or tangents at one point (:meth:`Endpoints.vjp_many`,
  :meth:`Endpoints.jvp_many`: ``jacrev``, ``jacfwd``, ``vmap`` of a VJP
  function): one ``jacobian`` call contracted once when the Tesseract has
  that endpoint and there is more than one row, else one VJP or JVP call per
  row;
* whole Jacobians (:meth:`Endpoints.jacobian`): the ``jacobian`` endpoint, else
  one VJP per output element or one JVP per input element, whichever is fewer;
* second order (:meth:`Endpoints.vjp_jvp`): the derivative of the VJP along a
  tangent direction, by a central difference of two VJP calls.

Only outputs whose cotangent is not all zero are requested from a VJP
endpoint, and only inputs whose tangent is not all zero move in a JVP; a
product whose vectors are all zero costs no call at all. Many hand-written
Tesseracts answer such a partial request with a placeholder (``0.0`` for an
array it was not asked to connect), which tesseract-core's validation
refuses. So when a partial request fails, it is sent once more complete
(every differentiable output of the call with zero cotangents, or every
differentiable input with zero tangents, as the references always ask); if
that succeeds, every later request of that endpoint to the same client is
sent complete (learnt once per client, logged at INFO on the ``tess_ad``
logger). Tesseracts that answer partial requests never pay for this.

Inputs come as a :class:`~tess_ad.FlatTree` (flattened once by the adapter;
nested inputs are accepted too and flattened here), and each endpoint call
rebuilds the nested request once. ``apply`` returns the flattened outputs, so
callers read leaves without walking the tree again.

A Tesseract with none of these raises :class:`NoGradientRouteError`, whose
message says to wrap it in :func:`tess_ad.with_finite_differences`: finite
differences are never switched on silently, since they cost ``O(n)`` apply
calls and are less accurate.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._client import JAC, JVP, VJP, endpoint_label, remote_target, transient_errors
from ._errors import TesseractConnectionError
from ._fd import directional_step
from ._schema import FlatTree, SchemaError, as_numpy, tesseract_schema

__all__ = ["Endpoints", "NoGradientRouteError"]

Arrays = dict[str, np.ndarray]

log = logging.getLogger("tess_ad")

# Failures a complete request cannot mend: the connection, not the request.
_NOT_THE_REQUEST: tuple[type[BaseException], ...] = (
    *transient_errors(),
    TesseractConnectionError,
)

# client -> the endpoints (VJP, JVP) it must be sent complete requests for;
# learnt from a failed partial request (see Endpoints._request).
_COMPLETE_LOCK = threading.Lock()
_COMPLETE: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


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
    """The derivative routes of one Tesseract client.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` or a
            :func:`tess_ad.with_finite_differences` proxy.

    Attributes:
        tesseract: The client.
        schema: Its parsed schema (:func:`tess_ad.tesseract_schema`).
        accuracy: How precise its derivative endpoints are, as the exponent
            ``a`` of a relative error ``eps ** a`` (1 for exact endpoints;
            less for a finite-difference proxy, whose VJPs
            :meth:`vjp_jvp` then differences over a longer step).

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
        self.accuracy = float(getattr(tesseract, "tess_ad_derivative_accuracy", 1.0))
        try:
            with _COMPLETE_LOCK:
                self._complete = _COMPLETE.setdefault(tesseract, set())
        except TypeError:  # not weak-referenceable: learnt for this object only
            self._complete = set()

    @property
    def has_reverse(self) -> bool:
        """Whether VJPs can be computed."""
        return self.has_vjp or self.has_jacobian

    @property
    def has_forward(self) -> bool:
        """Whether JVPs can be computed."""
        return self.has_jvp or self.has_jacobian

    # -- inputs and outputs ------------------------------------------------------

    def flat_inputs(self, inputs: FlatTree | Mapping[str, Any]) -> FlatTree:
        """``inputs`` as a flat tree (flattened here, unchecked, if nested)."""
        if isinstance(inputs, FlatTree):
            return inputs
        return self.schema.inputs.flatten(dict(inputs), check=False)

    def apply(self, inputs: FlatTree | Mapping[str, Any]) -> FlatTree:
        """Call ``apply``; the outputs flattened (once) with the OutputSchema.

        Raises:
            SchemaError: If the outputs do not fit the Tesseract's OutputSchema.
        """
        outputs = self.tesseract.apply(inputs=self.flat_inputs(inputs).tree)
        try:
            return self.schema.outputs.flatten(outputs, check=False)
        except SchemaError as exc:
            raise SchemaError(
                f"the Tesseract's apply returned outputs that do not fit its OutputSchema: {exc}"
            ) from exc

    def output_dtype(self, path: str) -> np.dtype:
        """The declared dtype of a differentiable output (float64 if none is declared)."""
        outputs = self.schema.outputs
        pattern = outputs.differentiable_pattern(path)
        spec = outputs.differentiable_arrays.get(pattern) if pattern else None
        return np.dtype(spec.dtype) if spec is not None and spec.dtype else _F64

    # -- first order ---------------------------------------------------------------

    def vjp(
        self,
        inputs: FlatTree | Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        *,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> Arrays:
        """Vector-Jacobian product: ``{in_path: sum_out ct[out] . J[out, in]}``.

        Args:
            inputs: The point.
            vjp_inputs: Input paths to differentiate with respect to.
            vjp_outputs: Output paths the cotangent applies to.
            cotangent_vector: ``{out_path: array}`` for every path of ``vjp_outputs``.
            output_shapes: The shape of every differentiable output of the
                call, when known: a Tesseract that cannot answer a partial
                request is then asked for all of them, with zero cotangents
                (see the module docstring).

        Returns:
            One array per path of ``vjp_inputs``, in that input's shape and
            compute dtype.

        Raises:
            NoGradientRouteError: If neither a VJP nor a jacobian endpoint exists.
        """
        flat = self._checked_inputs(inputs, vjp_inputs)
        cts = _nonzero(vjp_outputs, cotangent_vector)
        if not vjp_inputs:
            return {}
        if not cts:
            return _zeros(flat, vjp_inputs)
        if self.has_vjp:
            complete = (
                None
                if output_shapes is None
                else _completed(
                    cts,
                    {o: (s, self.output_dtype(o)) for o, s in output_shapes.items()},
                )
            )

            def call(cts: Arrays) -> Any:
                return self.tesseract.vector_jacobian_product(
                    inputs=flat.tree,
                    vjp_inputs=list(vjp_inputs),
                    vjp_outputs=list(cts),
                    cotangent_vector=cts,
                )

            result = self._request(VJP, call, cts, complete)
            return self._fit_inputs(result, flat, vjp_inputs, VJP)
        if self.has_jacobian:
            batched = {o: ct[np.newaxis] for o, ct in cts.items()}
            rows = self._vjp_via_jacobian(flat, vjp_inputs, batched, 1)
            return {p: row[0] for p, row in rows.items()}
        raise _no_route(
            "a vector-Jacobian product (reverse mode)",
            f"{endpoint_label(VJP)} or {JAC}",
        )

    def jvp(
        self,
        inputs: FlatTree | Mapping[str, Any],
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangent_vector: Mapping[str, Any],
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> Arrays:
        """Jacobian-vector product: ``{out_path: sum_in J[out, in] . t[in]}``.

        Args:
            inputs: The point.
            jvp_inputs: Input paths the tangent moves.
            jvp_outputs: Output paths to differentiate.
            tangent_vector: ``{in_path: array}`` for every path of ``jvp_inputs``.
            output_shapes: The outputs' shapes, when known: an all-zero tangent
                then gives zeros without calling the Tesseract.

        Returns:
            One array per path of ``jvp_outputs``, in its declared dtype.

        Raises:
            NoGradientRouteError: If neither a JVP nor a jacobian endpoint exists.
        """
        flat = self._checked_inputs(inputs, jvp_inputs)
        if not jvp_outputs:
            return {}
        tangents = _nonzero(jvp_inputs, tangent_vector)
        if not tangents and output_shapes is not None:
            return {
                o: np.zeros(output_shapes[o], self.output_dtype(o)) for o in jvp_outputs
            }
        if not tangents:  # shapes unknown: ask for the product of zeros
            tangents = {p: as_numpy(tangent_vector[p]) for p in jvp_inputs}
        if self.has_jvp:
            every = [
                p for p, leaf in flat.items() if leaf.differentiable and leaf.is_array
            ]
            complete = _completed(
                tangents, {p: (_shape(flat, p), _dtype(flat, p)) for p in every}
            )

            def call(tangents: Arrays) -> Any:
                return self.tesseract.jacobian_vector_product(
                    inputs=flat.tree,
                    jvp_inputs=list(tangents),
                    jvp_outputs=list(jvp_outputs),
                    tangent_vector=tangents,
                )

            result = self._request(JVP, call, tangents, complete)
            return {
                o: _entry(result, o, None, self.output_dtype(o), JVP)
                for o in jvp_outputs
            }
        if self.has_jacobian:
            batched = {p: t[np.newaxis] for p, t in tangents.items()}
            # with the outputs' shapes, a block of the wrong shape is named as such
            cols = self._jvp_via_jacobian(flat, jvp_outputs, batched, 1, output_shapes)
            return {o: col[0] for o, col in cols.items()}
        raise _no_route(
            "a Jacobian-vector product (forward mode)",
            f"{endpoint_label(JVP)} or {JAC}",
        )

    def vjp_many(
        self,
        inputs: FlatTree | Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangents: Mapping[str, Any],
        *,
        use_jacobian: bool | None = None,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> Arrays:
        """A batch of VJPs at one point (``jacrev``, ``vmap`` of a VJP function).

        Args:
            inputs: The point.
            vjp_inputs: Input paths to differentiate with respect to.
            vjp_outputs: Output paths the cotangents apply to.
            cotangents: ``{out_path: array(B, *out_shape)}``: row ``b`` of every
                array is one cotangent.
            use_jacobian: ``None`` (default): one ``jacobian`` call contracted
                with all rows when the Tesseract has that endpoint and there
                is more than one row, else one VJP call per row. ``True``:
                always the whole Jacobian (built from VJP or JVP calls if
                there is no endpoint). ``False``: one VJP call per row
                (unless there is no VJP endpoint, only a ``jacobian``).
            output_shapes: As for :meth:`vjp`.

        Returns:
            ``{in_path: array(B, *in_shape)}``.
        """
        flat = self._checked_inputs(inputs, vjp_inputs)
        cts = {o: as_numpy(cotangents[o]) for o in vjp_outputs}
        batch = _batch_size(cts)
        if self.uses_jacobian(use_jacobian, "reverse", batch) and vjp_inputs and cts:
            return self._vjp_via_jacobian(flat, vjp_inputs, cts, batch)
        rows = [
            self.vjp(
                flat,
                vjp_inputs,
                vjp_outputs,
                {o: c[b] for o, c in cts.items()},
                output_shapes=output_shapes,
            )
            for b in range(batch)
        ]
        return {
            p: _stack([row[p] for row in rows], _shape(flat, p), _dtype(flat, p))
            for p in vjp_inputs
        }

    def jvp_many(
        self,
        inputs: FlatTree | Mapping[str, Any],
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangents: Mapping[str, Any],
        output_shapes: Mapping[str, tuple[int, ...]],
        *,
        use_jacobian: bool | None = None,
    ) -> Arrays:
        """A batch of JVPs at one point (``jacfwd``, ``vmap`` of a JVP function).

        Args:
            inputs: The point.
            jvp_inputs: Input paths the tangents move.
            jvp_outputs: Output paths to differentiate.
            tangents: ``{in_path: array(B, *in_shape)}``: row ``b`` of every
                array is one tangent.
            output_shapes: The shape of each output.
            use_jacobian: As for :meth:`vjp_many`.

        Returns:
            ``{out_path: array(B, *out_shape)}``.
        """
        flat = self._checked_inputs(inputs, jvp_inputs)
        ts = {p: as_numpy(tangents[p]) for p in jvp_inputs}
        batch = _batch_size(ts)
        if self.uses_jacobian(use_jacobian, "forward", batch) and jvp_outputs and ts:
            return self._jvp_via_jacobian(flat, jvp_outputs, ts, batch, output_shapes)
        rows = [
            self.jvp(
                flat,
                jvp_inputs,
                jvp_outputs,
                {p: t[b] for p, t in ts.items()},
                output_shapes,
            )
            for b in range(batch)
        ]
        return {
            o: _stack([row[o] for row in rows], output_shapes[o], self.output_dtype(o))
            for o in jvp_outputs
        }

    def jacobian(
        self,
        inputs: FlatTree | Mapping[str, Any],
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
        route: str = "auto",
    ) -> dict[str, Arrays]:
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
        flat = self._checked_inputs(inputs, jac_inputs)
        if route == "jacobian" or (route == "auto" and self.has_jacobian):
            if not self.has_jacobian:
                raise _no_route("a Jacobian from the jacobian endpoint", JAC)
            result = self.tesseract.jacobian(
                inputs=flat.tree,
                jac_inputs=list(jac_inputs),
                jac_outputs=list(jac_outputs),
            )
            return {
                o: {
                    p: _entry(result.get(o, {}), p, None, None, JAC) for p in jac_inputs
                }
                for o in jac_outputs
            }
        if route == "vjp" and not self.has_vjp:
            raise _no_route("a Jacobian from VJP rows", endpoint_label(VJP))
        if route == "jvp" and not self.has_jvp:
            raise _no_route("a Jacobian from JVP columns", endpoint_label(JVP))
        if route == "auto" and not (self.has_vjp or self.has_jvp):
            raise _no_route(
                "a Jacobian", f"{JAC}, {endpoint_label(VJP)} or {endpoint_label(JVP)}"
            )
        if output_shapes is None:
            outs = self.apply(flat)
            output_shapes = {o: outs[o].shape or () for o in jac_outputs}
        in_shapes = {p: _shape(flat, p) for p in jac_inputs}
        if route == "auto":
            n_in = sum(math.prod(s) for s in in_shapes.values())
            n_out = sum(math.prod(output_shapes[o]) for o in jac_outputs)
            route = (
                "vjp" if self.has_vjp and (n_out <= n_in or not self.has_jvp) else "jvp"
            )
        if route == "vjp":
            blocks: dict[str, Arrays] = {}
            for o, cts in _basis(jac_outputs, output_shapes):
                rows = self.vjp_many(
                    flat,
                    jac_inputs,
                    jac_outputs,
                    cts,
                    use_jacobian=False,
                    output_shapes={q: output_shapes[q] for q in jac_outputs},
                )
                shape = tuple(output_shapes[o])
                blocks[o] = {
                    p: rows[p].reshape((*shape, *in_shapes[p])) for p in jac_inputs
                }
            return blocks
        blocks = {o: {} for o in jac_outputs}
        for p, ts in _basis(jac_inputs, in_shapes):
            cols = self.jvp_many(
                flat, jac_inputs, jac_outputs, ts, output_shapes, use_jacobian=False
            )
            for o in jac_outputs:
                col = np.moveaxis(cols[o], 0, -1)
                blocks[o][p] = col.reshape((*output_shapes[o], *in_shapes[p]))
        return blocks

    # -- second order --------------------------------------------------------------

    def vjp_jvp(
        self,
        inputs: FlatTree | Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        tangent_vector: Mapping[str, Any],
        *,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> Arrays:
        """Derivative of the VJP along a direction of the inputs (second order).

        Computes ``d/de VJP(x + e t, ct)`` at ``e = 0`` by the central
        difference ``(VJP(x + h t) - VJP(x - h t)) / 2h``: exactly two VJP
        calls, whatever the input size. With the cotangent of a scalar loss
        this is the Hessian-vector product ``H t``.

        The step ``h`` moves the inputs by about ``cbrt(eps) * (1 + |x|)`` in
        total (eps of the least precise perturbed dtype), so the error is
        ``O(h^2)`` truncation plus ``O(eps_vjp / h)`` rounding: about ``1e-10``
        relative for an exact float64 VJP, ``1e-4`` in float32, and about
        ``5e-7`` when the VJP itself is a central finite difference (whose
        :attr:`accuracy`, ``2/3`` from the method table ``_fd.ACCURACY``,
        lengthens the step).

        Args:
            inputs: The inputs (the point ``x``).
            vjp_inputs: Input paths whose VJP is differentiated.
            vjp_outputs: Output paths the cotangent applies to.
            cotangent_vector: The cotangent ``ct``.
            tangent_vector: The direction ``t``: ``{in_path: array}`` over any
                differentiable input paths (missing paths do not move).
            output_shapes: As for :meth:`vjp`.

        Returns:
            ``{in_path: array}`` for every path of ``vjp_inputs``.
        """
        flat = self._checked_inputs(inputs, [*vjp_inputs, *tangent_vector])
        if not _nonzero(vjp_outputs, cotangent_vector):
            return _zeros(flat, vjp_inputs)
        x = {p: as_numpy(flat[p].value, _dtype(flat, p)) for p in tangent_vector}
        t = {p: as_numpy(v, np.float64) for p, v in tangent_vector.items()}
        h = directional_step(x, t, [x[p].dtype for p in x], accuracy=self.accuracy)
        if h == 0.0:
            return _zeros(flat, vjp_inputs)
        plus = flat.replace({p: (x[p] + h * t[p]).astype(x[p].dtype) for p in x})
        minus = flat.replace({p: (x[p] - h * t[p]).astype(x[p].dtype) for p in x})
        g_plus = self.vjp(
            plus, vjp_inputs, vjp_outputs, cotangent_vector, output_shapes=output_shapes
        )
        g_minus = self.vjp(
            minus,
            vjp_inputs,
            vjp_outputs,
            cotangent_vector,
            output_shapes=output_shapes,
        )
        return {
            p: ((g_plus[p].astype(np.float64) - g_minus[p]) / (2.0 * h)).astype(
                _dtype(flat, p)
            )
            for p in vjp_inputs
        }

    # -- helpers -------------------------------------------------------------------

    def _request(
        self,
        endpoint: str,
        call: Callable[[Arrays], Any],
        vectors: Arrays,
        complete: Arrays | None,
    ) -> Any:
        """Call a VJP/JVP endpoint with ``vectors``, or ``complete`` if it needs that.

        ``complete`` (``None`` when ``vectors`` already is) covers every
        differentiable output (VJP) or input (JVP) of the call, zero where
        ``vectors`` has nothing. It is sent straight away to a client known to
        need it, or once after a partial request failed for any reason but
        the connection; its success marks the client.
        """
        if complete is None:
            return call(vectors)
        if endpoint in self._complete:
            return call(complete)
        try:
            return call(vectors)
        except _NOT_THE_REQUEST:
            raise
        except Exception as first:
            try:
                result = call(complete)
            except Exception as second:
                raise second from first
            with _COMPLETE_LOCK:
                learnt = endpoint not in self._complete
                self._complete.add(endpoint)
            if learnt:
                target = remote_target(self.tesseract)
                log.info(
                    "tess_ad: the Tesseract %s answered a partial %s request with an "
                    "error, and a complete one (every differentiable %s, zero %s) "
                    "correctly; this client is sent complete requests from now on "
                    "(one failed call, once per client). The partial request failed "
                    "with %s: %s",
                    target[1] if target else type(self.tesseract).__name__,
                    endpoint_label(endpoint),
                    "output" if endpoint == VJP else "input",
                    "cotangents" if endpoint == VJP else "tangents",
                    type(first).__name__,
                    _gist(first),
                )
            return result

    def uses_jacobian(self, use_jacobian: bool | None, mode: str, batch: int) -> bool:
        """Whether a batch of ``batch`` rows is served by one Jacobian.

        By default: when the Tesseract has a ``jacobian`` endpoint and there
        is more than one row (one row is one VJP/JVP call, never dearer than a
        whole Jacobian), or when it has no per-row endpoint for ``mode``.
        """
        own = self.has_vjp if mode == "reverse" else self.has_jvp
        if use_jacobian is None:
            return self.has_jacobian and (batch > 1 or not own)
        return bool(use_jacobian) or not own

    def _vjp_via_jacobian(
        self, flat: FlatTree, vjp_inputs: Sequence[str], cts: Arrays, batch: int
    ) -> Arrays:
        """``ct J`` for ``batch`` cotangent rows from one Jacobian, contracted once."""
        outs = list(cts)
        blocks = self.jacobian_blocks(
            flat, vjp_inputs, outs, {o: cts[o].shape[1:] for o in outs}
        )
        return self.vjp_from_jacobian(
            blocks,
            cts,
            {p: _shape(flat, p) for p in vjp_inputs},
            {p: _dtype(flat, p) for p in vjp_inputs},
        )

    def _jvp_via_jacobian(
        self,
        flat: FlatTree,
        jvp_outputs: Sequence[str],
        ts: Arrays,
        batch: int,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> Arrays:
        """``J t`` for ``batch`` tangent rows from one Jacobian, contracted once."""
        blocks = self.jacobian_blocks(flat, list(ts), jvp_outputs, output_shapes)
        return self.jvp_from_jacobian(blocks, ts)

    # -- a batch of products from one Jacobian, in two steps -------------------------
    #
    # ``vjp_many``/``jvp_many`` call both steps at once. ``tess_ad.jax`` also runs
    # them as two host calls under ``jit``: the Jacobian depends on the point
    # only, so identical requests (a chunked ``vmap`` over the tangents) are one
    # computation XLA can merge, and the contraction stays here.

    def jacobian_blocks(
        self,
        inputs: FlatTree | Mapping[str, Any],
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """The Jacobian blocks ``{out: {in: float64 array(*out_shape, *in_shape)}}``, checked.

        As :meth:`jacobian` (the ``jacobian`` endpoint when there is one),
        with every block's shape checked and its dtype float64, ready for
        :meth:`vjp_from_jacobian` / :meth:`jvp_from_jacobian`.
        """
        flat = self.flat_inputs(inputs)
        ins = list(jac_inputs)
        jac = self.jacobian(flat, ins, jac_outputs, output_shapes)
        blocks: dict[str, dict[str, np.ndarray]] = {}
        for o in jac_outputs:
            if output_shapes is not None:
                out_shape = tuple(output_shapes[o])
            else:  # the block's leading axes, before the first input's shape
                first = np.shape(jac[o][ins[0]])
                out_shape = first[: len(first) - len(_shape(flat, ins[0]))]
            blocks[o] = {
                p: _block(jac[o][p], out_shape, _shape(flat, p), o, p) for p in ins
            }
        return blocks

    def vjp_from_jacobian(
        self,
        blocks: Mapping[str, Mapping[str, np.ndarray]],
        cotangents: Mapping[str, Any],
        in_shapes: Mapping[str, tuple[int, ...]],
        in_dtypes: Mapping[str, np.dtype],
    ) -> Arrays:
        """``ct_b J`` for every cotangent row ``b``: ``{in: array(B, *in_shape)}``.

        Args:
            blocks: From :meth:`jacobian_blocks`, for every output of ``cotangents``.
            cotangents: ``{out: array(B, *out_shape)}``.
            in_shapes: The shape of each input to return.
            in_dtypes: The dtype of each input (the result's dtype).
        """
        cts = {o: as_numpy(c) for o, c in cotangents.items()}
        batch = _batch_size(cts)
        result = {}
        for p, shape in in_shapes.items():
            total = np.zeros((batch, math.prod(shape)))
            for o, ct in cts.items():
                block = blocks[o][p]
                total += ct.reshape(batch, -1) @ block.reshape(-1, total.shape[1])
            result[p] = total.reshape((batch, *shape)).astype(in_dtypes[p])
        return result

    def jvp_from_jacobian(
        self,
        blocks: Mapping[str, Mapping[str, np.ndarray]],
        tangents: Mapping[str, Any],
    ) -> Arrays:
        """``J t_b`` for every tangent row ``b``: ``{out: array(B, *out_shape)}``.

        Args:
            blocks: From :meth:`jacobian_blocks`, for every input of ``tangents``.
            tangents: ``{in: array(B, *in_shape)}``.
        """
        ts = {p: as_numpy(t) for p, t in tangents.items()}
        batch = _batch_size(ts)
        result = {}
        for o, row in blocks.items():
            out_shape: tuple[int, ...] = ()
            total = None
            for p, t in ts.items():
                block = row[p]
                in_ndim = t.ndim - 1
                out_shape = block.shape[: block.ndim - in_ndim]
                if total is None:
                    total = np.zeros((batch, math.prod(out_shape)))
                total += t.reshape(batch, -1) @ block.reshape(total.shape[1], -1).T
            assert total is not None, "a JVP needs at least one tangent"
            result[o] = total.reshape((batch, *out_shape)).astype(self.output_dtype(o))
        return result

    def _checked_inputs(
        self, inputs: FlatTree | Mapping[str, Any], paths: Sequence[str]
    ) -> FlatTree:
        flat = self.flat_inputs(inputs)
        flat.check_paths(list(paths), "differentiated input")
        for p in paths:
            if not flat[p].differentiable:
                raise SchemaError(
                    f"input {p!r} is not marked Differentiable in the Tesseract's "
                    "schema, so no derivative can be taken with respect to it. Mark it "
                    "`Differentiable[...]` in tesseract_api.py, or leave it out."
                )
        return flat

    def _fit_inputs(
        self,
        result: Mapping[str, Any],
        flat: FlatTree,
        paths: Sequence[str],
        endpoint: str,
    ) -> Arrays:
        return {
            p: _entry(result, p, flat[p].shape, _dtype(flat, p), endpoint)
            for p in paths
        }


_F64 = np.dtype(np.float64)


def _gist(exc: BaseException) -> str:
    """The telling line of an endpoint's error (tesseract-core sends a traceback)."""
    lines = [
        line.replace("(see above for full traceback)", "").strip()
        for line in str(exc).splitlines()
    ]
    lines = [line for line in lines if line and not line.startswith("For further")]
    return lines[-1][:300] if lines else ""


def _dtype(flat: FlatTree, path: str) -> np.dtype:
    return flat[path].compute_dtype or _F64


def _shape(flat: FlatTree, path: str) -> tuple[int, ...]:
    shape = flat[path].shape
    # only differentiable inputs get here (_checked_inputs), and those are arrays
    assert shape is not None
    return shape


def _nonzero(paths: Sequence[str], vectors: Mapping[str, Any]) -> Arrays:
    """``{path: array}`` of the vectors that are not all zero, in ``paths`` order."""
    out = {}
    for p in paths:
        arr = as_numpy(vectors[p])
        if arr.any():
            out[p] = arr
    return out


def _completed(
    given: Arrays, every: Mapping[str, tuple[Sequence[int], np.dtype]]
) -> Arrays | None:
    """``given`` with zeros for the paths of ``every`` it lacks (``None``: lacks none).

    The complete request for a Tesseract that cannot answer a partial one.
    """
    if set(every) <= set(given):
        return None
    return {
        p: given[p] if p in given else np.zeros(shape, dtype)
        for p, (shape, dtype) in every.items()
    }


def _zeros(flat: FlatTree, paths: Sequence[str]) -> Arrays:
    return {p: np.zeros(_shape(flat, p), _dtype(flat, p)) for p in paths}


def _batch_size(vectors: Arrays) -> int:
    sizes = {v.shape[0] for v in vectors.values() if v.ndim}
    if len(sizes) != 1:
        raise ValueError(
            f"a batch of vectors needs one leading batch size, got {sorted(sizes)}"
        )
    return sizes.pop()


def _stack(rows: list[np.ndarray], shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    if not rows:
        return np.zeros((0, *shape), dtype)
    return np.stack(rows).astype(dtype, copy=False)


def _basis(paths: Sequence[str], shapes: Mapping[str, Sequence[int]]) -> Any:
    """For each path, the batch of unit vectors over its elements (others zero)."""
    for q in paths:
        size = math.prod(shapes[q])
        vectors = {p: np.zeros((size, *shapes[p])) for p in paths}
        vectors[q] = np.eye(size).reshape(size, *shapes[q])
        yield q, vectors


def _block(
    block: Any, out_shape: Sequence[int], in_shape: Sequence[int], o: str, p: str
) -> np.ndarray:
    arr = np.asarray(as_numpy(block), np.float64)
    expected = (*out_shape, *in_shape)
    if arr.shape != tuple(expected):
        raise RuntimeError(
            f"the Tesseract's jacobian endpoint returned shape {arr.shape} for "
            f"d{o}/d{p}, expected {tuple(expected)} (output shape, then input shape)"
        )
    return arr


def _entry(
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
