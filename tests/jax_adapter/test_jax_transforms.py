"""Every JAX transformation, eager and under jit, against pure-JAX references.

Cases: rosenbrock (analytic endpoints, float64), float32 (analytic, float32,
no jacobian endpoint), nested (apply only, nested dict/list inputs with
static leaves in between, wrapped in with_finite_differences), rosenbrock
wrapped in with_finite_differences, and meshstats_fd (server-side FD
endpoints, a 2-D leaf inside a model next to static dicts of arrays and a
string); in-process and served clients.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import assert_trees_close
from jax_adapter_refs import TRANSFORMS, maybe_jit, probe_vectors, transforms_for

from tess_ad.jax import apply_tesseract

CASE_KINDS = [
    ("rosenbrock", "local"),
    ("rosenbrock", "served"),
    ("float32", "local"),
    ("float32", "served"),
    ("nested_fd", "local"),
    ("nested_fd", "served"),
    ("rosenbrock_fd", "local"),
    ("meshstats_fd", "local"),
]


def _functions(case, client):
    def f(a):
        return case.scalar(apply_tesseract(client, case.build(a)))

    def v(a):
        return case.vector(apply_tesseract(client, case.build(a)))

    def f_ref(a):
        return case.scalar(case.ref(case.build(a)))

    def v_ref(a):
        return case.vector(case.ref(case.build(a)))

    return f, v, f_ref, v_ref


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(
    ("case_name", "kind", "transform"),
    [(c, k, t) for c, k in CASE_KINDS for t in transforms_for(c)],
)
def test_transform_matches_reference(case_client, case_name, kind, transform, mode):
    case, client = case_client(case_name, kind)
    tangent, cotangent, batch = probe_vectors(case)
    f, v, f_ref, v_ref = _functions(case, client)
    if mode == "jit" and case.example == "nested":
        # nested has no abstract_eval and free output shapes: one eager call
        # records them (the documented way to jit such a Tesseract).
        apply_tesseract(client, case.build(case.args))
    run = TRANSFORMS[transform]

    got = maybe_jit(lambda a, t, c, b: run(f, v, a, t, c, b), mode)(
        case.args, tangent, cotangent, batch
    )
    want = run(f_ref, v_ref, case.args, tangent, cotangent, batch)

    if transform == "hessian":
        assert_trees_close(got, want, rtol=case.hess_rtol, atol=case.hess_atol)
    else:
        assert_trees_close(got, want, rtol=case.rtol, atol=case.atol)
    got_dtypes = [np.asarray(x).dtype for x in jax.tree.leaves(got)]
    want_dtypes = [np.asarray(x).dtype for x in jax.tree.leaves(want)]
    assert got_dtypes == want_dtypes


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("case_name", "kind"), CASE_KINDS)
def test_outputs_match_reference(case_client, case_name, kind, mode):
    """The outputs themselves, with the schema's dtypes, eager and jitted."""
    case, client = case_client(case_name, kind)
    if mode == "jit" and case.example == "nested":
        apply_tesseract(client, case.build(case.args))
    got = maybe_jit(lambda a: apply_tesseract(client, case.build(a)), mode)(case.args)
    want = case.ref(case.build(case.args))
    got_diff = {k: got[k] for k in want}
    assert_trees_close(
        got_diff, want, rtol=1e-6 if case.example == "float32" else 1e-13, atol=1e-12
    )
    for g, w in zip(jax.tree.leaves(got_diff), jax.tree.leaves(want), strict=True):
        assert isinstance(g, jax.Array)
        assert g.dtype == w.dtype
