"""tess_ad._vmap: the vmap decisions both adapters share, and the loop over a batch.

``plan`` is tesseract-jax's ``vmap_method`` contract as a table; the adapters'
own tests (``test_jax_vmap.py``, ``test_torch_vmap.py``) check the calls it
leads to. ``LoopedEndpoints`` is checked against per-element ``Endpoints``
calls on the in-process ``batched_rosenbrock`` test Tesseract, with its
call counts.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import Spy

from tess_ad._endpoints import Endpoints
from tess_ad._vmap import LoopedEndpoints, check_options, per_element, plan

XS = np.array([[-1.2, 1.0], [0.5, 1.5], [1.0, 2.0]])
Y = np.array([0.3, 0.7])

# per input: carries, scalar, rank_free, differentiable
FREE_DIFF = (True, False, True, True)
SHARED_FREE = (False, False, True, True)
SHARED_FIXED = (False, False, False, True)
SHARED_SCALAR = (False, True, False, False)
BATCHED_FIXED = (True, False, False, True)
BATCHED_FREE_CONST = (True, False, True, False)


def run_plan(method, *inputs):
    return plan(method, *zip(*inputs, strict=True))


@pytest.mark.parametrize(
    ("method", "inputs", "expected"),
    [
        (None, [FREE_DIFF, SHARED_FREE], None),
        ("sequential", [FREE_DIFF, SHARED_FREE], None),
        (
            "expand_dims",
            [FREE_DIFF, SHARED_FREE, SHARED_SCALAR],
            ["batch", "expand", "keep"],
        ),
        (
            "broadcast_all",
            [FREE_DIFF, SHARED_FREE, SHARED_SCALAR],
            ["batch", "broadcast", "keep"],
        ),
        # expand_dims/broadcast_all do as told, even on a fixed rank (the adapters refuse it then)
        ("expand_dims", [BATCHED_FIXED], ["batch"]),
        ("auto_experimental", [FREE_DIFF, SHARED_FIXED], ["batch", "expand"]),
        (
            "auto_experimental",
            [BATCHED_FREE_CONST],
            None,
        ),  # looks at differentiable inputs only
        ("auto_experimental", [BATCHED_FIXED], None),
        ("auto", [FREE_DIFF, SHARED_FIXED, SHARED_FREE], ["batch", "keep", "expand"]),
        ("auto", [BATCHED_FREE_CONST], ["batch"]),  # reads every input's schema
        ("auto", [BATCHED_FIXED], None),
        ("expand_dims", [(True, True, False, False)], None),  # a batched Python number
    ],
)
def test_plan(method, inputs, expected):
    assert run_plan(method, *inputs) == expected


@pytest.mark.parametrize(
    ("method", "workers", "match"),
    [
        ("magic", None, "vmap_method"),
        (None, 0, "vmap_workers"),
        (None, True, "vmap_workers"),
    ],
)
def test_check_options_names_the_argument(method, workers, match):
    with pytest.raises(ValueError, match=match):
        check_options(method, workers, "f")


def test_per_element_keeps_the_order():
    assert per_element(lambda b: b * b, 8, 4) == [b * b for b in range(8)]
    assert per_element(lambda b: b * b, 3, None) == [0, 1, 4]


def test_per_element_runs_the_workers_at_once():
    """Two elements that each wait for the other finish only if they run together."""
    barrier = threading.Barrier(2, timeout=10)

    def fn(b):
        barrier.wait()
        return b

    assert per_element(fn, 2, 2) == [0, 1]


@pytest.fixture
def batched(local_tesseract):
    return local_tesseract("batched_rosenbrock")


def flat(endpoints, x, y):
    return endpoints.schema.inputs.flatten({"x": x, "y": y})


@pytest.mark.parametrize("workers", [None, 3])
def test_looped_apply_and_vjp_match_per_element_calls(batched, workers):
    """``x`` is batched, ``y`` shared: its gradient is the sum over the elements."""
    base = Endpoints(batched)
    looped = LoopedEndpoints(base, len(XS), ["x"], workers)
    inputs = flat(base, XS, Y)
    with Spy(batched) as spy:
        out = looped.apply(inputs)
    assert spy.calls["apply"] == len(XS)
    expected = np.stack([base.apply(flat(base, x, Y))["result"].value for x in XS])
    np.testing.assert_array_equal(out["result"].value, expected)

    ct = np.arange(6.0).reshape(3, 2)
    with Spy(batched) as spy:
        grads = looped.vjp(inputs, ["x", "y"], ["result"], {"result": ct})
    assert spy.calls["vector_jacobian_product"] == len(XS)
    rows = [
        base.vjp(flat(base, x, Y), ["x", "y"], ["result"], {"result": c})
        for x, c in zip(XS, ct, strict=True)
    ]
    np.testing.assert_array_equal(grads["x"], np.stack([r["x"] for r in rows]))
    np.testing.assert_array_equal(
        grads["y"], rows[0]["y"] + rows[1]["y"] + rows[2]["y"]
    )


def test_looped_jvp_slices_the_tangents_of_batched_inputs(batched):
    base = Endpoints(batched)
    looped = LoopedEndpoints(base, len(XS), ["x"], None)
    tx = np.ones_like(XS)
    ty = np.array([0.5, -0.5])
    shapes = {"result": (len(XS), 2)}
    out = looped.jvp(
        flat(base, XS, Y), ["x", "y"], ["result"], {"x": tx, "y": ty}, shapes
    )
    expected = np.stack(
        [
            base.jvp(
                flat(base, x, Y),
                ["x", "y"],
                ["result"],
                {"x": t, "y": ty},
                {"result": (2,)},
            )["result"]
            for x, t in zip(XS, tx, strict=True)
        ]
    )
    np.testing.assert_array_equal(out["result"], expected)


def test_looped_many_keeps_the_rows_first(batched):
    base = Endpoints(batched)
    looped = LoopedEndpoints(base, len(XS), ["x", "y"], None)
    ys = np.stack([Y, Y + 1.0, Y - 1.0])
    rows = np.stack([np.eye(2)] * len(XS), axis=1)  # (2 rows, 3 elements, 2)
    grads = looped.vjp_many(flat(base, XS, ys), ["x"], ["result"], {"result": rows})
    assert grads["x"].shape == (2, len(XS), 2)
    for b in range(len(XS)):
        one = base.vjp_many(
            flat(base, XS[b], ys[b]), ["x"], ["result"], {"result": np.eye(2)}
        )
        np.testing.assert_array_equal(grads["x"][:, b], one["x"])
