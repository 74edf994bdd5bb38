"""``jax.vmap`` through a Tesseract: the vmap methods, their call counts and numbers.

``tests/tesseracts/batched_rosenbrock`` accepts any leading batch axes (every
array is ``Array[..., Float64]``, the endpoints broadcast), so the vectorising
methods make ONE call for a whole batch; ``examples/rosenbrock`` fixes its
input's rank, so it is mapped one call per element. Every result is compared
with the same function written in ``jax.numpy``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import VMAP_METHODS, Spy, one_call_or_one_per_element
from jax_adapter_refs import rosenbrock_ref

from tess_ad.jax import apply_tesseract

XS = jnp.array([[-1.2, 1.0], [0.5, 1.5], [1.0, 2.0], [0.1, -0.3]])
Y = jnp.array([0.3, 0.7])
SHIFTS = jnp.arange(8.0).reshape(4, 2)


def terms(x, y, shift=0.0):
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2 + shift


def tesseract_terms(client, method, **kwargs):
    def f(x, y, shift=0.0):
        inputs = {"x": x, "y": y, "shift": shift}
        return apply_tesseract(client, inputs, vmap_method=method, **kwargs)["result"]

    return f


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("method", VMAP_METHODS)
def test_vmap_apply(tesseract_factory, method, mode):
    client = tesseract_factory("batched_rosenbrock")
    f = jax.vmap(tesseract_terms(client, method), in_axes=(0, None))
    f = jax.jit(f) if mode == "jit" else f
    with Spy(client) as spy:
        out = f(XS, Y)
    np.testing.assert_allclose(
        out, jax.vmap(terms, in_axes=(0, None))(XS, Y), rtol=1e-14
    )
    applies = one_call_or_one_per_element(method, 1, len(XS))
    expected = {"apply": applies}
    if mode == "jit":  # shapes before the call: one abstract_eval per trace
        expected["abstract_eval"] = 1
    assert spy.made() == expected


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("method", VMAP_METHODS)
def test_vmap_of_grad_is_per_element_for_batched_and_shared_inputs(
    tesseract_factory, method, mode
):
    """Per-element gradients, also with respect to ``y``, which is not batched."""
    client = tesseract_factory("batched_rosenbrock")

    def loss(f):
        return lambda x, y: f(x, y).sum()

    grad = jax.vmap(
        jax.grad(loss(tesseract_terms(client, method)), argnums=(0, 1)),
        in_axes=(0, None),
    )
    grad = jax.jit(grad) if mode == "jit" else grad
    with Spy(client) as spy:
        gx, gy = grad(XS, Y)
    rx, ry = jax.vmap(jax.grad(loss(terms), argnums=(0, 1)), in_axes=(0, None))(XS, Y)
    np.testing.assert_allclose(gx, rx, rtol=1e-13)
    np.testing.assert_allclose(gy, ry, rtol=1e-13)
    assert gy.shape == (len(XS), *Y.shape)
    per_call = one_call_or_one_per_element(method, 1, len(XS))
    expected = {"vector_jacobian_product": per_call}
    if mode == "eager":
        expected["apply"] = per_call
    else:  # jit drops the unused forward apply
        expected["abstract_eval"] = 1
    assert spy.made() == expected


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_grad_of_a_vmapped_sum_sums_the_shared_input(tesseract_factory, method):
    """The transpose of a batched call: the shared ``y`` gets the sum over the batch."""
    client = tesseract_factory("batched_rosenbrock")

    def total(f):
        return lambda x, y: jax.vmap(f, in_axes=(0, None))(x, y).sum()

    with Spy(client) as spy:
        gx, gy = jax.grad(total(tesseract_terms(client, method)), argnums=(0, 1))(XS, Y)
    rx, ry = jax.grad(total(terms), argnums=(0, 1))(XS, Y)
    np.testing.assert_allclose(gx, rx, rtol=1e-13)
    np.testing.assert_allclose(gy, ry, rtol=1e-13)
    per_call = one_call_or_one_per_element(method, 1, len(XS))
    assert spy.made() == {"apply": per_call, "vector_jacobian_product": per_call}


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_jacfwd_broadcasts_the_primal_into_one_jvp(tesseract_factory, method):
    """No jacobian endpoint: a vectorising method makes one JVP call for all columns."""
    client = tesseract_factory("batched_rosenbrock")
    x = XS[0]
    with Spy(client) as spy:
        jac = jax.jacfwd(lambda x: tesseract_terms(client, method)(x, Y))(x)
    np.testing.assert_allclose(jac, jax.jacfwd(lambda x: terms(x, Y))(x), rtol=1e-13)
    jvps = one_call_or_one_per_element(method, 1, x.size)
    assert spy.made() == {"apply": 1, "jacobian_vector_product": jvps}


@pytest.mark.parametrize("method", VMAP_METHODS)
def test_jacrev_is_one_vjp_per_row_in_every_method(tesseract_factory, method):
    """Batched cotangents at one point: no VJP endpoint takes a batch of them."""
    client = tesseract_factory("batched_rosenbrock")
    x = XS[0]
    with Spy(client) as spy:
        jac = jax.jacrev(lambda x: tesseract_terms(client, method)(x, Y))(x)
    np.testing.assert_allclose(jac, jax.jacrev(lambda x: terms(x, Y))(x), rtol=1e-13)
    assert spy.made() == {"apply": 1, "vector_jacobian_product": x.size}


@pytest.mark.parametrize(
    ("method", "applies"),
    [("auto", 1), ("auto_experimental", len(SHIFTS)), ("expand_dims", 1)],
)
def test_a_batched_non_differentiable_input(local_tesseract, method, applies):
    """``shift`` is not Differentiable: "auto" reads its free rank from the schema,
    "auto_experimental" (tesseract-jax's rule) looks at differentiable inputs only."""
    client = local_tesseract("batched_rosenbrock")
    f = jax.vmap(tesseract_terms(client, method), in_axes=(None, None, 0))
    with Spy(client) as spy:
        out = f(XS[0], Y, SHIFTS)
    np.testing.assert_allclose(
        out, jax.vmap(terms, in_axes=(None, None, 0))(XS[0], Y, SHIFTS), rtol=1e-14
    )
    assert spy.made() == {"apply": applies}


def test_nested_vmap_is_one_call(local_tesseract):
    client = local_tesseract("batched_rosenbrock")
    xs = jnp.stack([XS, XS + 0.5])  # (2, 4, 2)
    f = jax.vmap(
        jax.vmap(tesseract_terms(client, "expand_dims"), in_axes=(0, None)),
        in_axes=(0, None),
    )
    with Spy(client) as spy:
        out = f(xs, Y)
    np.testing.assert_allclose(
        out,
        jax.vmap(jax.vmap(terms, in_axes=(0, None)), in_axes=(0, None))(xs, Y),
        rtol=1e-14,
    )
    assert spy.made() == {"apply": 1}


def test_a_tesseract_that_drops_the_batch_axis_is_named(local_tesseract):
    """A vectorised call whose outputs lack the batch axis: a clear error, not a wrong shape.

    A batch of two scalar ``y`` against an unbatched ``x`` of shape (2,): with
    ``expand_dims`` the Tesseract gets x (1, 2) and y (2,), which NumPy
    broadcasts to (1, 2) instead of the (2, 2) the batch needs.
    """
    client = local_tesseract("batched_rosenbrock")
    f = jax.vmap(lambda y: tesseract_terms(client, "expand_dims")(XS[0], y))
    with pytest.raises(RuntimeError, match="leading batch axis of length 2"):
        f(jnp.array([0.1, 0.2]))


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_vmap_workers_run_the_elements_concurrently_with_identical_results(
    served_tesseract, mode
):
    """B calls either way; the results do not depend on how many run at once."""
    client = served_tesseract("rosenbrock", num_workers=2)

    def grads(workers):
        def loss(x):
            inputs = {"x": x, "a": 1.0, "b": 100.0}
            return apply_tesseract(client, inputs, vmap_workers=workers)["loss"]

        f = jax.vmap(jax.value_and_grad(loss))
        return jax.jit(f) if mode == "jit" else f

    xs = jnp.stack([XS[:, 0], XS[:, 1], XS[:, 0] + 1.0, XS[:, 1] - 1.0])  # (4, 4)
    serial = grads(None)(xs)
    with Spy(client) as spy:
        concurrent = grads(4)(xs)
    for a, b in zip(jax.tree.leaves(serial), jax.tree.leaves(concurrent), strict=True):
        np.testing.assert_array_equal(a, b)
    assert spy.calls["vector_jacobian_product"] == len(xs)


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


def test_hessian_under_vmap_matches_jax(local_tesseract):
    """Second order through a loop call: per-element Hessians."""
    client = local_tesseract("batched_rosenbrock")

    def loss(f):
        return lambda x: f(x, Y).sum()

    hess = jax.vmap(jax.hessian(loss(tesseract_terms(client, "sequential"))))(XS)
    np.testing.assert_allclose(
        hess, jax.vmap(jax.hessian(loss(terms)))(XS), rtol=1e-6, atol=1e-6
    )


# -- what XLA may merge and drop --------------------------------------------


def test_two_identical_calls_in_one_jit_make_one_call(tesseract_factory):
    client = tesseract_factory("rosenbrock")

    def loss(x):
        return apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]

    x = XS[0]
    with Spy(client) as spy:
        out = jax.jit(lambda x: loss(x) + 2.0 * loss(x))(x)
    assert spy.calls["apply"] == 1
    np.testing.assert_allclose(out, 3.0 * loss(x), rtol=1e-14)
    # different static values are different calls: never merged
    with Spy(client) as spy:
        jax.jit(
            lambda x: (
                loss(x)
                + apply_tesseract(client, {"x": x, "a": 2.0, "b": 100.0})["loss"]
            )
        )(x)
    assert spy.calls["apply"] == 2


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
def test_chunks_of_a_jacobian_batch_make_one_jacobian_call(tesseract_factory, mode):
    """``vmap`` over chunks of tangents (or cotangents) at one point, under ``jit``.

    Chunking caps peak memory; each chunk is a batch that one ``jacobian``
    call serves, and the Jacobian depends on the point only, so XLA merges
    the requests into one. The numbers are those of the eager chunks, where
    each chunk's products are made in one host step, bit for bit.
    """
    client = tesseract_factory("rosenbrock")
    x = jnp.linspace(-1.0, 1.5, 6)

    def residuals(x):
        return apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["residuals"]

    if mode == "jvp":  # 6 columns in 3 chunks
        _, linear = jax.linearize(residuals, x)
        eye, chunks = jnp.eye(6), 3
    else:  # 10 rows in 2 chunks
        _, vjp = jax.vjp(residuals, x)
        eye, chunks = jnp.eye(10), 2

        def linear(ct):
            return vjp(ct)[0]

    def chunked(e):
        return jnp.concatenate([jax.vmap(linear)(c) for c in jnp.split(e, chunks)])

    eager = chunked(eye)
    with Spy(client) as spy:
        jitted = jax.jit(chunked)(eye)
    assert spy.made() == {"jacobian": 1}
    np.testing.assert_array_equal(jitted, eager)
    inputs = {"x": x, "a": 1.0, "b": 100.0}
    jac = jax.jacfwd(lambda x: rosenbrock_ref({**inputs, "x": x})["residuals"])(x)
    np.testing.assert_allclose(jitted, jac.T if mode == "jvp" else jac, rtol=1e-13)


def test_a_discarded_call_is_not_made(local_tesseract):
    client = local_tesseract("rosenbrock")

    def f(x):
        loss = apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]
        return jnp.where(True, jnp.sum(x), loss)

    with Spy(client) as spy:
        out = jax.jit(f)(XS[0])
    assert spy.calls["apply"] == 0
    np.testing.assert_allclose(out, jnp.sum(XS[0]))


def test_constant_inputs_under_jit_are_called_when_the_program_runs(local_tesseract):
    """Not while tracing: lowering, eval_shape and a discarded result make no apply."""
    client = local_tesseract("rosenbrock")
    x0 = jnp.array([0.5, 1.5])

    def f(s):
        return apply_tesseract(client, {"x": x0, "a": 1.0, "b": 100.0})["loss"] + s

    with Spy(client) as spy:
        jax.jit(f).lower(1.0)
        jax.eval_shape(f, 1.0)
        assert spy.calls["apply"] == 0
        compiled = jax.jit(f)
        np.testing.assert_allclose(compiled(1.0), f(1.0), rtol=1e-14)
        np.testing.assert_allclose(compiled(2.0), f(2.0), rtol=1e-14)
    # two runs of the compiled program and the two eager references
    assert spy.calls["apply"] == 4


def test_constant_inputs_under_jit_with_string_outputs_are_called_while_tracing(
    test_tesseract,
):
    """A compiled program cannot return a string: such a call runs at trace time,
    as an eager call would, so ``note`` keeps its value."""
    client = test_tesseract("fixed_shapes")

    def f(s):
        out = apply_tesseract(client, {"x": np.array([1.0, 2.0, 3.0])})
        assert out["note"] == "fixed"
        return out["total"] + s

    with Spy(client) as spy:
        out = jax.jit(f)(1.0)
    assert spy.calls["apply"] == 1
    np.testing.assert_allclose(out, 2.0 * 14.0 + 1.0)
