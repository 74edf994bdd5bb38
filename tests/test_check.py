"""tess_ad._check: the gradient-check engine as a Python API, on real Tesseracts.

``check_gradients`` returns the report ``tess-ad check --json`` prints;
``assert_gradients`` is the helper a user's test suite calls. The fixtures are
the ones ``tests/test_cli.py`` runs the command on.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import Spy, load_forward_ad_decompositions

import tess_ad

HERE = Path(__file__).parent / "tesseracts"
ROSENBROCK = {"x": np.array([0.5, -1.0, 2.0]), "a": 1.0, "b": 100.0}


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_ad():
    # torch's forward AD (the PyTorch way's JVP probes), where torch is installed;
    # these tests check the JAX way at most, and run without torch (dev/test.sh)
    if importlib.util.find_spec("torch") is not None:
        load_forward_ad_decompositions()


def test_a_correct_tesseract_agrees_and_the_report_is_its_json(local_tesseract):
    client = local_tesseract("rosenbrock")
    with Spy(client) as spy:
        report = tess_ad.check_gradients(client, ROSENBROCK, frameworks=())
    assert isinstance(report, tess_ad.Report)
    assert report.ok and report.status == "agrees" and report.failures == []
    assert [w["name"] for w in report["ways"]] == [
        "finite differences",
        "jacobian endpoint",
        "VJP endpoint",
        "JVP endpoint",
    ]
    # the reference: central differences at two steps (4n) plus the base apply
    assert spy.calls["apply"] == 4 * 3 + 1
    assert json.loads(report.to_json())["status"] == "agrees"
    assert dict(report)["ok"] is True


def test_a_wrong_entry_is_pinpointed(local_tesseract):
    client = local_tesseract("vjp_off_in_one_entry")
    x = np.array([0.3, -1.2, 0.8, 2.0, -0.5])
    report = tess_ad.check_gradients(client, {"x": x}, frameworks=("jax",))
    assert report.status == "disagrees" and not report.ok
    assert report.failures == [
        "VJP endpoint disagrees with finite differences on d y / d x",
        *(
            f"jax disagrees with finite differences on VJP probe {k} (d/d x)"
            for k in (1, 2, 3)
        ),
    ]
    assert report.where[1].startswith("jax: VJP probe 1, d/d x[2] is")
    assert report.where[0].startswith("VJP endpoint: d y[2] / d x[2] is 1.6016")


def test_assert_gradients_for_a_users_test_suite(local_tesseract):
    assert tess_ad.assert_gradients(
        local_tesseract("rosenbrock"), ROSENBROCK, frameworks=()
    ).ok
    wrong = local_tesseract("defaulted_wrong")
    with pytest.raises(
        AssertionError,
        match=r"VJP endpoint: d y\[2\] / d s is 4; finite differences: 2 ± ",
    ) as info:
        tess_ad.assert_gradients(
            wrong, {"x": np.array([0.5, -1.0, 2.0])}, frameworks=()
        )
    assert "defaulted_wrong/tesseract_api.py: disagrees" in str(info.value)


def test_a_tesseract_that_raises_is_an_error_not_a_disagreement(local_tesseract):
    client = local_tesseract("fails_mid_sweep")
    report = tess_ad.check_gradients(
        client, {"x": np.array([0.5, 2.0, 1.0])}, frameworks=()
    )
    assert report.status == "error"
    assert report["errors"][0]["error"].startswith("ValueError: x is beyond the limit")
    with pytest.raises(AssertionError, match="error in finite differences: ValueError"):
        tess_ad.assert_gradients(
            client, {"x": np.array([0.5, 2.0, 1.0])}, frameworks=()
        )


@pytest.mark.served
def test_a_served_500_is_an_error_whose_hint_the_summary_carries_once(
    served_tesseract,
):
    """The reference meets the bare 500 of an apply failing mid sweep."""
    from tess_ad._check_errors import SERVED_500_HINT

    client = served_tesseract("fails_mid_sweep")
    report = tess_ad.check_gradients(
        client, {"x": np.array([0.5, 2.0, 1.0])}, frameworks=()
    )
    bare = "HTTP 500 from the served Tesseract: Internal Server Error"
    assert report.status == "error"
    assert report["errors"] == [
        {"way": "finite differences", "error": bare, "hint": SERVED_500_HINT}
    ]
    assert report.hints == [SERVED_500_HINT]
    lines = report.summary().splitlines()
    assert lines[1:] == [
        f"  - error in finite differences: {bare}",
        f"  hint: {SERVED_500_HINT}",
    ]


def _client_error(status: int, body: str) -> RuntimeError:
    """What tesseract-core's HTTPClient raises for an error answer (its exact text)."""
    return RuntimeError(f"Error {status} from Tesseract: {body}")


def _wrapped(exc: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("while differentiating") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "line", "hinted"),
    [
        (
            _client_error(500, "Internal Server Error"),
            "HTTP 500 from the served Tesseract: Internal Server Error",
            True,
        ),
        (
            _wrapped(_client_error(500, "Internal Server Error")),
            "HTTP 500 from the served Tesseract: Internal Server Error",
            True,
        ),
        (
            _client_error(404, '{"detail":"Not Found"}'),
            'HTTP 404 from the served Tesseract: {"detail":"Not Found"}',
            False,
        ),
        # "500" and "Internal Server Error" in a message are not an HTTP status
        (
            ValueError("Error 500 from Tesseract: Internal Server Error"),
            "ValueError: Error 500 from Tesseract: Internal Server Error",
            False,
        ),
        (
            RuntimeError("step 500 of 1000 failed: Internal Server Error"),
            "RuntimeError: step 500 of 1000 failed: Internal Server Error",
            False,
        ),
    ],
)
def test_the_served_500_hint_is_keyed_on_the_clients_error_and_status(
    exc, line, hinted
):
    from tess_ad._check_errors import SERVED_500_HINT, _first_line, _hint

    assert _first_line(exc) == line
    assert _hint(exc) == (SERVED_500_HINT if hinted else None)


def test_bad_inputs_and_options_raise_a_check_error(local_tesseract):
    client = local_tesseract("rosenbrock")
    with pytest.raises(tess_ad.CheckError, match="do not match the schema"):
        tess_ad.check_gradients(client, {"x": "nope", "a": 1.0, "b": 100.0})
    with pytest.raises(ValueError, match="cannot be the reference"):
        tess_ad.check_gradients(client, ROSENBROCK, method="stochastic")
    with pytest.raises(ValueError, match="'nope'"):
        tess_ad.check_gradients(client, ROSENBROCK, input_paths=["nope"])


@pytest.mark.parametrize("n", [4, 12])
def test_framework_rows_of_an_apply_only_tesseract_cost_a_few_applies(
    local_tesseract, n
):
    """Without gradient endpoints the adapters go through finite differences of
    apply: their VJP probes reuse the reference's evaluations (the same points),
    so a framework row costs a few applies per probe whatever the input size,
    while the reference costs 4 per input element."""
    client = local_tesseract(HERE / "smooth")
    frameworks = ["jax"] + (["torch"] if importlib.util.find_spec("torch") else [])
    x64 = np.linspace(-0.9, 1.3, n)
    inputs = {"x64": x64, "x32": np.array([0.2, 0.4], np.float32)}
    with Spy(client) as spy:
        report = tess_ad.check_gradients(
            client,
            inputs,
            input_paths=["x64"],
            output_paths=["y64"],
            frameworks=frameworks,
            probes=3,
        )
    assert report.ok, report.summary()
    calls = {w["name"]: w["calls"] for w in report["ways"]}
    assert list(calls) == ["finite differences", *frameworks]
    assert calls["finite differences"] == {"apply": 4 * n}
    # every apply that reached the Tesseract is counted in one row (plus the base)
    assert spy.made() == {"apply": 1 + sum(c["apply"] for c in calls.values())}
    # jax: per tangent, its 2 points, 2 more for their error estimate and a
    # primal apply, plus one; torch reuses those points
    assert calls["jax"]["apply"] <= 5 * 3 + 1
    if "torch" in calls:
        assert calls["torch"]["apply"] <= 3 + 1
    assert "reusing the reference's evaluations" in report["ways"][1]["via"]


def test_an_apply_only_tesseract_of_two_precisions_is_not_reported_wrong(
    local_tesseract,
):
    """float64 and float32 inputs moved together: the frameworks' directional
    differences take one step sized for float32, less accurate on the float64
    part than the reference's per-element steps. Each JVP probe is allowed its
    own estimated error, so a correct Tesseract does not disagree (it may be
    inconclusive where float32 noise swamps an entry, and says so)."""
    client = local_tesseract(HERE / "smooth")
    frameworks = ["jax"] + (["torch"] if importlib.util.find_spec("torch") else [])
    for n in (3, 12):
        inputs = {
            "x64": np.linspace(-0.9, 1.3, n),
            "x32": np.linspace(-0.5, 0.8, n).astype(np.float32),
        }
        report = tess_ad.check_gradients(client, inputs, frameworks=frameworks)
        assert report.ok, report.summary()
        pairs = [p for w in report["ways"] for p in w["pairs"]]
        assert {p["verdict"] for p in pairs} <= {"agrees", "inconclusive"}
        # the float64 output is judged, not waved through as inconclusive
        assert any(p["verdict"] == "agrees" and p["output"] == "y64" for p in pairs), (
            report.summary()
        )


@pytest.mark.served
def test_a_server_lost_mid_check_is_one_line_with_what_to_do():
    """The proxy's advice about its cache (a temporary one here, gone after the
    check) and retries is not passed on: the check says what was lost and to rerun."""
    from helpers import Server, example_api
    from tesseract_core import Tesseract

    from tess_ad._check_errors import LOST_HINT

    server = Server(example_api("sleepy")).start()
    try:
        t = Tesseract.from_url(server.url)
        real_apply = t.apply
        calls = []

        def apply_then_die(*args, **kwargs):
            calls.append(1)
            if len(calls) == 6:
                server.stop()  # the simulator dies in the middle of the sweep
            return real_apply(*args, **kwargs)

        t.apply = apply_then_die
        inputs = json.loads(
            (example_api("sleepy").parent / "example_inputs.json").read_text()
        )
        report = tess_ad.check_gradients(t, inputs.get("inputs", inputs), frameworks=())
    finally:
        server.stop()
    assert report.status == "error"
    (error,) = report["errors"]
    assert error["way"] == "finite differences"
    assert error["error"] == (
        f"TesseractConnectionError: lost the connection to {server.url} during "
        "apply (ConnectionError)"
    )
    assert error["hint"] == LOST_HINT and "cache" not in report.summary()


def test_a_probe_product_zero_by_cancellation_is_judged_against_its_terms(
    local_tesseract,
):
    """Rosenbrock at (1, 2): the gradient is (-400, 200) and seed 0 draws the
    tangents -(1, 2), so every JVP probe is 400 - 400 = 0. A zero is no sign of
    a noisy reference: a 10% error in the Jacobian would move it by 10% of its
    terms (800), which the reference resolves easily."""
    client = local_tesseract("rosenbrock")
    report = tess_ad.check_gradients(
        client,
        {"x": [1.0, 2.0], "a": 1.0, "b": 100.0},
        frameworks=("jax",),
        output_paths=["loss"],
    )
    jax_way = next(w for w in report["ways"] if w["name"] == "jax")
    jvps = [p for p in jax_way["pairs"] if p["input"].startswith("JVP probe")]
    assert len(jvps) == 3
    assert all(abs(p["worst"]["expected"]) < 1e-6 for p in jvps)  # cancelled
    assert {p["verdict"] for p in jax_way["pairs"]} == {"agrees"}
    assert report.inconclusive == []
