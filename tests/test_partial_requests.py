"""Tesseracts that cannot answer a partial VJP/JVP request still differentiate.

``placeholder_grads`` answers a VJP that leaves out an output (a JVP that
leaves out an input) with a scalar ``0.0`` for an array, which
tesseract-core's validation refuses. :class:`tess_ad.Endpoints` first asks
for what is used; when that fails it asks once for every differentiable
output with zero cotangents (every differentiable input with zero tangents),
and sends that client complete requests from then on. Counted on real
clients, in both adapters, in-process and served; a Tesseract that answers
partial requests (rosenbrock) keeps getting them.

    gains.k  = scale * k**2 + offset     d/dk = 2 scale k
    signal.u = u * (bias + 1)            d/du = diag(bias + 1)
"""

from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import requests
import torch
import torch.autograd.forward_ad as fwAD
from helpers import (
    Server,
    Spy,
    example_api,
    example_inputs,
    load_forward_ad_decompositions,
)

import tess_ad.jax
import tess_ad.torch
from tess_ad._client import JVP, VJP

NAME = "placeholder_grads"
K, U = 1.5, np.array([1.0, -2.0, 3.0], np.float32)
SCALE = 1.0  # the default
GAIN = np.array([0.5, 1.0, 1.5], np.float32) + 1  # bias (the default) + 1
DK = 2 * SCALE * K  # d gains.k / d k


@pytest.fixture(params=["local", "served"])
def fresh(request, served_tesseract):
    """A new client of placeholder_grads: what a client learns is its own."""
    from tesseract_core import Tesseract

    if request.param == "local":
        return lambda: Tesseract.from_tesseract_api(str(example_api(NAME)))
    return lambda: served_tesseract(NAME)


def _inputs(k, u, scale=SCALE):
    inputs = example_inputs(NAME)
    inputs["gains"]["k"] = k
    inputs["signal"]["u"] = u
    inputs["label"]["scale"] = scale
    return inputs


def _requested(spy, endpoint, key):
    return [sorted(kwargs[key]) for _, kwargs in spy.args[endpoint]]


BOTH_OUT = ["gains.k", "signal.u"]


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_jax_grad_of_one_output_asks_complete_after_one_failure(fresh, mode, caplog):
    t = fresh()

    def gain(k, u):
        return tess_ad.jax.apply_tesseract(t, _inputs(k, u))["gains"]["k"]

    f = jax.jit(jax.grad(gain, argnums=(0, 1)))
    if mode == "eager":
        f = jax.grad(gain, argnums=(0, 1))
    args = (jnp.float32(K), jnp.asarray(U))
    with Spy(t) as spy, caplog.at_level(logging.INFO, logger="tess_ad"):
        gk, gu = f(*args)
        assert (
            spy.calls[VJP] == 2
        )  # the partial request failed, the complete one worked
        assert _requested(spy, VJP, "vjp_outputs") == [["gains.k"], BOTH_OUT]
        np.testing.assert_allclose(gk, DK, rtol=1e-6)
        np.testing.assert_array_equal(gu, np.zeros(3, np.float32))
        assert gk.dtype == jnp.float32 and gu.dtype == jnp.float32
        learnt = [r for r in caplog.records if "partial" in r.getMessage()]
        assert len(learnt) == 1 and learnt[0].levelno == logging.INFO
        assert "vector_jacobian_product (VJP)" in learnt[0].getMessage()
        spy.reset()
        gk2, _ = f(jnp.float32(2.0), jnp.asarray(U))
        assert spy.calls[VJP] == 1  # learnt: complete from the start
        assert _requested(spy, VJP, "vjp_outputs") == [BOTH_OUT]
        np.testing.assert_allclose(gk2, 2 * SCALE * 2.0, rtol=1e-6)
        assert len([r for r in caplog.records if "partial" in r.getMessage()]) == 1


def test_torch_backward_of_one_output_asks_complete_after_one_failure(fresh):
    t = fresh()
    k = torch.tensor(K, dtype=torch.float32, requires_grad=True)
    u = torch.tensor(U, requires_grad=True)
    with Spy(t) as spy:
        tess_ad.torch.apply_tesseract(t, _inputs(k, u))["gains"]["k"].backward()
        assert spy.calls[VJP] == 2
        assert _requested(spy, VJP, "vjp_outputs") == [["gains.k"], BOTH_OUT]
        np.testing.assert_allclose(k.grad.numpy(), DK, rtol=1e-6)
        np.testing.assert_array_equal(u.grad.numpy(), np.zeros(3, np.float32))
        spy.reset()
        k.grad = u.grad = None
        out = tess_ad.torch.apply_tesseract(t, _inputs(k, u))
        (3 * out["gains"]["k"]).backward()
        assert spy.calls[VJP] == 1
        assert _requested(spy, VJP, "vjp_outputs") == [BOTH_OUT]
        np.testing.assert_allclose(k.grad.numpy(), 3 * DK, rtol=1e-6)


def test_what_a_client_learns_serves_both_adapters():
    from tesseract_core import Tesseract

    t = Tesseract.from_tesseract_api(str(example_api(NAME)))
    with Spy(t) as spy:
        jax.grad(
            lambda k, u: tess_ad.jax.apply_tesseract(t, _inputs(k, u))["gains"]["k"],
            argnums=(0, 1),
        )(jnp.float32(K), jnp.asarray(U))
        assert spy.calls[VJP] == 2
        spy.reset()
        k = torch.tensor(K, dtype=torch.float32, requires_grad=True)
        u = torch.tensor(U, requires_grad=True)
        tess_ad.torch.apply_tesseract(t, _inputs(k, u))["gains"]["k"].backward()
        assert spy.calls[VJP] == 1
        assert _requested(spy, VJP, "vjp_outputs") == [BOTH_OUT]
        np.testing.assert_allclose(k.grad.numpy(), DK, rtol=1e-6)


def test_jax_jvp_with_a_zero_tangent_on_one_input(fresh):
    t = fresh()

    def f(k, u):
        out = tess_ad.jax.apply_tesseract(t, _inputs(k, u))
        return out["gains"]["k"], out["signal"]["u"]

    tangents = (jnp.float32(1.0), jnp.zeros(3, jnp.float32))
    with Spy(t) as spy:
        _, (dk, du) = jax.jvp(f, (jnp.float32(K), jnp.asarray(U)), tangents)
        assert spy.calls[JVP] == 2
        assert _requested(spy, JVP, "jvp_inputs") == [["gains.k"], BOTH_OUT]
        np.testing.assert_allclose(dk, DK, rtol=1e-6)
        np.testing.assert_array_equal(du, np.zeros(3, np.float32))
        spy.reset()
        tangents = (jnp.float32(0.0), jnp.ones(3, jnp.float32))
        _, (dk, du) = jax.jvp(f, (jnp.float32(K), jnp.asarray(U)), tangents)
        assert spy.calls[JVP] == 1
        assert _requested(spy, JVP, "jvp_inputs") == [BOTH_OUT]
        assert dk == 0.0
        np.testing.assert_allclose(du, GAIN, rtol=1e-6)


def test_torch_forward_ad_with_a_zero_tangent_on_one_input(fresh):
    t = fresh()
    load_forward_ad_decompositions()
    with Spy(t) as spy, fwAD.dual_level():
        k = fwAD.make_dual(torch.tensor(K), torch.tensor(1.0))
        u = fwAD.make_dual(torch.tensor(U), torch.zeros(3))
        out = tess_ad.torch.apply_tesseract(t, _inputs(k, u))
        dk = fwAD.unpack_dual(out["gains"]["k"]).tangent
        du = fwAD.unpack_dual(out["signal"]["u"]).tangent
        assert spy.calls[JVP] == 2
        assert _requested(spy, JVP, "jvp_inputs") == [["gains.k"], BOTH_OUT]
    np.testing.assert_allclose(dk.numpy(), DK, rtol=1e-6)
    np.testing.assert_array_equal(du.numpy(), np.zeros(3, np.float32))


REFUSED = "non-negative label.scale|Error 500"


def test_when_the_complete_request_fails_too_both_errors_are_kept(fresh):
    """A negative scale makes this VJP refuse any request: nothing is learnt."""
    t = fresh()

    def gain(k):
        return tess_ad.jax.apply_tesseract(t, _inputs(k, U, scale=-1.0))["gains"]["k"]

    with Spy(t) as spy:
        for _ in range(2):
            # served without debug mode, the server only says 500
            with pytest.raises(Exception, match=REFUSED) as info:
                jax.grad(gain)(jnp.float32(K))
            assert info.value.__cause__ is not None  # the partial request's error
            assert re.search(REFUSED, str(info.value.__cause__))
        # never learnt: each gradient asks partial, then complete
        assert _requested(spy, VJP, "vjp_outputs") == [["gains.k"], BOTH_OUT] * 2


def test_a_lost_connection_is_not_answered_with_a_complete_request():
    from tesseract_core import Tesseract

    server = Server(example_api(NAME)).start()
    try:
        t = Tesseract.from_url(server.url)
        k = torch.tensor(K, dtype=torch.float32, requires_grad=True)
        out = tess_ad.torch.apply_tesseract(t, _inputs(k, U))
        server.stop()
        with Spy(t) as spy, pytest.raises(requests.ConnectionError):
            out["gains"]["k"].backward()
        assert spy.calls[VJP] == 1
    finally:
        server.stop()


def test_a_tesseract_that_answers_partial_requests_gets_only_those(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = np.asarray(example_inputs("rosenbrock")["x"], np.float64)
    with Spy(t) as spy:
        jax.grad(lambda x: tess_ad.jax.apply_tesseract(t, {"x": x})["loss"])(
            jnp.asarray(x)
        )
        xt = torch.tensor(x, requires_grad=True)
        tess_ad.torch.apply_tesseract(t, {"x": xt})["loss"].backward()
        load_forward_ad_decompositions()
        with fwAD.dual_level():
            dual = fwAD.make_dual(
                torch.tensor(x), torch.ones(x.size, dtype=torch.float64)
            )
            tess_ad.torch.apply_tesseract(t, {"x": dual})
    assert spy.calls[VJP] == 2 and spy.calls[JVP] == 1  # one each, never a retry
    assert _requested(spy, VJP, "vjp_outputs") == [["loss"], ["loss"]]
