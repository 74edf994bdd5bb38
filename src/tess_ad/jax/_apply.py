"""``apply_tesseract``: the one public call of the JAX adapter.

A drop-in for ``tesseract_jax.apply_tesseract`` (same arguments, same output
structure), built on the primitives of ``_primitives``. A call whose inputs
are all concrete (no JAX transformation in sight) does not bind a primitive
at all: it calls ``apply`` directly, returns Python values for non-array
outputs, and records the output shapes so that a later ``jit`` of the same
call needs no ``abstract_eval`` endpoint.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tess_ad._endpoints import Endpoints
from tess_ad._schema import as_numpy
from tess_ad._vmap import check_options

from ._call import Prepared, prepare_call, to_jax
from ._primitives import apply_p
from ._spec import spec_from_flat, store_record

__all__ = ["apply_tesseract"]


def apply_tesseract(
    tesseract_client: Any,
    inputs: Any,
    *,
    vmap_method: Literal[
        "sequential", "auto", "auto_experimental", "expand_dims", "broadcast_all"
    ]
    | None = None,
    materialize_jacobian: bool | None = None,
    vmap_workers: int | None = None,
) -> Any:
    """Call a Tesseract on JAX values, differentiably, under any JAX transformation.

    Works under ``jax.grad``, ``value_and_grad``, ``vjp``, ``jacrev``, ``jvp``,
    ``jacfwd``, ``linearize``, ``hessian``, ``vmap``, ``jit`` and their
    combinations. Reverse mode calls the Tesseract's ``vector_jacobian_product``
    endpoint, forward mode ``jacobian_vector_product``, ``jacfwd``/``jacrev``
    its ``jacobian`` endpoint (one call for the whole Jacobian). Second
    derivatives (``hessian``, ``jacrev(jacrev)``, ``jvp`` of ``grad``) come
    from central differences of the VJP along each tangent, two VJP calls per
    Hessian-vector product: about 1e-10 relative error with an exact float64
    VJP, 1e-4 in float32, and about 5e-7 when the VJP is itself a central
    finite difference (:func:`tess_ad.with_finite_differences`, whose VJPs are
    differenced over a longer step); it needs a VJP that is smooth on the
    scale of that step. A Tesseract without gradient
    endpoints is differentiable once wrapped in
    :func:`tess_ad.with_finite_differences`. Forward-over-forward (``jacfwd``
    of ``jacfwd``) and third derivatives raise ``NotImplementedError``.

    Inputs follow the Tesseract's InputSchema. Array leaves at
    ``Differentiable`` paths take part in differentiation (cast to the
    schema's dtype); everything else is passed through unchanged, and a
    non-zero tangent or cotangent on it raises an error naming its path.

    Outputs follow the OutputSchema. Arrays come back as JAX arrays with the
    schema's dtype (a float64 output becomes float32 when ``jax_enable_x64``
    is off, as JAX does everywhere). Eager calls return Python values for
    non-array outputs. Under a transformation numbers are 0-d arrays, and
    strings are those of the Tesseract run (e.g. under an eager ``grad``) or
    ``None`` under ``jit``, where nothing has run when the outputs are built.
    A float output not marked ``Differentiable`` has an unknown derivative
    (as in tesseract-jax): its tangent is NaN in forward mode, and a non-zero
    cotangent on it (a loss that uses it, under ``grad``/``vjp``) raises a
    ``ValueError`` naming it; ``jax.lax.stop_gradient`` on it, or leaving it
    out of the loss, gives it a symbolic-zero cotangent, which is free.
    Integer and boolean outputs have zero derivative.

    Under ``jit`` (and in ``vmap``/``lax.map`` bodies) the output shapes come
    from, in order: the ``abstract_eval`` endpoint, fixed shapes in the
    OutputSchema, or an earlier eager call with inputs of the same shapes;
    otherwise an error says which to add.

    Args:
        tesseract_client: A ``tesseract_core.Tesseract`` (in-process or
            served) or the proxy returned by
            :func:`tess_ad.with_finite_differences`.
        inputs: The inputs, a nested dict following the InputSchema.
        vmap_method: How ``jax.vmap`` over the inputs calls the Tesseract
            (tesseract-jax's methods, with its semantics, plus ``"auto"``).
            ``None`` or ``"sequential"``: one call per batch element (correct
            for every Tesseract; under ``jit`` one host callback runs them
            all). The others make ONE call for the whole batch, whose array
            inputs carry a leading batch axis the Tesseract must handle
            (every array output must come back with it): ``"expand_dims"``
            gives unbatched array inputs a leading axis of 1,
            ``"broadcast_all"`` broadcasts them to the batch size,
            ``"auto_experimental"`` does as ``"expand_dims"`` when every
            batched input is ``Differentiable`` with a free rank
            (``Array[..., dtype]``) and runs sequentially otherwise,
            ``"auto"`` decides from the schema for every input: one call
            when every batched input (differentiable or not) has a free
            rank, unbatched ones then get a leading 1 only where the rank is
            free, else sequential. In every method a batch of tangents or
            cotangents at one point (``jacfwd``, ``jacrev``) goes to one
            ``jacobian`` call or one call per row as described under
            ``materialize_jacobian``, except that a vectorising method makes
            ``jacfwd`` of a Tesseract without ``jacobian`` endpoint one JVP
            call with the primals broadcast. Under a vectorising method the
            VJP with respect to an unbatched input is asked per element (the
            input broadcast to the batch).
        materialize_jacobian: For a batch of (co)tangents at one point
            (``jacfwd``, ``jacrev``): ``None`` (default) uses the ``jacobian``
            endpoint when there is one and the batch has more than one row
            (the choice ``tess_ad.torch`` makes too), ``True`` always builds
            the whole Jacobian (from VJPs/JVPs if there is no endpoint),
            ``False`` runs one JVP/VJP per (co)tangent.
        vmap_workers: When ``vmap`` runs one call per element: how many to
            run at once (threads; ``None`` or 1: one after the other). Pays
            off on a served Tesseract with several workers
            (``tesseract-runtime serve --num-workers``) or any client that
            serves calls in parallel; results are bit-identical to a serial
            run.

    Returns:
        The outputs, nested as in the OutputSchema.

    Raises:
        tess_ad.SchemaError: If the inputs do not fit the InputSchema.
        tess_ad.NoGradientRouteError: When differentiating a Tesseract with no
            gradient endpoints (wrap it in ``with_finite_differences``).
        tess_ad.jax.OutputShapeError: Under ``jit``, when the output shapes
            cannot be known before the call runs (the message says what to add).
        ValueError: For a non-zero tangent or cotangent on a non-differentiable
            input, or a non-zero cotangent on a non-differentiable float output.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)  # else float64 outputs come back as float32
        >>> from tesseract_core import Tesseract
        >>> from tess_ad.jax import apply_tesseract
        >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> def loss(x):
        ...     return apply_tesseract(t, {"x": x, "a": 1.0, "b": 100.0})["loss"]
        >>> jax.grad(loss)(jnp.array([0.5, 1.5]))
        Array([-251.,  250.], dtype=float64)
        >>> jax.hessian(loss)(jnp.array([0.5, 1.5])).shape
        (2, 2)
    """
    check_options(vmap_method, vmap_workers, "tess_ad.jax.apply_tesseract")
    if materialize_jacobian not in (None, True, False):
        raise ValueError(
            f"materialize_jacobian must be None, True or False, got {materialize_jacobian!r}"
        )
    endpoints = Endpoints(tesseract_client)
    prepared = prepare_call(
        endpoints, inputs, materialize_jacobian, vmap_method, vmap_workers
    )
    call = prepared.call

    if call is None:  # concrete inputs: no transformation, call apply directly
        return _direct(endpoints, prepared)

    outs = apply_p.bind(*prepared.operand_values, call=call)
    spec = call.spec()
    if prepared.deferred and any(leaf.kind == "other" for leaf in spec.leaves):
        # Constant inputs under jit, and outputs (strings...) that no compiled
        # program can return: call now, while tracing, as an eager call would.
        return _direct(endpoints, prepared)
    values = dict(zip((leaf.path for leaf in spec.traced), outs, strict=True))
    for leaf in spec.leaves:
        if leaf.kind == "other":
            values[leaf.path] = call.last_others.get(leaf.path)
    return spec.unflatten(values)


def _direct(endpoints: Endpoints, prepared: Prepared) -> Any:
    """``apply`` on concrete inputs, now; records the output shapes for later ``jit``."""
    assert prepared.concrete_inputs is not None
    flat = endpoints.apply(prepared.concrete_inputs)
    spec = spec_from_flat(flat, "a recorded concrete call")
    store_record(endpoints.tesseract, prepared.key, spec)
    values = {}
    for leaf in spec.leaves:
        value = flat[leaf.path].value
        if leaf.kind == "array":
            value = to_jax(np.asarray(as_numpy(value), dtype=leaf.dtype))
        values[leaf.path] = value
    return flat.unflatten(values)
