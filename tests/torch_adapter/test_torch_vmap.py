"""``torch.func.vmap`` through a Tesseract: the vmap methods, their call counts and numbers.

The PyTorch twin of ``tests/jax_adapter/test_jax_vmap.py``, on the same
Tesseracts: ``tests/tesseracts/batched_rosenbrock`` accepts any leading batch
axes, so the vectorising methods make ONE call for a whole batch;
``examples/rosenbrock`` fixes its input's rank, so it is mapped one call per
element. Every result is compared with the same function written in torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import VMAP_METHODS, Spy, one_call_or_one_per_element

from tess_ad.torch import apply_tesseract

XS = torch.tensor(
    [[-1.2, 1.0], [0.5, 1.5], [1.0, 2.0], [0.1, -0.3]], dtype=torch.float64
)
Y = torch.tensor([0.3, 0.7], dtype=torch.float64)
SHIFTS = torch.arange(8.0, dtype=torch.float64).reshape(4, 2)


def terms(x, y, shift=0.0):
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2 + shift


def tesseract_terms(client, method, **kwargs):
    def f(x, y, shift=0.0):
        inputs = {"x": x, "y": y, "shift": shift}
        return apply_tesseract(client, inputs, vmap_method=method, **kwargs)["result"]

    return f


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_vmap_apply(tesseract_factory, method):
    client = tesseract_factory("batched_rosenbrock")
    f = torch.func.vmap(tesseract_terms(client, method), in_dims=(0, None))
    with Spy(client) as spy:
        out = f(XS, Y)
    torch.testing.assert_close(out, terms(XS, Y), rtol=1e-14, atol=0)
    applies = one_call_or_one_per_element(method, 1, len(XS))
    assert spy.made() == {"apply": applies}


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_vmap_of_grad_is_per_element_for_batched_and_shared_inputs(
    tesseract_factory, method
):
    """Per-element gradients, also with respect to ``y``, which is not batched."""
    client = tesseract_factory("batched_rosenbrock")

    def loss(f):
        return lambda x, y: f(x, y).sum()

    grad = torch.func.vmap(
        torch.func.grad(loss(tesseract_terms(client, method)), argnums=(0, 1)),
        in_dims=(0, None),
    )
    with Spy(client) as spy:
        gx, gy = grad(XS, Y)
    rx, ry = torch.func.vmap(
        torch.func.grad(loss(terms), argnums=(0, 1)), in_dims=(0, None)
    )(XS, Y)
    torch.testing.assert_close(gx, rx, rtol=1e-13, atol=0)
    torch.testing.assert_close(gy, ry, rtol=1e-13, atol=0)
    assert gy.shape == (len(XS), *Y.shape)
    per_call = one_call_or_one_per_element(method, 1, len(XS))
    assert spy.made() == {"apply": per_call, "vector_jacobian_product": per_call}


@pytest.mark.parametrize("method", VMAP_METHODS)
@pytest.mark.parametrize("how", ["backward", "torch.func.grad"])
def test_grad_of_a_vmapped_sum_sums_the_shared_input(tesseract_factory, method, how):
    """The shared ``y`` gets the sum over the batch (under ``expand_dims`` it
    was sent once with a leading 1: its gradient is asked per element and summed)."""
    client = tesseract_factory("batched_rosenbrock")

    def total(f):
        return lambda x, y: torch.func.vmap(f, in_dims=(0, None))(x, y).sum()

    with Spy(client) as spy:
        if how == "backward":
            x, y = XS.clone().requires_grad_(), Y.clone().requires_grad_()
            total(tesseract_terms(client, method))(x, y).backward()
            gx, gy = x.grad, y.grad
        else:
            gx, gy = torch.func.grad(
                total(tesseract_terms(client, method)), argnums=(0, 1)
            )(XS, Y)
    rx, ry = torch.func.grad(total(terms), argnums=(0, 1))(XS, Y)
    torch.testing.assert_close(gx, rx, rtol=1e-13, atol=0)
    torch.testing.assert_close(gy, ry, rtol=1e-13, atol=0)
    per_call = one_call_or_one_per_element(method, 1, len(XS))
    assert spy.made() == {"apply": per_call, "vector_jacobian_product": per_call}


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_jvp_of_vmap_is_one_jvp_call(tesseract_factory, method):
    client = tesseract_factory("batched_rosenbrock")
    f = torch.func.vmap(tesseract_terms(client, method), in_dims=(0, None))
    tx = torch.ones_like(XS)
    ty = torch.full_like(Y, 0.5)
    with Spy(client) as spy:
        out, tangent = torch.func.jvp(f, (XS, Y), (tx, ty))
    ref_out, ref_tangent = torch.func.jvp(
        torch.func.vmap(terms, in_dims=(0, None)), (XS, Y), (tx, ty)
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-14, atol=0)
    torch.testing.assert_close(tangent, ref_tangent, rtol=1e-13, atol=0)
    per_call = one_call_or_one_per_element(method, 1, len(XS))
    assert spy.made() == {"apply": per_call, "jacobian_vector_product": per_call}


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_jacfwd_broadcasts_the_primal_into_one_jvp(tesseract_factory, method):
    """No jacobian endpoint: a vectorising method makes one JVP call for all columns."""
    client = tesseract_factory("batched_rosenbrock")
    x = XS[0]
    with Spy(client) as spy:
        jac = torch.func.jacfwd(lambda x: tesseract_terms(client, method)(x, Y))(x)
    torch.testing.assert_close(
        jac, torch.func.jacfwd(lambda x: terms(x, Y))(x), rtol=1e-13, atol=0
    )
    jvps = one_call_or_one_per_element(method, 1, x.numel())
    assert spy.made() == {"apply": 1, "jacobian_vector_product": jvps}


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_jacrev_is_one_vjp_per_row_in_every_method(tesseract_factory, method):
    """Batched cotangents at one point: no VJP endpoint takes a batch of them."""
    client = tesseract_factory("batched_rosenbrock")
    x = XS[0]
    with Spy(client) as spy:
        jac = torch.func.jacrev(lambda x: tesseract_terms(client, method)(x, Y))(x)
    torch.testing.assert_close(
        jac, torch.func.jacrev(lambda x: terms(x, Y))(x), rtol=1e-13, atol=0
    )
    assert spy.made() == {"apply": 1, "vector_jacobian_product": x.numel()}


@pytest.mark.parametrize(
    ("method", "applies"),
    [("auto", 1), ("auto_experimental", len(SHIFTS)), ("expand_dims", 1)],
)
def test_a_batched_non_differentiable_input(local_tesseract, method, applies):
    """``shift`` is not Differentiable: "auto" reads its free rank from the schema,
    "auto_experimental" (tesseract-jax's rule) looks at differentiable inputs only."""
    client = local_tesseract("batched_rosenbrock")
    f = torch.func.vmap(tesseract_terms(client, method), in_dims=(None, None, 0))
    with Spy(client) as spy:
        out = f(XS[0], Y, SHIFTS)
    torch.testing.assert_close(out, terms(XS[0], Y, SHIFTS), rtol=1e-14, atol=0)
    assert spy.made() == {"apply": applies}


def test_nested_vmap_is_one_call(local_tesseract):
    client = local_tesseract("batched_rosenbrock")
    xs = torch.stack([XS, XS + 0.5])  # (2, 4, 2)
    f = torch.func.vmap(
        torch.func.vmap(tesseract_terms(client, "expand_dims"), in_dims=(0, None)),
        in_dims=(0, None),
    )
    with Spy(client) as spy:
        out = f(xs, Y)
    torch.testing.assert_close(out, terms(xs, Y), rtol=1e-14, atol=0)
    assert spy.made() == {"apply": 1}


def test_a_fixed_rank_input_is_refused_before_any_call(local_tesseract):
    """``examples/rosenbrock`` types ``x`` as a 1-d array: no batch axis fits."""
    client = local_tesseract("rosenbrock")

    def loss(x):
        inputs = {"x": x, "a": 1.0, "b": 100.0}
        return apply_tesseract(client, inputs, vmap_method="expand_dims")["loss"]

    with Spy(client) as spy, pytest.raises(ValueError, match=r"'x'.*sequential"):
        torch.func.vmap(loss)(XS)
    assert spy.made() == {}


def test_auto_maps_a_fixed_rank_input_one_call_per_element(local_tesseract):
    client = local_tesseract("rosenbrock")

    def loss(x):
        inputs = {"x": x, "a": 1.0, "b": 100.0}
        return apply_tesseract(client, inputs, vmap_method="auto")["loss"]

    with Spy(client) as spy:
        out = torch.func.vmap(loss)(XS)
    ref = torch.stack([(1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2 for x in XS])
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=0)
    assert spy.made() == {"apply": len(XS)}


def test_a_tesseract_that_drops_the_batch_axis_is_named(local_tesseract):
    """A vectorised call whose outputs lack the batch axis: a clear error, not a wrong shape.

    A batch of two scalar ``y`` against an unbatched ``x`` of shape (2,): with
    ``expand_dims`` the Tesseract gets x (1, 2) and y (2,), which NumPy
    broadcasts to (1, 2) instead of the (2, 2) the batch needs.
    """
    client = local_tesseract("batched_rosenbrock")
    f = torch.func.vmap(lambda y: tesseract_terms(client, "expand_dims")(XS[0], y))
    with pytest.raises(
        RuntimeError, match=r"leading batch axis of length 2: output 'result'"
    ):
        f(torch.tensor([0.1, 0.2], dtype=torch.float64))


def test_vmap_workers_run_the_elements_concurrently_with_identical_results(
    served_tesseract,
):
    """B calls either way; the results do not depend on how many run at once."""
    client = served_tesseract("rosenbrock", num_workers=2)

    def grads(workers):
        def loss(x):
            inputs = {"x": x, "a": 1.0, "b": 100.0}
            return apply_tesseract(client, inputs, vmap_workers=workers)["loss"]

        return torch.func.vmap(torch.func.grad_and_value(loss))

    xs = torch.stack([XS[:, 0], XS[:, 1], XS[:, 0] + 1.0, XS[:, 1] - 1.0])  # (4, 4)
    serial = grads(None)(xs)
    with Spy(client) as spy:
        concurrent = grads(4)(xs)
    for a, b in zip(serial, concurrent, strict=True):
        assert torch.equal(a, b)
    assert spy.made() == {"apply": len(xs), "vector_jacobian_product": len(xs)}


def test_vmap_workers_in_backward_through_a_vmapped_forward(local_tesseract):
    """``.backward()`` of a sequential vmap: the per-element VJPs also run at once."""
    client = local_tesseract("batched_rosenbrock")
    results = []
    for workers in (None, 3):
        x = XS.clone().requires_grad_()
        f = torch.func.vmap(
            tesseract_terms(client, "sequential", vmap_workers=workers),
            in_dims=(0, None),
        )
        with Spy(client) as spy:
            f(x, Y).sum().backward()
        assert spy.made() == {"apply": len(XS), "vector_jacobian_product": len(XS)}
        results.append(x.grad)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "4"])
def test_vmap_workers_must_be_a_positive_int(local_tesseract, workers):
    client = local_tesseract("rosenbrock")
    with pytest.raises(ValueError, match="vmap_workers"):
        apply_tesseract(
            client, {"x": XS[0], "a": 1.0, "b": 100.0}, vmap_workers=workers
        )


def test_unknown_vmap_method_is_refused(local_tesseract):
    client = local_tesseract("rosenbrock")
    with pytest.raises(ValueError, match="vmap_method"):
        apply_tesseract(client, {"x": XS[0], "a": 1.0, "b": 100.0}, vmap_method="magic")


@pytest.mark.parametrize("method", ["sequential", "expand_dims"])
def test_hessian_under_vmap_matches_torch(local_tesseract, method):
    """Second order through a batched call: per-element Hessians."""
    client = local_tesseract("batched_rosenbrock")

    def loss(f):
        return lambda x: f(x, Y).sum()

    hess = torch.func.vmap(torch.func.hessian(loss(tesseract_terms(client, method))))(
        XS
    )
    ref = torch.func.vmap(torch.func.hessian(loss(terms)))(XS)
    np.testing.assert_allclose(hess, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_the_same_calls_and_numbers_as_jax(local_tesseract, method):
    """``vmap(grad)`` in both adapters: bit-identical gradients, the same endpoint calls."""
    jax = pytest.importorskip("jax")
    from tess_ad.jax import apply_tesseract as jax_apply

    client = local_tesseract("batched_rosenbrock")

    def torch_loss(x, y):
        return apply_tesseract(client, {"x": x, "y": y}, vmap_method=method)[
            "result"
        ].sum()

    def jax_loss(x, y):
        return jax_apply(client, {"x": x, "y": y}, vmap_method=method)["result"].sum()

    with Spy(client) as torch_spy:
        t = torch.func.vmap(
            torch.func.grad(torch_loss, argnums=(0, 1)), in_dims=(0, None)
        )(XS, Y)
    with Spy(client) as jax_spy:
        j = jax.vmap(jax.grad(jax_loss, argnums=(0, 1)), in_axes=(0, None))(
            XS.numpy(), Y.numpy()
        )
    for a, b in zip(t, j, strict=True):
        np.testing.assert_array_equal(a.numpy(), np.asarray(b))
    assert torch_spy.made() == jax_spy.made()
