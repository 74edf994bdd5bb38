"""Bad input across the public API: the exact exception, a message naming the culprit, nothing lost.

One table (``ROWS``) of bad calls of ``tess_ad.with_finite_differences``,
``tess_ad.with_retries``, ``tess_ad.finite_difference_*``,
``tess_ad.tesseract_schema`` and the two adapters' ``apply_tesseract``, on real
in-process and served Tesseracts. Each row gives the exception type (checked
exactly: ``type(exc) is T``), the fragments its message must contain (the path
or argument at fault), and the next *good* call on the same client through the
same entry point, whose result is checked against the analytic rosenbrock
values or a NumPy re-implementation of the nested Tesseract: an error loses
nothing.

NaN and Inf inputs are not errors: they reach the Tesseract, which returns
NaN/Inf. Finite differences whose outputs turn non-finite are, and say which
output and which perturbed input (``FDNonFiniteError``).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
import torch
from helpers import example_api, example_inputs, free_port
from tesseract_core import Tesseract
from tesseract_core.runtime.core import load_module_from_path

import tess_ad
import tess_ad.jax
import tess_ad.torch
from tess_ad import FDNonFiniteError, SchemaError, TesseractConnectionError

X = np.array([-1.2, 1.0, 0.5, 2.0])
RAISING_JAX = (
    Path(__file__).parent
    / "jax_adapter"
    / "tesseracts"
    / "raising"
    / "tesseract_api.py"
)
RAISING_TORCH = (
    Path(__file__).parent
    / "torch_adapter"
    / "tesseracts"
    / "torch_raising"
    / "tesseract_api.py"
)


# --------------------------------------------------------------------------
# References: analytic rosenbrock, NumPy nested
# --------------------------------------------------------------------------


def rosenbrock(
    x: np.ndarray, a: float = 1.0, b: float = 100.0
) -> tuple[float, np.ndarray]:
    """Loss and its gradient, from the formula in examples/rosenbrock."""
    s = np.sqrt(b)
    r = np.concatenate([a - x[:-1], s * (x[1:] - x[:-1] ** 2)])
    n = x.shape[0]
    jac = np.zeros((2 * (n - 1), n))
    i = np.arange(n - 1)
    jac[i, i] = -1.0
    jac[n - 1 + i, i + 1] = s
    jac[n - 1 + i, i] = -2.0 * s * x[:-1]
    return float(np.sum(r**2)), 2.0 * r @ jac


def rosen_inputs(x: Any = X) -> dict:
    return {"x": x, "a": 1.0, "b": 100.0}


def nested_reference(inputs: dict) -> float:
    """``summary.sumsq`` of examples/nested, in NumPy."""
    params = inputs["params"]
    h = sum((i + 1.0) * np.asarray(params[k]) for i, k in enumerate(sorted(params)))
    acts = {"tanh": np.tanh, "sin": np.sin, "identity": lambda v: v}
    for layer in inputs["layers"]:
        z = np.asarray(layer["w"]) @ h + layer["b"]
        h = acts[layer["activation"]](z) * np.asarray(layer["scale"])
    out = h + inputs["config"]["offset"]
    return float(np.sum(out**2))


def nested_inputs() -> dict:
    inputs = example_inputs("nested")
    inputs["params"] = {k: np.asarray(v) for k, v in inputs["params"].items()}
    for layer in inputs["layers"]:
        layer["w"] = np.asarray(layer["w"])
        layer["scale"] = np.asarray(layer["scale"])
    return inputs


# --------------------------------------------------------------------------
# The context every row gets
# --------------------------------------------------------------------------


@dataclass
class Ctx:
    local: Callable[[str], Any]
    served: Callable[..., Any]
    tmp_path: Path
    dead_url: str
    rosen_api: Any

    def rosen_model(self, x: np.ndarray = X) -> Any:
        return self.rosen_api.InputSchema.model_validate(rosen_inputs(x))


@pytest.fixture(scope="module")
def rosen_api():
    return load_module_from_path(example_api("rosenbrock"))


@pytest.fixture
def ctx(local_tesseract, served_tesseract, tmp_path, rosen_api):
    # a port that was free a moment ago: nothing listens there
    return Ctx(
        local_tesseract,
        served_tesseract,
        tmp_path,
        f"http://127.0.0.1:{free_port()}",
        rosen_api,
    )


# --------------------------------------------------------------------------
# Good calls: the same entry point, right after the error, checked
# --------------------------------------------------------------------------


def good_jax(client_of: Callable[[Ctx], Any]) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        client = client_of(c)

        def loss(x):
            return tess_ad.jax.apply_tesseract(client, rosen_inputs(x))["loss"]

        value, grad = jax.value_and_grad(loss)(jnp.asarray(X))
        ref_value, ref_grad = rosenbrock(X)
        np.testing.assert_allclose(float(value), ref_value, rtol=1e-14)
        np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-14)

    return check


def good_torch(client_of: Callable[[Ctx], Any]) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        x = torch.tensor(X, requires_grad=True)
        out = tess_ad.torch.apply_tesseract(client_of(c), rosen_inputs(x))
        out["loss"].backward()
        ref_value, ref_grad = rosenbrock(X)
        np.testing.assert_allclose(out["loss"].item(), ref_value, rtol=1e-14)
        np.testing.assert_allclose(x.grad.numpy(), ref_grad, rtol=1e-14)

    return check


def good_fd(client_of: Callable[[Ctx], Any]) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        fd = tess_ad.with_finite_differences(client_of(c))
        vjp = fd.vector_jacobian_product(rosen_inputs(), ["x"], ["loss"], {"loss": 1.0})
        np.testing.assert_allclose(vjp["x"], rosenbrock(X)[1], rtol=1e-7)

    return check


def good_nested(c: Ctx) -> None:
    """Nested through the FD proxy (JAX and torch): value right, gradient finite."""
    fd = tess_ad.with_finite_differences(c.local("nested"))
    inputs = nested_inputs()
    out = tess_ad.jax.apply_tesseract(fd, inputs)
    np.testing.assert_allclose(
        float(out["summary"]["sumsq"]), nested_reference(inputs), rtol=1e-14
    )
    b = torch.tensor(inputs["layers"][0]["b"], dtype=torch.float64, requires_grad=True)
    inputs["layers"][0]["b"] = b
    tess_ad.torch.apply_tesseract(fd, inputs)["summary"]["sumsq"].backward()
    assert torch.isfinite(b.grad) and b.grad != 0


def good_dropin(c: Ctx) -> None:
    api = c.rosen_api
    vjp = tess_ad.finite_difference_vjp(
        api.apply, c.rosen_model(), {"x"}, {"loss"}, {"loss": np.float64(1.0)}
    )
    jac = tess_ad.finite_difference_jacobian(
        api.apply, c.rosen_model(), {"x"}, {"loss"}
    )
    jvp = tess_ad.finite_difference_jvp(
        api.apply, c.rosen_model(), {"x"}, {"loss"}, {"x": np.ones(4)}
    )
    grad = rosenbrock(X)[1]
    np.testing.assert_allclose(vjp["x"], grad, rtol=1e-7)
    np.testing.assert_allclose(jac["loss"]["x"], grad, rtol=1e-7)
    np.testing.assert_allclose(jvp["loss"], grad.sum(), rtol=1e-7)


def good_schema(client_of: Callable[[Ctx], Any]) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        client = client_of(c)
        schema = tess_ad.tesseract_schema(client)
        assert schema.inputs.differentiable_arrays["x"].dtype == "float64"
        np.testing.assert_allclose(
            float(client.apply(rosen_inputs())["loss"]), rosenbrock(X)[0], rtol=1e-14
        )

    return check


def good_retries(client_of: Callable[[Ctx], Any]) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        t = tess_ad.with_retries(client_of(c), attempts=2, backoff=0.01)
        np.testing.assert_allclose(
            float(t.apply(rosen_inputs())["loss"]), rosenbrock(X)[0], rtol=1e-14
        )
        assert t.retries == 0

    return check


def local(name: str) -> Callable[[Ctx], Any]:
    return lambda c: c.local(name)


def served(name: str) -> Callable[[Ctx], Any]:
    return lambda c: c.served(name)


def dead(c: Ctx) -> Any:
    return Tesseract.from_url(c.dead_url)


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    bad: Callable[[Ctx], Any]
    exc: type[BaseException]
    names: tuple[str, ...]  # fragments of the message; a callable of Ctx for URLs
    good: Callable[[Ctx], None]


class OnlyApply:
    """An object with an apply method and nothing else (no openapi_schema)."""

    def apply(self, inputs: dict) -> dict:
        return {}


class OnlySchema:
    """An object with an OpenAPI schema but no apply method."""

    def __init__(self, schema: dict) -> None:
        self.openapi_schema = schema


def fd_of(client_of: Callable[[Ctx], Any], **kwargs: Any) -> Callable[[Ctx], Any]:
    return lambda c: tess_ad.with_finite_differences(client_of(c), **kwargs)


def nested_with(**changes: Any) -> dict:
    inputs = nested_inputs()
    for path, value in changes.items():
        if path == "layers0":
            inputs["layers"][0] = {**inputs["layers"][0], **value}
        elif value is None:
            del inputs[path]
        else:
            inputs[path] = value
    return inputs


def shut_down_executor() -> ThreadPoolExecutor:
    """A real executor that refuses work: ``submit`` raises RuntimeError."""
    executor = ThreadPoolExecutor(max_workers=2)
    executor.shutdown()
    return executor


ROWS = [
    # -- wrong shape ------------------------------------------------------------
    Row(
        "jax-wrong-shape",
        lambda c: tess_ad.jax.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(np.ones((2, 2)))
        ),
        SchemaError,
        ("inputs path 'x'", "shape (2, 2)"),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "torch-wrong-shape-nested-path",
        lambda c: tess_ad.torch.apply_tesseract(
            c.local("nested"),
            nested_with(layers0={"w": torch.ones(3, dtype=torch.float64)}),
        ),
        SchemaError,
        ("inputs path 'layers.[0].w'", "shape (3,)"),
        good_nested,
    ),
    Row(
        "fd-served-wrong-shape",
        lambda c: tess_ad.with_finite_differences(
            c.served("rosenbrock")
        ).vector_jacobian_product(
            rosen_inputs(np.ones((4, 1))), ["x"], ["loss"], {"loss": 1.0}
        ),
        SchemaError,
        ("inputs path 'x'", "shape (4, 1)"),
        good_fd(served("rosenbrock")),
    ),
    # -- wrong dtype --------------------------------------------------------------
    Row(
        "torch-bool-for-float64",  # a float32 tensor is cast; a bool one is refused
        lambda c: tess_ad.torch.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(torch.tensor(X) > 0)
        ),
        SchemaError,
        ("inputs path 'x'", "torch.bool"),
        good_torch(local("rosenbrock")),
    ),
    Row(
        "jax-strings-for-floats",
        lambda c: tess_ad.jax.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(np.array(["1", "2"]))
        ),
        SchemaError,
        ("inputs path 'x'", "dtype <U1"),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "jax-complex-for-real",
        lambda c: tess_ad.jax.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(X + 1j)
        ),
        SchemaError,
        ("inputs path 'x'", "dtype complex128"),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "served-string-for-float-field",
        lambda c: tess_ad.jax.apply_tesseract(
            c.served("rosenbrock"), {**rosen_inputs(), "a": "one"}
        ),
        pydantic.ValidationError,  # the Tesseract's own validation (HTTP 422)
        ("inputs.a", "valid number"),
        good_jax(served("rosenbrock")),
    ),
    Row(
        "served-string-for-float-field-jit",
        lambda c: jax.jit(
            lambda x: tess_ad.jax.apply_tesseract(
                c.served("rosenbrock"), {**rosen_inputs(x), "a": "one"}
            )["loss"]
        )(jnp.asarray(X)),
        pydantic.ValidationError,  # HTTP 422 from abstract_eval, while tracing
        ("inputs.a", "valid number", "asked the abstract_eval endpoint"),
        good_jax(served("rosenbrock")),
    ),
    Row(
        "served-string-for-float-field-torch",
        lambda c: tess_ad.torch.apply_tesseract(
            c.served("rosenbrock"), {**rosen_inputs(torch.tensor(X)), "a": "one"}
        ),
        pydantic.ValidationError,  # HTTP 422 from apply
        ("inputs.a", "valid number"),
        good_torch(served("rosenbrock")),
    ),
    # -- missing / unknown fields --------------------------------------------------------
    Row(
        "jax-served-missing-field",
        lambda c: tess_ad.jax.apply_tesseract(
            c.served("rosenbrock"), {"a": 1.0, "b": 100.0}
        ),
        SchemaError,
        ("missing required field(s) 'x'",),
        good_jax(served("rosenbrock")),
    ),
    Row(
        "torch-missing-nested-field",
        lambda c: tess_ad.torch.apply_tesseract(
            c.local("nested"), nested_with(layers=None)
        ),
        SchemaError,
        ("missing required field(s) 'layers'",),
        good_nested,
    ),
    Row(
        "jax-unknown-field",
        lambda c: tess_ad.jax.apply_tesseract(
            c.local("rosenbrock"), {**rosen_inputs(), "z": 1.0}
        ),
        SchemaError,
        ("unknown field 'z'",),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "fd-unknown-nested-field",
        lambda c: tess_ad.with_finite_differences(
            c.local("nested")
        ).vector_jacobian_product(
            nested_with(layers0={"bogus": 1}),
            ["layers.[0].b"],
            ["summary.{sumsq}"],
            {"summary.{sumsq}": 1.0},
        ),
        SchemaError,
        ("unknown field 'layers.[0].bogus'",),
        good_nested,
    ),
    # -- None or a string where an array is expected --------------------------------------
    Row(
        "torch-none-for-array",
        lambda c: tess_ad.torch.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(None)
        ),
        SchemaError,
        ("inputs path 'x'", "got NoneType None"),
        good_torch(local("rosenbrock")),
    ),
    Row(
        "jax-string-for-array",
        lambda c: tess_ad.jax.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs("1, 2, 3")
        ),
        SchemaError,
        ("inputs path 'x'", "got str '1, 2, 3'"),
        good_jax(local("rosenbrock")),
    ),
    # -- non-finite finite differences ---------------------------------------------------
    Row(
        "fd-vjp-nan-input",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock")
        ).vector_jacobian_product(
            rosen_inputs(np.array([np.nan, 1.0, 0.5])), ["x"], ["loss"], {"loss": 1.0}
        ),
        FDNonFiniteError,
        ("output 'loss'", "input 'x' element [0] is perturbed"),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "fd-jvp-inf-input-served",
        lambda c: tess_ad.with_finite_differences(
            c.served("rosenbrock")
        ).jacobian_vector_product(
            rosen_inputs(np.array([1.0, np.inf])),
            ["x"],
            ["residuals"],
            {"x": np.ones(2)},
        ),
        FDNonFiniteError,
        ("output 'residuals'", "input 'x' is perturbed along the tangent"),
        good_fd(served("rosenbrock")),
    ),
    Row(
        "dropin-jacobian-nan-input",
        lambda c: tess_ad.finite_difference_jacobian(
            c.rosen_api.apply,
            c.rosen_model(np.array([0.5, np.nan])),
            {"x"},
            {"loss", "residuals"},
        ),
        FDNonFiniteError,
        ("output 'loss'", "input 'x' element [0] is perturbed"),
        good_dropin,
    ),
    # -- tangents and cotangents of the wrong shape ---------------------------------------------
    Row(
        "fd-jvp-tangent-shape",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock")
        ).jacobian_vector_product(rosen_inputs(), ["x"], ["loss"], {"x": np.ones(3)}),
        ValueError,
        ("tangent for input 'x' has shape (3,), expected (4,)",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "fd-vjp-cotangent-shape",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock")
        ).vector_jacobian_product(
            rosen_inputs(), ["x"], ["residuals"], {"residuals": np.ones(3)}
        ),
        ValueError,
        ("cotangent for output 'residuals' has shape (3,)", "output has shape (6,)"),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "dropin-jvp-tangent-shape",
        lambda c: tess_ad.finite_difference_jvp(
            c.rosen_api.apply, c.rosen_model(), {"x"}, {"loss"}, {"x": np.ones(1)}
        ),
        ValueError,
        ("tangent for input 'x' has shape (1,), expected (4,)",),
        good_dropin,
    ),
    Row(
        "dropin-vjp-cotangent-shape",
        lambda c: tess_ad.finite_difference_vjp(
            c.rosen_api.apply, c.rosen_model(), {"x"}, {"residuals"}, {"residuals": 1.0}
        ),
        ValueError,
        ("cotangent for output 'residuals' has shape ()", "output has shape (6,)"),
        good_dropin,
    ),
    Row(
        "jax-vjp-cotangent-shape",
        lambda c: jax.vjp(
            lambda x: tess_ad.jax.apply_tesseract(
                c.local("rosenbrock"), rosen_inputs(x)
            )["residuals"],
            jnp.asarray(X),
        )[1](jnp.ones(3)),
        ValueError,  # JAX's own check, before any Tesseract call
        ("got float64[3], but expected float64[6]",),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "jax-jvp-tangent-shape",
        lambda c: jax.jvp(
            lambda x: tess_ad.jax.apply_tesseract(
                c.local("rosenbrock"), rosen_inputs(x)
            )["loss"],
            (jnp.asarray(X),),
            (jnp.ones(3),),
        ),
        ValueError,  # JAX's own check
        ("primal shape (4,) and tangent shape as (3,)",),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "torch-backward-gradient-shape",
        lambda c: tess_ad.torch.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(torch.tensor(X, requires_grad=True))
        )["residuals"].backward(torch.ones(3, dtype=torch.float64)),
        RuntimeError,  # torch's own check
        ("grad_output[0] has a shape of torch.Size([3])",),
        good_torch(local("rosenbrock")),
    ),
    # -- finite-difference settings -----------------------------------------------------
    Row(
        "eps-unknown-path",
        fd_of(local("rosenbrock"), eps={"y": 1e-6}),
        ValueError,
        ("eps names 'y'", "'x'"),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "eps-names-a-static-input",
        fd_of(local("rosenbrock"), eps={"a": 1e-6}),
        ValueError,
        ("eps names 'a'", "not a differentiable input"),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "eps-zero",
        fd_of(local("rosenbrock"), eps=0.0),
        ValueError,
        ("eps must be a positive finite step, got 0.0",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "eps-negative-per-path",
        fd_of(local("rosenbrock"), eps={"x": -1e-6}),
        ValueError,
        ("eps['x'] must be a positive finite step",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "eps-not-a-number",
        fd_of(local("rosenbrock"), eps="small"),
        TypeError,
        ("eps must be a positive number, got 'small'",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "dropin-eps-zero",
        lambda c: tess_ad.finite_difference_jacobian(
            c.rosen_api.apply, c.rosen_model(), {"x"}, {"loss"}, eps=0.0
        ),
        ValueError,
        ("eps must be a positive finite step",),
        good_dropin,
    ),
    Row(
        "num-samples-zero",
        fd_of(local("rosenbrock"), method="stochastic", num_samples=0),
        ValueError,
        ("num_samples must be a positive integer, got 0",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "unknown-method",
        fd_of(local("rosenbrock"), method="backward"),
        ValueError,
        ("unknown finite-difference method 'backward'", "'central'"),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "dropin-unknown-algorithm",
        lambda c: tess_ad.finite_difference_vjp(
            c.rosen_api.apply,
            c.rosen_model(),
            {"x"},
            {"loss"},
            {"loss": 1.0},
            algorithm="backward",
        ),
        ValueError,
        ("unknown finite-difference method 'backward'",),
        good_dropin,
    ),
    Row(
        "dropin-unknown-input-path",
        lambda c: tess_ad.finite_difference_jacobian(
            c.rosen_api.apply, c.rosen_model(), {"y"}, {"loss"}
        ),
        ValueError,
        ("input path 'y' does not exist",),
        good_dropin,
    ),
    Row(
        "fd-static-input-differentiated",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock")
        ).vector_jacobian_product(rosen_inputs(), ["a"], ["loss"], {"loss": 1.0}),
        SchemaError,
        ("input 'a' is not marked Differentiable",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "fd-unknown-output",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock")
        ).vector_jacobian_product(rosen_inputs(), ["x"], ["lost"], {"lost": 1.0}),
        SchemaError,
        ("output 'lost' is not a Differentiable output",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "jax-unknown-vmap-method",
        lambda c: tess_ad.jax.apply_tesseract(
            c.local("rosenbrock"), rosen_inputs(), vmap_method="fast"
        ),
        ValueError,
        ("unknown vmap_method 'fast'",),
        good_jax(local("rosenbrock")),
    ),
    # -- executors and caches ---------------------------------------------------------
    Row(
        "executor-submit-raises",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock"), executor=shut_down_executor()
        ).vector_jacobian_product(rosen_inputs(), ["x"], ["loss"], {"loss": 1.0}),
        RuntimeError,  # the executor's own error, unchanged, with a note naming it
        (
            "cannot schedule new futures after shutdown",
            "evaluation 1 of 8 could not be submitted to the executor",
        ),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "executor-not-an-executor",
        fd_of(local("rosenbrock"), executor=object()),
        TypeError,
        ("executor must be a concurrent.futures.Executor",),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "cache-directory-unwritable",
        lambda c: tess_ad.with_finite_differences(
            c.local("rosenbrock"), cache=_file_in(c.tmp_path) / "cache"
        ),
        OSError,
        (
            lambda c: (
                f"cache directory {str(c.tmp_path / 'a-file' / 'cache')!r} is not writable"
            ),
        ),
        good_fd(local("rosenbrock")),
    ),
    # -- nothing listens at the URL -----------------------------------------------
    Row(
        "nothing-listens-fd",
        lambda c: tess_ad.with_finite_differences(dead(c)),
        TesseractConnectionError,
        (lambda c: f"cannot reach the Tesseract at {c.dead_url}", "with_retries"),
        good_fd(served("rosenbrock")),
    ),
    Row(
        "nothing-listens-jax",
        lambda c: tess_ad.jax.apply_tesseract(dead(c), rosen_inputs()),
        TesseractConnectionError,
        (lambda c: f"cannot reach the Tesseract at {c.dead_url}",),
        good_jax(served("rosenbrock")),
    ),
    Row(
        "nothing-listens-torch",
        lambda c: tess_ad.torch.apply_tesseract(dead(c), rosen_inputs(torch.tensor(X))),
        TesseractConnectionError,
        (lambda c: f"cannot reach the Tesseract at {c.dead_url}",),
        good_torch(served("rosenbrock")),
    ),
    Row(
        "nothing-listens-retries",
        lambda c: tess_ad.with_retries(dead(c), attempts=2, backoff=0.01),
        TesseractConnectionError,
        (
            lambda c: (
                f"openapi_schema at {c.dead_url}: connection failed after 2 attempt(s)"
            ),
        ),
        good_retries(served("rosenbrock")),
    ),
    Row(
        "nothing-listens-schema",
        lambda c: tess_ad.tesseract_schema(dead(c)),
        TesseractConnectionError,
        (lambda c: f"cannot reach the Tesseract at {c.dead_url}",),
        good_schema(served("rosenbrock")),
    ),
    # -- not a Tesseract client ----------------------------------------------------------
    Row(
        "schema-of-object-without-openapi",
        lambda c: tess_ad.tesseract_schema(OnlyApply()),
        TypeError,
        ("got OnlyApply, which lacks openapi_schema",),
        good_schema(local("rosenbrock")),
    ),
    Row(
        "fd-of-object-without-apply",
        lambda c: tess_ad.with_finite_differences(
            OnlySchema(c.local("rosenbrock").openapi_schema)
        ),
        TypeError,
        (
            "with_finite_differences expects a Tesseract client with an apply method",
            "got OnlySchema",
        ),
        good_fd(local("rosenbrock")),
    ),
    Row(
        "jax-on-a-plain-object",
        lambda c: tess_ad.jax.apply_tesseract(object(), rosen_inputs()),
        TypeError,
        ("got object, which lacks apply, openapi_schema",),
        good_jax(local("rosenbrock")),
    ),
    Row(
        "torch-on-object-without-openapi",
        lambda c: tess_ad.torch.apply_tesseract(
            OnlyApply(), rosen_inputs(torch.tensor(X))
        ),
        TypeError,
        ("got OnlyApply, which lacks openapi_schema",),
        good_torch(local("rosenbrock")),
    ),
    Row(
        "retries-of-object-without-apply",
        lambda c: tess_ad.with_retries(
            OnlySchema(c.local("rosenbrock").openapi_schema)
        ),
        TypeError,
        (
            "with_retries expects a Tesseract client with an apply method",
            "got OnlySchema",
        ),
        good_retries(local("rosenbrock")),
    ),
    # -- with_retries arguments ------------------------------------------------------
    Row(
        "retries-zero-attempts",
        lambda c: tess_ad.with_retries(c.local("rosenbrock"), attempts=0),
        ValueError,
        ("attempts must be a positive integer, got 0",),
        good_retries(local("rosenbrock")),
    ),
    Row(
        "retries-timeout-in-process",
        lambda c: tess_ad.with_retries(c.local("rosenbrock"), timeout=5.0),
        TypeError,
        ("timeout applies to served Tesseracts",),
        good_retries(local("rosenbrock")),
    ),
]


def _file_in(directory: Path) -> Path:
    """A regular file where a directory is expected (a cache path under it cannot be made).

    The tests run as root here, so permission bits would not stop a write;
    a file in the way does, for any user.
    """
    path = directory / "a-file"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(ctx, row):
    names = [name(ctx) if callable(name) else name for name in row.names]
    with pytest.raises(row.exc, match=re.escape(names[0])) as excinfo:
        row.bad(ctx)
    assert type(excinfo.value) is row.exc, (
        f"expected exactly {row.exc.__name__}, got {type(excinfo.value).__name__}: {excinfo.value}"
    )
    # what the user sees printed: the message and any notes added on the way up
    message = "".join(traceback.format_exception_only(excinfo.value))
    missing = [name for name in names if name not in message]
    assert not missing, f"the message does not name {missing}:\n{message}"
    row.good(ctx)  # nothing lost: the next good call works and is right


def test_the_table_covers_the_issue():
    """At least 20 kinds of bad input, over every public entry point named in issue 7."""
    assert len(ROWS) >= 20
    assert len({row.id for row in ROWS}) == len(ROWS)


# --------------------------------------------------------------------------
# NaN and Inf inputs reach the Tesseract
# --------------------------------------------------------------------------


# NumPy inside the rosenbrock Tesseract warns on inf - inf (its own arithmetic,
# not tess_ad's); the suite turns warnings into errors, so they are let through here.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("mode", ["jax-eager", "jax-jit", "torch", "fd-proxy-apply"])
def test_non_finite_inputs_reach_the_tesseract(local_tesseract, mode, bad):
    """Not an error: apply runs and its outputs show the NaN/Inf; gradients too."""
    client = local_tesseract("rosenbrock")
    x = np.array([bad, 1.0, 0.5])
    if mode == "torch":
        xt = torch.tensor(x, requires_grad=True)
        out = tess_ad.torch.apply_tesseract(client, rosen_inputs(xt))
        out["loss"].backward()
        loss, grad = out["loss"].item(), xt.grad.numpy()
    elif mode == "fd-proxy-apply":
        out = tess_ad.with_finite_differences(client).apply(rosen_inputs(x))
        loss, grad = float(out["loss"]), None
    else:

        def f(v):
            return tess_ad.jax.apply_tesseract(client, rosen_inputs(v))["loss"]

        fn = jax.value_and_grad(f)
        value, g = (jax.jit(fn) if mode == "jax-jit" else fn)(jnp.asarray(x))
        loss, grad = float(value), np.asarray(g)
    if np.isnan(bad):
        assert np.isnan(loss)
    else:
        assert loss == np.inf
    if grad is not None:
        # the VJP endpoint ran on the non-finite point and says so
        assert grad.shape == x.shape and not np.all(np.isfinite(grad))


# --------------------------------------------------------------------------
# The Tesseract itself raises
# --------------------------------------------------------------------------


def test_tesseract_raising_in_apply_under_jit_leaves_jax_usable():
    """The error reaches the user from a jit callback; the same jitted function then works.

    JAX re-raises an exception from a host callback as ``JaxRuntimeError``
    (a RuntimeError) whose message holds the original traceback, so the
    Tesseract's exception type and text are both in the message.
    """
    client = Tesseract.from_tesseract_api(str(RAISING_JAX))
    y = jax.jit(lambda x: tess_ad.jax.apply_tesseract(client, {"x": x})["y"])
    with pytest.raises(jax.errors.JaxRuntimeError) as excinfo:
        y(jnp.array([-1.0, 4.0])).block_until_ready()
    assert type(excinfo.value) is jax.errors.JaxRuntimeError
    assert "ValueError: raising-tesseract: x must be non-negative, got min -1.0" in str(
        excinfo.value
    )
    # the same compiled function, then a fresh one, and eager: all work
    np.testing.assert_array_equal(np.asarray(y(jnp.array([1.0, 4.0]))), [1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(y(jnp.array([9.0, 16.0]))), [3.0, 4.0])
    assert y._cache_size() == 1
    np.testing.assert_array_equal(
        np.asarray(tess_ad.jax.apply_tesseract(client, {"x": jnp.array([4.0])})["y"]),
        [2.0],
    )


def test_tesseract_raising_in_apply_leaves_torch_usable():
    """A failing forward leaves no half state: the next forward+backward works."""
    client = Tesseract.from_tesseract_api(str(RAISING_TORCH))
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(
        RuntimeError, match="apply refused these inputs on purpose"
    ) as excinfo:
        tess_ad.torch.apply_tesseract(client, {"x": x, "fail": "apply"})
    # in-process tesseract-core re-raises the Tesseract's error as RuntimeError with its traceback
    assert type(excinfo.value) is RuntimeError
    assert "ValueError: torch_raising: apply refused" in str(excinfo.value)
    assert x.grad is None
    out = tess_ad.torch.apply_tesseract(client, {"x": x, "fail": "never"})
    out["y"].sum().backward()
    torch.testing.assert_close(out["y"].detach(), x.detach() ** 2, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=0, atol=0)
