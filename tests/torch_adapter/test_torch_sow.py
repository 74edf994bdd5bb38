"""``sow``/``save_intermediates`` in PyTorch: the same values, in the same format, as JAX.

The chain is the one of ``tests/jax_adapter/test_jax_sow.py``: rosenbrock's
residuals, sown, fed to rosenbrock again. References are written in torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch_adapter_refs import F64, rosenbrock_ref

import tess_ad.jax
from tess_ad.torch import apply_tesseract, save_intermediates, sow

X = [-1.2, 1.0, 0.5]
V = [1.0, -0.5, 2.0]


def chain(client, apply=apply_tesseract, tag_sow=sow):
    def f(x):
        first = apply(client, {"x": x, "a": 1.0, "b": 100.0})
        r = tag_sow(first["residuals"], "residuals")
        return apply(client, {"x": r, "a": 1.0, "b": 100.0})["loss"]

    return f


def residuals(x):
    return rosenbrock_ref(x)["residuals"]


def second_loss(r):
    return rosenbrock_ref(r)["loss"]


def test_primal_and_cotangent(tesseract_factory):
    client = tesseract_factory("rosenbrock")
    x = torch.tensor(X, dtype=F64, requires_grad=True)

    def grad(x):
        return torch.autograd.grad(chain(client)(x), x)[0]

    g, seen = save_intermediates(grad)(x)
    x0 = x.detach()
    r = residuals(x0)
    torch.testing.assert_close(
        g, torch.func.grad(lambda x: second_loss(residuals(x)))(x0)
    )
    torch.testing.assert_close(seen["residuals"]["primal"], r, rtol=1e-14, atol=0)
    torch.testing.assert_close(
        seen["residuals"]["cotangent"],
        torch.func.grad(second_loss)(r),
        rtol=1e-12,
        atol=0,
    )
    assert "tangent" not in seen["residuals"]


def test_forward_mode_tangent(tesseract_factory):
    client = tesseract_factory("rosenbrock")

    def tangent(x):
        with fwAD.dual_level():
            dual = fwAD.make_dual(x, torch.tensor(V, dtype=F64))
            return fwAD.unpack_dual(chain(client)(dual)).tangent

    _, seen = save_intermediates(tangent)(torch.tensor(X, dtype=F64))
    _, expected = torch.func.jvp(
        residuals, (torch.tensor(X, dtype=F64),), (torch.tensor(V, dtype=F64),)
    )
    torch.testing.assert_close(
        seen["residuals"]["tangent"], expected, rtol=1e-12, atol=0
    )


def test_same_values_as_jax(local_tesseract):
    """One format, one collector: the JAX and torch dictionaries agree bit for bit."""
    client = local_tesseract("rosenbrock")
    x = torch.tensor(X, dtype=F64, requires_grad=True)
    _, torch_seen = save_intermediates(
        lambda x: torch.autograd.grad(chain(client)(x), x)
    )(x)
    _, jax_seen = tess_ad.jax.save_intermediates(
        jax.grad(chain(client, tess_ad.jax.apply_tesseract, tess_ad.jax.sow))
    )(jnp.asarray(X))
    for mode in ("primal", "cotangent"):
        np.testing.assert_array_equal(
            torch_seen["residuals"][mode].numpy(),
            np.asarray(jax_seen["residuals"][mode]),
        )


def test_a_leaf_parameter_gets_no_lasting_hook():
    """The hook sits on a view: later backward passes of the parameter report nothing."""
    w = torch.nn.Parameter(torch.ones(3, dtype=F64))

    def step():
        return torch.autograd.grad((3.0 * sow(w, "w")).sum(), w)

    _, seen = save_intermediates(step)()
    torch.testing.assert_close(seen["w"]["cotangent"], torch.full((3,), 3.0, dtype=F64))
    assert not w._backward_hooks
    (2.0 * w).sum().backward()  # no save_intermediates open: nothing to report into
    torch.testing.assert_close(w.grad, torch.full((3,), 2.0, dtype=F64))


def test_loops_stack_and_duplicates_raise():
    x = torch.tensor(X, dtype=F64)

    def loop(x):
        for _ in range(3):
            x = sow_site(x)
        return x

    def sow_site(x):  # one sow call site reached three times
        return sow(2.0 * x, "x")

    _, seen = save_intermediates(loop)(x)
    assert seen["x"]["primal"].shape == (3, 3)

    def twice(x):
        return sow(x, "same") + sow(2.0 * x, "same")

    with pytest.raises(ValueError, match="'same'"):
        save_intermediates(twice)(x)
