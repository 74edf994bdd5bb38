"""Same Tesseract, same inputs: the same derivatives in PyTorch and in JAX.

Both adapters take every number from tess_ad._endpoints.Endpoints, so
gradients, VJPs, JVPs and Hessian-vector products agree to 1e-12 in float64
(in practice bit for bit). Also checked against jax.grad of the pure-JAX
references in tests/references.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
import torch
import torch.autograd.forward_ad as fwAD
from torch_adapter_refs import (
    ROSEN_X,
    float32_values,
    nested_inputs,
    nested_tensors,
    rosenbrock_inputs,
)

import tess_ad
from tess_ad._paths import dict_segment
from tess_ad.jax import apply_tesseract as jax_apply
from tess_ad.torch import apply_tesseract as torch_apply

X = np.array(ROSEN_X)
V = np.array([0.3, -1.1, 0.7, 2.0])
U = np.array([1.0, -0.5, 0.25, 2.0, 0.0, -1.5])
SAME = {"rtol": 1e-12, "atol": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _x64():
    assert jax.config.jax_enable_x64, "tests/conftest.py enables float64 in JAX"


def _close(torch_value, jax_value, scale_atol: bool = False):
    a, b = np.asarray(torch_value.detach().numpy()), np.asarray(jax_value)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    atol = 1e-12 * np.abs(b).max() if scale_atol else 0.0
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=atol)


def test_rosenbrock_first_order(tesseract_factory):
    t = tesseract_factory("rosenbrock")

    def jax_out(x):
        return jax_apply(t, rosenbrock_inputs(x))

    # gradient of the loss
    x = torch.tensor(X, requires_grad=True)
    torch_apply(t, rosenbrock_inputs(x))["loss"].backward()
    _close(x.grad, jax.grad(lambda x: jax_out(x)["loss"])(jnp.asarray(X)))

    # VJP of the residuals
    x = torch.tensor(X, requires_grad=True)
    (g,) = torch.autograd.grad(
        torch_apply(t, rosenbrock_inputs(x))["residuals"], x, torch.tensor(U)
    )
    _, fn = jax.vjp(lambda x: jax_out(x)["residuals"], jnp.asarray(X))
    _close(g, fn(jnp.asarray(U))[0])

    # JVP of both outputs (forward AD)
    with fwAD.dual_level():
        out = torch_apply(
            t, rosenbrock_inputs(fwAD.make_dual(torch.tensor(X), torch.tensor(V)))
        )
        tangents = {k: fwAD.unpack_dual(v).tangent for k, v in out.items()}
    _, jax_tangents = jax.jvp(jax_out, (jnp.asarray(X),), (jnp.asarray(V),))
    for k in ("loss", "residuals"):
        _close(tangents[k], jax_tangents[k])

    # whole Jacobian (JAX may use the jacobian endpoint, torch one VJP per row)
    _close(
        torch.func.jacrev(lambda x: torch_apply(t, rosenbrock_inputs(x))["residuals"])(
            torch.tensor(X)
        ),
        jax.jacrev(lambda x: jax_out(x)["residuals"])(jnp.asarray(X)),
        scale_atol=True,
    )


def test_rosenbrock_second_order(tesseract_factory):
    t = tesseract_factory("rosenbrock")

    def jax_loss(x):
        return jax_apply(t, rosenbrock_inputs(x))["loss"]

    def torch_loss(x):
        return torch_apply(t, rosenbrock_inputs(x))["loss"]

    # double backward HVP vs forward-over-reverse in JAX: both Endpoints.vjp_jvp(x, 1, v)
    x = torch.tensor(X, requires_grad=True)
    (g,) = torch.autograd.grad(torch_loss(x), x, create_graph=True)
    (hv,) = torch.autograd.grad(g @ torch.tensor(V), x)
    _close(hv, jax.jvp(jax.grad(jax_loss), (jnp.asarray(X),), (jnp.asarray(V),))[1])

    # full Hessians: the same route in both frameworks gives the same matrix
    _close(
        torch.func.hessian(torch_loss)(torch.tensor(X)),
        jax.hessian(jax_loss)(jnp.asarray(X)),
        scale_atol=True,
    )
    _close(
        torch.func.jacrev(torch.func.jacrev(torch_loss))(torch.tensor(X)),
        jax.jacrev(jax.jacrev(jax_loss))(jnp.asarray(X)),
        scale_atol=True,
    )


def test_float32_same_numbers(local_tesseract):
    t = local_tesseract("float32")
    x, w, shift = float32_values()

    def jax_energy(x, w):
        return jax_apply(t, {"x": x, "w": w, "shift": np.asarray(shift)})["energy"]

    tx, tw = x.clone().requires_grad_(), w.clone().requires_grad_()
    torch_apply(t, {"x": tx, "w": tw, "shift": shift})["energy"].backward()
    jx, jw = jax.grad(jax_energy, argnums=(0, 1))(
        jnp.asarray(x.numpy()), jnp.asarray(w.numpy())
    )
    assert tx.grad.dtype == torch.float32 and jx.dtype == jnp.float32
    _close(tx.grad, jx)
    _close(tw.grad, jw)


def test_nested_finite_differences_same_numbers(tesseract_factory):
    """A Tesseract with only apply, wrapped once and used from both frameworks."""
    t = tess_ad.with_finite_differences(tesseract_factory("nested"))
    leaves = nested_tensors()
    params = {k: v.clone().requires_grad_() for k, v in leaves["params"].items()}
    w = [v.clone().requires_grad_() for v in leaves["w"]]
    b = [v.clone().requires_grad_() for v in leaves["b"]]
    torch_apply(t, nested_inputs(params, w, b))["summary"]["sumsq"].backward()

    def jax_sumsq(p, w, b):
        return jax_apply(t, nested_inputs(p, w, b))["summary"]["sumsq"]

    def as_jax(tree):
        return jax.tree_util.tree_map(lambda v: jnp.asarray(v.detach().numpy()), tree)

    jp, jw, jb = jax.grad(jax_sumsq, argnums=(0, 1, 2))(
        as_jax(params), as_jax(w), as_jax(b)
    )
    for k in params:
        _close(params[k].grad, jp[k])
    for i in range(2):
        _close(w[i].grad, jw[i])
        _close(b[i].grad, jb[i])

    # second order: Hessian-vector product in alpha
    direction = np.array([1.0, -1.0, 0.5])
    alpha = leaves["params"]["alpha"].clone().requires_grad_()
    out = torch_apply(
        t, nested_inputs({**leaves["params"], "alpha": alpha}, leaves["w"])
    )
    (g,) = torch.autograd.grad(out["summary"]["sumsq"], alpha, create_graph=True)
    (hv,) = torch.autograd.grad(g @ torch.tensor(direction), alpha)

    base = as_jax(leaves)

    def jax_alpha(a):
        return jax_sumsq({**base["params"], "alpha": a}, base["w"], base["b"])

    _close(
        hv,
        jax.jvp(
            jax.grad(jax_alpha), (base["params"]["alpha"],), (jnp.asarray(direction),)
        )[1],
    )


def test_against_pure_jax_references_and_endpoints(local_tesseract):
    """Torch adapter vs jax.grad of tests/references.py (analytic) and Endpoints (to 1e-12)."""
    from tess_ad._endpoints import Endpoints

    t = local_tesseract("rosenbrock")
    x = torch.tensor(X, requires_grad=True)
    out = torch_apply(t, rosenbrock_inputs(x))
    (g,) = torch.autograd.grad(out["loss"], x, create_graph=True)
    (hv,) = torch.autograd.grad(g @ torch.tensor(V), x)

    def ref_loss(x):
        return references.rosenbrock(x)["loss"]

    np.testing.assert_allclose(
        g.detach().numpy(), jax.grad(ref_loss)(jnp.asarray(X)), rtol=1e-13
    )
    ref_hv = jax.hessian(ref_loss)(jnp.asarray(X)) @ V
    np.testing.assert_allclose(
        hv.numpy(), ref_hv, rtol=1e-9, atol=1e-9 * np.abs(ref_hv).max()
    )

    ep = Endpoints(t)
    inputs = rosenbrock_inputs(X)
    np.testing.assert_allclose(
        g.detach().numpy(),
        ep.vjp(inputs, ["x"], ["loss"], {"loss": np.float64(1.0)})["x"],
        **SAME,
    )
    direct_hv = ep.vjp_jvp(
        inputs, ["x"], ["loss"], {"loss": np.float64(1.0)}, {"x": V}
    )["x"]
    np.testing.assert_allclose(hv.numpy(), direct_hv, **SAME)

    fd = tess_ad.with_finite_differences(local_tesseract("nested"))
    leaves = nested_tensors()
    params = {k: v.clone().requires_grad_() for k, v in leaves["params"].items()}
    torch_apply(fd, nested_inputs(params, leaves["w"]))["summary"]["sumsq"].backward()
    base = jax.tree_util.tree_map(lambda v: jnp.asarray(v.numpy()), leaves)
    ref = jax.grad(
        lambda p: references.nested(nested_inputs(p, base["w"]))["summary"]["sumsq"]
    )(base["params"])
    direct = Endpoints(fd).vjp(
        nested_inputs(
            {k: v.numpy() for k, v in leaves["params"].items()},
            [v.numpy() for v in leaves["w"]],
        ),
        ["params." + dict_segment(k) for k in params],
        ["summary.{sumsq}"],
        {"summary.{sumsq}": np.float64(1.0)},
    )
    for k, p in params.items():
        np.testing.assert_allclose(
            p.grad.numpy(), ref[k], rtol=1e-7, atol=1e-9
        )  # central FD of apply
        np.testing.assert_allclose(
            p.grad.numpy(), direct["params." + dict_segment(k)], **SAME
        )
