"""``apply_tesseract``: nested inputs in, nested outputs out, autograd in between.

The signature and the output structure are those of
``tesseract_torch.apply_tesseract``, so switching is a one-line import change.
What this module adds is the bookkeeping around the Functions of
:mod:`._function`:

* The inputs are flattened with the Tesseract's own schema
  (:meth:`tess_ad.TreeSchema.flatten`), which checks shapes and names the path
  of anything that does not fit, and knows which leaves are ``Differentiable``
  (a ``dict[str, Array]`` field is a set of leaves, not one opaque value).
* Every ``torch.Tensor`` leaf becomes a tensor argument of the Function, so
  that NumPy conversion happens inside ``forward`` only (the condition for
  ``torch.func``). Tensors on non-differentiable leaves are detached first:
  they are constants and can never receive a gradient.
* A differentiable tensor leaf is cast to the dtype the schema declares (the
  dtype the Tesseract computes in), as tesseract-torch and ``tess_ad.jax`` do:
  an ``nn.Module``'s float32 parameters feed a float64 Tesseract. The cast is
  an ordinary autograd operation, so each gradient comes back in its own
  tensor's dtype. Only casts that keep the value's meaning are made: a complex
  tensor for a real field, or a bool tensor, is refused with the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from .._endpoints import Endpoints
from .._schema import Leaf, SchemaError
from .._vmap import check_options
from ._call import TesseractCall
from ._convert import numpy_dtype, torch_dtype
from ._function import Apply, _arrays, _tensors

__all__ = ["apply_tesseract"]


def apply_tesseract(
    tesseract: Any,
    inputs: Mapping[str, Any],
    *,
    vmap_method: Literal[
        "sequential", "auto", "auto_experimental", "expand_dims", "broadcast_all"
    ]
    | None = None,
    vmap_workers: int | None = None,
) -> dict[str, Any]:
    """Call a Tesseract as a differentiable PyTorch operation.

    Input leaves marked ``Differentiable[...]`` in the Tesseract's schema take
    part in autograd when given as ``torch.Tensor``; every other leaf is a
    constant (a tensor given for one is detached and sent as NumPy). Gradients
    come from the Tesseract's ``vector_jacobian_product`` (reverse mode) and
    ``jacobian_vector_product`` (forward mode) endpoints, or from the
    ``jacobian`` endpoint, through the same numeric layer as ``tess_ad.jax``; wrap
    a Tesseract that has none in :func:`tess_ad.with_finite_differences`.

    A differentiable tensor is cast to the dtype the schema declares before the
    call, as ``tesseract_torch`` and :func:`tess_ad.jax.apply_tesseract` do
    (e.g. an ``nn.Module``'s float32 parameters into a ``Float64`` field). The
    cast is recorded by autograd like any ``tensor.to(dtype)``: the Tesseract
    computes in its own dtype, and each gradient comes back in the dtype of
    the tensor it belongs to (a float32 parameter gets a float32 ``.grad``,
    rounded from the float64 one). Bool tensors and complex tensors for a real
    field are refused.

    Works with ``loss.backward()``, ``torch.autograd.grad`` (also with
    ``create_graph=True`` for Hessian-vector products), ``torch.autograd.forward_ad``
    and the ``torch.func`` transforms (``grad``, ``vjp``, ``jvp``, ``vmap``,
    ``jacrev``, ``jacfwd``, ``hessian``). ``vmap`` over inputs calls the
    Tesseract once per batch element, or once for the batch (``vmap_method``);
    ``jacrev``/``jacfwd`` (a batch of
    cotangents or tangents at one point) make one ``jacobian`` call when the
    Tesseract has that endpoint, else one VJP/JVP per row, exactly as
    ``jax.jacrev``/``jax.jacfwd`` through :func:`tess_ad.jax.apply_tesseract`.
    The same holds for PyTorch's batched gradients:
    ``torch.autograd.grad(..., is_grads_batched=True)``,
    ``torch.autograd.functional.jacobian(..., vectorize=True)`` (both
    strategies; ``hessian(..., vectorize=True)`` too) and
    ``gradcheck``/``gradgradcheck(..., check_batched_grad=True)``.

    Under ``torch.compile`` the call is a graph break: it runs eagerly
    between the compiled graphs before and after it (its backward between
    their compiled backwards), with the same numbers as without compiling; new
    input values reuse the compiled code. ``fullgraph=True`` is refused by
    TorchDynamo, as for any graph break.

    Cost and accuracy: one ``apply`` per forward; one VJP call per backward,
    requesting only the outputs whose cotangent is used and not all zero; one
    JVP call per forward-mode tangent. Second derivatives (``create_graph=True``,
    ``hessian``) are central differences of the VJP along the direction, two
    VJP calls each (about 1e-10 relative error with an exact float64 VJP,
    1e-4 in float32, about 5e-7 on a central finite-difference VJP from
    :func:`tess_ad.with_finite_differences`). Forward mode is eager, so
    ``hessian`` = ``jacfwd(jacrev(f))`` also pays the unused tangents of the
    primal output (one ``jacobian`` call, or one JVP per direction);
    ``jacrev(jacrev(f))`` does not. Third-order derivatives and
    forward-over-forward (``jacfwd(jacfwd(f))``) raise ``NotImplementedError``.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (in-process or served), or
            the proxy returned by :func:`tess_ad.with_finite_differences`.
        inputs: Nested dict following the Tesseract's input schema. Give
            ``torch.Tensor`` (e.g. with ``requires_grad=True``) for the
            differentiable fields to differentiate; other values as usual.
        vmap_method: How ``torch.func.vmap`` over the inputs calls the
            Tesseract, with the semantics of
            :func:`tess_ad.jax.apply_tesseract`'s argument of that name (the
            same decision, made in one place for both adapters): ``None`` or
            ``"sequential"``, one call per batch element; ``"expand_dims"``,
            ``"broadcast_all"``, ``"auto_experimental"`` and ``"auto"``, ONE
            call for the whole batch, whose tensor inputs carry a leading batch
            axis the Tesseract must handle (falling back to one call per
            element where the method says so). The same holds for ``vmap`` of
            a gradient (one VJP call for the batch) and for ``jacfwd`` of a
            Tesseract without ``jacobian`` endpoint (one JVP call, the primal
            broadcast). A gradient with respect to an input given a leading
            axis of 1 is asked per element and summed.
        vmap_workers: When ``vmap`` makes one call per element: how many to
            run at once (threads; ``None`` or 1: one after the other), for a
            served Tesseract with several workers; bit-identical to a serial
            run.

    Returns:
        The nested outputs. Differentiable output arrays are ``torch.Tensor``
        (with a ``grad_fn`` when a differentiable input requires grad), in the
        Tesseract's dtype, on the device of the input tensors; every other
        output is returned as the Tesseract returned it (NumPy arrays, Python
        scalars, strings). Under ``torch.func.vmap`` the latter are stacked
        along a leading batch axis.

    Raises:
        tess_ad.SchemaError: If an input does not fit the schema (unknown
            path, wrong shape, or a differentiable tensor that is bool, or
            complex for a real field); the message names the path.
        tess_ad.NoGradientRouteError: At differentiation time, if
            the Tesseract has no gradient endpoint for the requested mode.

    Example:
        >>> import torch
        >>> from tesseract_core import Tesseract
        >>> from tess_ad.torch import apply_tesseract
        >>> rosenbrock = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
        >>> out = apply_tesseract(rosenbrock, {"x": x, "a": 1.0, "b": 100.0})
        >>> out["loss"].backward()
        >>> x.grad
        tensor([-215.6000,  -88.0000], dtype=torch.float64)
    """
    if torch.compiler.is_compiling():
        # TorchDynamo is tracing the caller (``torch.compile``). A Tesseract call
        # is NumPy and HTTP, nothing a graph can hold: run it eagerly, as a
        # graph break. Asked here, not by decorating this function, because
        # ``torch.compiler.disable`` imports TorchDynamo (over a second), which
        # a program that never compiles should not pay for.
        return torch.compiler.disable(_apply_tesseract)(
            tesseract, inputs, vmap_method, vmap_workers
        )
    return _apply_tesseract(tesseract, inputs, vmap_method, vmap_workers)


def _apply_tesseract(
    tesseract: Any,
    inputs: Mapping[str, Any],
    vmap_method: str | None = None,
    vmap_workers: int | None = None,
) -> dict[str, Any]:
    """:func:`apply_tesseract`, eagerly."""
    check_options(vmap_method, vmap_workers, "tess_ad.torch.apply_tesseract")
    endpoints = Endpoints(tesseract)
    flat = endpoints.schema.inputs.flatten(inputs)

    paths: list[str] = []
    differentiable: list[bool] = []
    is_array: list[bool] = []
    tensors: list[torch.Tensor] = []
    rank_free: list[bool] = []
    fixed_rank: list[str | None] = []
    for path, leaf in flat.items():
        value = leaf.value
        if not isinstance(value, torch.Tensor):
            continue
        value = _as_declared(leaf, value) if leaf.differentiable else value.detach()
        paths.append(path)
        differentiable.append(leaf.differentiable)
        is_array.append(leaf.is_array)
        tensors.append(value)
        spec = leaf.spec
        rank_free.append(spec is not None and spec.shape is None)
        fixed_rank.append(
            spec.describe() if spec is not None and spec.shape is not None else None
        )

    device = _device(tensors, differentiable)
    call = TesseractCall(
        endpoints,
        flat,
        paths,
        differentiable,
        is_array,
        device,
        rank_free,
        fixed_rank,
        vmap_method,
        vmap_workers,
    )
    if tensors:
        outputs = Apply.apply(call, *tensors)
    else:
        out_flat = call.record(endpoints.apply(flat))
        n_out = len(call.out_paths)
        outputs = _tensors(
            [out_flat[p].value for p in call.out_paths],
            [device] * n_out,
            [None] * n_out,
            _arrays(flat),
        )
    return call.output_tree(outputs)


def _as_declared(leaf: Leaf, tensor: torch.Tensor) -> torch.Tensor:
    """A differentiable tensor in the dtype the schema declares (a tracked cast).

    Floating-point and integer tensors are cast to a floating-point field, and
    real or complex ones to a complex field; a complex tensor for a real field
    has already been refused by the schema's flatten (a cast would drop its
    imaginary part), and a bool tensor is refused here.
    """
    expected = leaf.declared_dtype
    if tensor.dtype == torch.bool:
        raise SchemaError(
            f"inputs path {leaf.path!r} is Differentiable but got a torch.bool "
            "tensor; pass a floating-point tensor (e.g. `value.double()`)."
        )
    if expected is None:  # no declared dtype (e.g. a number field): kept as given
        if not (tensor.is_floating_point() or tensor.is_complex()):
            raise SchemaError(
                f"inputs path {leaf.path!r} is Differentiable but got a "
                f"{tensor.dtype} tensor; pass a floating-point tensor."
            )
        return tensor
    if numpy_dtype(tensor.dtype) == expected:
        return tensor
    return tensor.to(torch_dtype(expected))


def _device(tensors: list[torch.Tensor], differentiable: list[bool]) -> torch.device:
    """Where results go: the device of the first differentiable tensor, else any."""
    for tensor, diff in zip(tensors, differentiable, strict=True):
        if diff:
            return tensor.device
    return tensors[0].device if tensors else torch.device("cpu")
