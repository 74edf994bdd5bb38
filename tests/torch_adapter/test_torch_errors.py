"""Bad inputs to tess_ad.torch.apply_tesseract: each gives an error naming the path and the fix."""

from __future__ import annotations

import re

import pytest
import torch
from torch_adapter_refs import (
    F64,
    ROSEN_X,
    float32_values,
    nested_inputs,
    nested_tensors,
    rosenbrock_inputs,
)

import tess_ad
from tess_ad.torch import apply_tesseract


def _x(**kw):
    return torch.tensor(ROSEN_X, **{"dtype": F64, **kw})


@pytest.mark.parametrize(
    ("name", "bad", "path"),
    [
        ("rosenbrock", lambda: rosenbrock_inputs(_x().reshape(2, 2)), "'x'"),
        (
            "float32",
            lambda: {
                "x": float32_values()[0],
                "w": torch.ones(2),
                "shift": float32_values()[2],
            },
            "'w'",
        ),
        (
            "nested",
            lambda: nested_inputs(
                nested_tensors()["params"],
                [torch.ones(6, dtype=F64), torch.ones((3, 2), dtype=F64)],
            ),
            "'layers.[0].w'",
        ),
    ],
)
def test_wrong_shape(local_tesseract, name, bad, path):
    with pytest.raises(
        tess_ad.SchemaError, match=re.escape(path) + " has shape .* reshape"
    ):
        apply_tesseract(local_tesseract(name), bad())


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        (
            "rosenbrock",
            lambda: rosenbrock_inputs(torch.tensor([True, False, True])),
            r"'x' is Differentiable but got a torch.bool tensor.*\.double\(\)",
        ),
        (
            "float32",
            lambda: {
                "x": float32_values()[0],
                "w": torch.tensor(True),
                "shift": float32_values()[2],
            },
            r"'w' is Differentiable but got a torch.bool tensor",
        ),
        (
            "rosenbrock",
            lambda: rosenbrock_inputs(_x(dtype=torch.complex128, requires_grad=True)),
            r"'x' has dtype complex128.*float64.*real numbers",
        ),
    ],
)
def test_dtype_that_is_not_cast(local_tesseract, name, bad, message):
    """Float and integer tensors are cast to the schema's dtype; bool and complex-for-real are not."""
    with pytest.raises(tess_ad.SchemaError, match=message):
        apply_tesseract(local_tesseract(name), bad())


def test_tensor_on_a_path_that_does_not_exist(local_tesseract):
    with pytest.raises(
        tess_ad.SchemaError, match=r"unknown field 'bogus'.*allows: x, a, b"
    ):
        apply_tesseract(
            local_tesseract("rosenbrock"),
            {**rosenbrock_inputs(_x()), "bogus": torch.ones(2)},
        )
    inputs = nested_inputs(nested_tensors()["params"], nested_tensors()["w"])
    inputs["layers"][1]["wieght"] = torch.ones((3, 2), dtype=F64, requires_grad=True)
    with pytest.raises(
        tess_ad.SchemaError,
        match=r"unknown field '(layers\.\[1\]\.)?wieght'.*allows: w, b, activation, scale",
    ):
        apply_tesseract(local_tesseract("nested"), inputs)


def test_missing_field_and_not_a_dict(local_tesseract):
    with pytest.raises(tess_ad.SchemaError, match=r"missing required field.*'x'"):
        apply_tesseract(local_tesseract("rosenbrock"), {"a": 1.0})
    with pytest.raises(tess_ad.SchemaError, match=r"dict.*inputs|inputs.*dict"):
        apply_tesseract(local_tesseract("rosenbrock"), [_x()])


def test_not_a_tesseract():
    with pytest.raises(TypeError, match="expected a Tesseract client"):
        apply_tesseract(object(), {"x": _x()})


@pytest.mark.parametrize("kind", ["local", "served"])
def test_tesseract_error_in_apply_reaches_the_user(raising_tesseract, kind):
    t = raising_tesseract(kind)
    with pytest.raises(Exception, match="apply refused these inputs on purpose"):
        apply_tesseract(t, {"x": _x(requires_grad=True), "fail": "apply"})


@pytest.mark.parametrize("kind", ["local", "served"])
def test_tesseract_error_in_backward_reaches_the_user(raising_tesseract, kind):
    t = raising_tesseract(kind)
    x = _x(requires_grad=True)
    out = apply_tesseract(t, {"x": x, "fail": "vjp"})
    torch.testing.assert_close(out["y"].detach(), x.detach() ** 2)  # apply itself works
    with pytest.raises(Exception, match="vector_jacobian_product refused on purpose"):
        out["y"].sum().backward()
    assert x.grad is None
    # and the same Tesseract differentiates fine when it does not refuse
    apply_tesseract(t, {"x": x, "fail": "never"})["y"].sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=0, atol=0)


def test_vmap_over_an_empty_batch(local_tesseract):
    t = local_tesseract("rosenbrock")
    with pytest.raises(ValueError, match="empty batch"):
        torch.func.vmap(lambda x: apply_tesseract(t, rosenbrock_inputs(x))["loss"])(
            torch.zeros((0, 4), dtype=F64)
        )
