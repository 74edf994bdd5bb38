"""tess_ad calls client endpoints with tesseract-core's keyword names.

Wrappers and spies written against ``tesseract_core.Tesseract`` often take the
endpoint arguments by keyword only (``vjp_inputs=``, ``cotangent_vector=``...).
:class:`KeywordOnlyClient` is such a wrapper around a real Tesseract: a
positional call anywhere in tess_ad (the numeric layer, the finite-difference
proxy, ``abstract_eval`` under ``jit``) raises ``TypeError`` there.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
import torch

import tess_ad
import tess_ad.jax
import tess_ad.torch

X = np.array([-1.2, 1.0, 0.5, 2.0])


class KeywordOnlyClient:
    """A Tesseract client whose endpoint methods take keyword arguments only."""

    def __init__(self, tesseract: Any) -> None:
        self._tesseract = tesseract
        self.calls: Counter[str] = Counter()

    @property
    def openapi_schema(self) -> dict:
        return self._tesseract.openapi_schema

    @property
    def available_endpoints(self) -> list[str]:
        return self._tesseract.available_endpoints

    def apply(self, *, inputs: dict, run_id: str | None = None) -> dict:
        self.calls["apply"] += 1
        return self._tesseract.apply(inputs=inputs, run_id=run_id)

    def abstract_eval(self, *, abstract_inputs: dict) -> dict:
        self.calls["abstract_eval"] += 1
        return self._tesseract.abstract_eval(abstract_inputs=abstract_inputs)

    def jacobian(self, *, inputs: dict, jac_inputs: list, jac_outputs: list) -> dict:
        self.calls["jacobian"] += 1
        return self._tesseract.jacobian(
            inputs=inputs, jac_inputs=jac_inputs, jac_outputs=jac_outputs
        )

    def jacobian_vector_product(
        self, *, inputs: dict, jvp_inputs: list, jvp_outputs: list, tangent_vector: dict
    ) -> dict:
        self.calls["jacobian_vector_product"] += 1
        return self._tesseract.jacobian_vector_product(
            inputs=inputs,
            jvp_inputs=jvp_inputs,
            jvp_outputs=jvp_outputs,
            tangent_vector=tangent_vector,
        )

    def vector_jacobian_product(
        self,
        *,
        inputs: dict,
        vjp_inputs: list,
        vjp_outputs: list,
        cotangent_vector: dict,
    ) -> dict:
        self.calls["vector_jacobian_product"] += 1
        return self._tesseract.vector_jacobian_product(
            inputs=inputs,
            vjp_inputs=vjp_inputs,
            vjp_outputs=vjp_outputs,
            cotangent_vector=cotangent_vector,
        )


def _want_grad() -> np.ndarray:
    return np.asarray(
        jax.grad(lambda x: references.rosenbrock(x)["loss"])(jnp.asarray(X))
    )


@pytest.fixture(params=["plain", "finite differences"])
def client(request, tesseract_factory):
    """The keyword-only client, or ``with_finite_differences`` of it."""
    kw = KeywordOnlyClient(tesseract_factory("rosenbrock"))
    if request.param == "plain":
        return kw, kw, 1e-10
    # central differences: relative error about eps**(2/3) times the curvature
    return tess_ad.with_finite_differences(kw), kw, 1e-6


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_jax_grad_and_jvp_through_keyword_only_client(client, mode):
    t, kw, rtol = client

    def loss(x):
        return tess_ad.jax.apply_tesseract(t, {"x": x})["loss"]

    f = jax.jit(loss) if mode == "jit" else loss
    g = jax.grad(f)(jnp.asarray(X))
    np.testing.assert_allclose(g, _want_grad(), rtol=rtol)
    direction = jnp.asarray([1.0, 0.0, -1.0, 0.5])
    _, dl = jax.jvp(f, (jnp.asarray(X),), (direction,))
    np.testing.assert_allclose(dl, _want_grad() @ np.asarray(direction), rtol=rtol)
    assert kw.calls["apply"] >= 1
    if mode == "jit" and t is kw:
        assert kw.calls["abstract_eval"] == 1  # output shapes under jit, by keyword


def test_torch_backward_and_forward_ad_through_keyword_only_client(client):
    import torch.autograd.forward_ad as fwAD
    from helpers import load_forward_ad_decompositions

    t, kw, rtol = client
    x = torch.tensor(X, requires_grad=True)
    tess_ad.torch.apply_tesseract(t, {"x": x})["loss"].backward()
    np.testing.assert_allclose(x.grad.numpy(), _want_grad(), rtol=rtol)
    direction = torch.tensor([1.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    load_forward_ad_decompositions()
    with fwAD.dual_level():
        dual = fwAD.make_dual(torch.tensor(X), direction)
        out = tess_ad.torch.apply_tesseract(t, {"x": dual})["loss"]
        dl = fwAD.unpack_dual(out).tangent
    np.testing.assert_allclose(dl.numpy(), _want_grad() @ direction.numpy(), rtol=rtol)
    if t is kw:
        assert kw.calls["vector_jacobian_product"] == 1
        assert kw.calls["jacobian_vector_product"] == 1
    else:  # the proxy's sweeps call the keyword-only apply
        assert kw.calls["apply"] > 2 * X.size
