"""`tess-ad check`: every example passes, a wrong gradient fails with a useful table, bad input gives one line."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers import EXAMPLES, example_api, free_port, load_forward_ad_decompositions
from typer.testing import CliRunner

from tess_ad.cli import app

runner = CliRunner()
WRONG = Path(__file__).parent / "tesseracts" / "wrong_gradient"
WRONG_JVP = Path(__file__).parent / "tesseracts" / "wrong_jvp"
# apply works on non-negative inputs, the VJP endpoint always raises
RAISING = Path(__file__).parent / "jax_adapter" / "tesseracts" / "raising"
EXAMPLE_DIRS = sorted(
    p.name for p in EXAMPLES.iterdir() if (p / "tesseract_api.py").exists()
)


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_ad():
    load_forward_ad_decompositions()


def check(*args):
    return runner.invoke(app, ["check", *map(str, args)], catch_exceptions=False)


def check_wide(*args):
    """``check``, on a terminal wide enough that no line of the output wraps."""
    return runner.invoke(
        app,
        ["check", *map(str, args)],
        env={"COLUMNS": "400"},
        catch_exceptions=False,
    )


@pytest.mark.parametrize("name", EXAMPLE_DIRS)
def test_every_example_passes(name):
    result = check(EXAMPLES / name, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["failures"]
    names = [w["name"] for w in report["ways"]]
    assert names[-2:] == ["jax", "torch"] and "finite differences" in names
    assert report["ok"] and all(p["ok"] for w in report["ways"] for p in w["pairs"])
    assert all(w["error"] is None for w in report["ways"])


def test_the_main_job_prints_a_short_verdict_at_80_columns():
    result = runner.invoke(
        app, ["check", str(EXAMPLES / "rosenbrock")], env={"COLUMNS": "80"}
    )
    lines = result.stdout.rstrip("\n").splitlines()
    assert result.exit_code == 0
    assert len(lines) < 20 and max(len(line) for line in lines) <= 80, result.stdout
    assert lines[-1].startswith("OK: every way agrees")


def test_the_readme_shows_what_the_main_job_prints():
    """The README's block is the real output, seconds aside (run from the repository root)."""
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("At 80 columns it prints:\n\n```text\n", 1)[1].split("```")[0]
    result = subprocess.run(
        [sys.executable, "-m", "tess_ad", "check", "examples/rosenbrock"],
        cwd=root,
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    def shown(text):
        # seconds vary from run to run; trailing blanks are the table's padding
        lines = [
            re.sub(r"\b\d+\.\d\d\b", "S", line).rstrip() for line in text.splitlines()
        ]
        return "\n".join(lines).strip()

    assert result.returncode == 0, result.stderr
    assert shown(result.stdout) == shown(block)


def test_wrong_gradient_fails_with_the_worst_entry_and_tables_when_verbose():
    short = check(WRONG)
    assert short.exit_code == 1
    assert "DISAGREES d y / d x" in short.stdout and "FAILED" in short.stdout
    for way in ("VJP endpoint", "JVP endpoint"):
        assert f"- {way}: d y[2] / d x[2] is -0.42422" in short.stdout
    for way in ("jax", "torch"):  # checked along random directions: named by probe
        assert f"- {way}: VJP probe 1, d/d x[2] is" in short.stdout
    assert "max abs diff" not in short.stdout  # per-pair tables only with --verbose
    result = check(WRONG, "--verbose")
    assert result.exit_code == 1
    out = result.stdout
    # one table per way: its comparisons, each with the differences and a verdict
    assert "max abs diff" in out and "FAILED" in out
    rows = [line.split() for line in out.splitlines()]
    verdicts = {
        " ".join(r[:-3]): r[-1] for r in rows if r and r[-1] in ("agrees", "DISAGREES")
    }
    assert verdicts["d y / d x"] == "DISAGREES" and verdicts["d y / d s"] == "agrees"
    assert verdicts["VJP probe 1 (d/d x)"] == "DISAGREES"
    assert verdicts["VJP probe 1 (d/d s)"] == "agrees"


def test_rtol_option_decides_the_verdict():
    """The wrong slope is off by 15% of the block's largest entry: --rtol 0.2 lets it pass."""
    assert check(WRONG, "--rtol", "0.1").exit_code == 1
    report = json.loads(check(WRONG, "--rtol", "0.2", "--json").stdout)
    assert report["ok"] and report["rtol"] == 0.2


def test_progress_bar_of_the_sweep():
    shown = check(WRONG, "--progress", "--json")
    assert "16/16" in shown.stderr and "central differences" in shown.stderr
    hidden = check(WRONG, "--no-progress", "--json")
    assert "16/16" not in hidden.stderr


def test_json_report_of_wrong_gradient():
    report = json.loads(check(WRONG, "--json").stdout)
    assert report["reference"] == "finite differences" and not report["ok"]
    ways = {w["name"]: w for w in report["ways"]}
    assert list(ways) == [
        "finite differences",
        "VJP endpoint",
        "JVP endpoint",
        "jax",
        "torch",
    ]
    assert ways["finite differences"]["calls"] == {"apply": 16}  # 4n, n = 3 + 1
    assert ways["VJP endpoint"]["calls"] == {
        "vector_jacobian_product": 3
    }  # per output element
    assert ways["JVP endpoint"]["calls"] == {
        "jacobian_vector_product": 4
    }  # per input element
    # 3 probes: a VJP and a JVP each (the JVP's primal is an apply)
    assert ways["jax"]["calls"] == {
        "apply": 4,
        "jacobian_vector_product": 3,
        "vector_jacobian_product": 3,
    }
    assert ways["jax"]["calls_text"] == "4 apply, 3 JVP, 3 VJP"
    for name in ("VJP endpoint", "JVP endpoint"):
        by_input = {p["input"]: p for p in ways[name]["pairs"]}
        assert not by_input["x"]["ok"] and by_input["x"]["max_abs_diff"] > 0.05, name
        assert by_input["s"]["ok"], name


def test_a_wrong_jvp_cannot_hide_behind_a_right_vjp():
    """Each endpoint is checked on its own, not only the one the adapters use."""
    result = check(WRONG_JVP, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    # the adapters' forward mode goes through the wrong JVP endpoint too: their
    # JVP probes disagree, their VJP probes (through the right VJP) agree
    assert report["failures"] == [
        "JVP endpoint disagrees with finite differences on d y / d x",
        *(
            f"{way} disagrees with finite differences on JVP probe {k} (y)"
            for way in ("jax", "torch")
            for k in (1, 2, 3)
        ),
    ]
    names = [w["name"] for w in report["ways"]]
    assert names == [
        "finite differences",
        "jacobian endpoint",
        "VJP endpoint",
        "JVP endpoint",
        "jax",
        "torch",
    ]
    jac = next(w for w in report["ways"] if w["name"] == "jacobian endpoint")
    assert jac["calls"] == {"jacobian": 1} and all(p["ok"] for p in jac["pairs"])


def test_paths_and_method_options():
    report = json.loads(
        check(
            EXAMPLES / "nested",
            "--json",
            "--inputs-paths",
            "layers.[1].b",
            "--outputs-paths",
            "summary.{mean}",
            "--method",
            "forward",
        ).stdout
    )
    assert report["inputs_paths"] == ["layers.[1].b"] and report["outputs_paths"] == [
        "summary.{mean}"
    ]
    assert report["method"] == "forward" and report["rtol"] is None
    assert (
        report["reference"] == "finite differences"
    )  # nested has no gradient endpoints


@pytest.mark.served
def test_served_target(served_tesseract):
    t = served_tesseract("rosenbrock")
    url = t._client.url
    result = check(url, "--inputs", EXAMPLES / "rosenbrock" / "example_inputs.json")
    assert result.exit_code == 0, result.stdout
    assert "OK" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/tesseract"], "no such tesseract_api.py"),
        ([WRONG, "--inputs", WRONG / "bad.json"], "inputs do not match the schema"),
        ([WRONG, "--inputs", "/no/such.json"], "no such file"),
        ([WRONG, "--inputs-paths", "z"], "'z'"),
        ([WRONG, "--outputs-paths", "nope"], "'nope' is not a Differentiable output"),
        (["http://127.0.0.1:9"], "cannot reach a Tesseract at http://127.0.0.1:9"),
        ([EXAMPLES], "no such tesseract_api.py"),
    ],
)
def test_bad_targets_and_inputs_give_one_line(args, message):
    result = check(*args)
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert message in err
    assert (
        "Traceback" not in err and len(err.splitlines()) <= 3
    )  # one message (wrapped at most)


def test_debug_shows_traceback():
    result = runner.invoke(app, ["check", "/no/such/tesseract", "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_installed_script_runs():
    exe = Path(sys.executable).parent / "tess-ad"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tess_ad.cli"]
    proc = subprocess.run(
        [*cmd, "check", str(example_api("rosenbrock").parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every way agrees" in proc.stdout


FLOAT32_OFFSET = Path(__file__).parent / "tesseracts" / "float32_offset"
OFF_IN_ONE_ENTRY = Path(__file__).parent / "tesseracts" / "vjp_off_in_one_entry"


def test_a_correct_float32_tesseract_with_large_outputs_is_not_reported_wrong():
    """Outputs near 2e3 in float32: finite differences are off by more than the old
    fixed tolerance (2.4e-3 relative), but within their own estimated error."""
    result = check(FLOAT32_OFFSET, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["failures"]
    pairs = [p for w in report["ways"] for p in w["pairs"]]
    assert pairs and all(p["verdict"] != "disagrees" for p in pairs)
    assert max(p["max_rel_diff"] for p in pairs) > 2.4e-3


def test_a_vjp_wrong_by_a_thousandth_in_one_entry_is_caught_and_pinpointed():
    result = check(OFF_IN_ONE_ENTRY, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    assert report["failures"] == [
        "VJP endpoint disagrees with finite differences on d y / d x",
        *(
            f"{way} disagrees with finite differences on VJP probe {k} (d/d x)"
            for way in ("jax", "torch")
            for k in (1, 2, 3)
        ),
    ]
    vjp = next(w for w in report["ways"] if w["name"] == "VJP endpoint")
    worst = vjp["pairs"][0]["worst"]
    assert worst["index"] == [2, 2]
    assert worst["actual"] == pytest.approx(1.001 * worst["expected"], rel=1e-9)
    assert "VJP endpoint: d y[2] / d x[2] is 1.6016" in report["where"][0]
    printed = check(OFF_IN_ONE_ENTRY).stdout
    assert "- VJP endpoint: d y[2] / d x[2] is 1.6016" in printed
    # one line per way, the rest counted, and the frameworks traced to the endpoint
    assert "- jax: VJP probe 1, d/d x[2] is 2.1021" in printed
    assert "VJP probe 2" not in printed
    assert "(and 4 more like these: --verbose or --json)" in printed
    assert (
        "(jax and torch use the Tesseract's endpoints: they follow the VJP endpoint)"
        in printed
    )
    assert "VJP probe 2" in check(OFF_IN_ONE_ENTRY, "--verbose").stdout


def test_a_reference_too_noisy_to_judge_says_inconclusive(tmp_path):
    """A slope of 1e-4 under float32 outputs near 2e3: no finite difference can judge it."""
    inputs = tmp_path / "inputs.json"
    inputs.write_text(
        json.dumps(
            {
                "inputs": {
                    "x": [0.1, 0.7, -1.3],
                    "shift": [2e3, -1.5e3, 2.5e3],
                    "w": 1e-4,
                }
            }
        )
    )
    result = check(FLOAT32_OFFSET, "--inputs", inputs)
    assert result.exit_code == 0
    printed = result.stdout.replace("\n", " ")
    assert "inconclusive on" in printed and "d y / d x" in printed
    assert "--method richardson" in result.stdout
    report = json.loads(check(FLOAT32_OFFSET, "--inputs", inputs, "--json").stdout)
    verdicts = {p["verdict"] for w in report["ways"] for p in w["pairs"]}
    assert verdicts == {"inconclusive"}


def test_stochastic_is_refused_as_the_reference():
    result = runner.invoke(app, ["check", str(WRONG), "--method", "stochastic"])
    assert result.exit_code == 2
    assert "cannot be the reference" in result.stderr


def test_version_short_help_and_module_entry_point():
    import tess_ad

    assert (
        runner.invoke(app, ["--version"]).stdout.strip()
        == f"tess-ad {tess_ad.__version__}"
    )
    assert "--method" in runner.invoke(app, ["check", "-h"]).stdout
    done = subprocess.run(
        [sys.executable, "-m", "tess_ad", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"tess-ad {tess_ad.__version__}"


def test_help_shows_the_choices_and_a_bad_one_is_refused():
    wide = runner.invoke(app, ["check", "-h"], env={"COLUMNS": "200"}).stdout
    for choices in (
        "<central|richardson|forward|stochastic>",
        "<jax|torch>",
        "<jacobian|vjp|jvp>",
    ):
        assert choices in wide
    bad = runner.invoke(
        app, ["check", str(EXAMPLES / "rosenbrock"), "--method", "fast"]
    )
    assert bad.exit_code == 2
    assert "'fast' is not one of 'central', 'richardson'" in bad.stderr
    bad = runner.invoke(
        app, ["check", str(EXAMPLES / "rosenbrock"), "--endpoints", "x"]
    )
    assert bad.exit_code == 2 and "--endpoints" in bad.stderr


def test_which_inputs_file_is_used(tmp_path):
    """example_inputs.json first, then test_cases_inputs/, test_cases/ and *inputs*.json;
    the {"inputs": ...} wrapper is unwrapped even beside an endpoint's other arguments."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "tesseract_api.py").write_text((example_api("rosenbrock")).read_text())
    x = {"x": [0.5, -1.0, 2.0], "a": 1.0, "b": 100.0}
    # alphabetically first, but a JVP request: its inputs are still the inputs
    (folder / "example_jvp_inputs.json").write_text(
        json.dumps({"inputs": x, "jvp_inputs": ["x"], "jvp_outputs": ["loss"]})
    )
    report = json.loads(check(folder, "--json").stdout)
    assert report["inputs_file"].endswith("example_jvp_inputs.json") and report["ok"]
    (folder / "test_cases_inputs").mkdir()
    (folder / "test_cases_inputs" / "case.json").write_text(json.dumps({"inputs": x}))
    report = json.loads(check(folder, "--json").stdout)
    assert report["inputs_file"].endswith("case.json")
    (folder / "example_inputs.json").write_text(json.dumps({"inputs": x}))
    result = check(folder)
    assert f"inputs: {folder / 'example_inputs.json'}" in result.stdout.replace(
        "\n", ""
    )


FAILS = Path(__file__).parent / "tesseracts" / "fails_mid_sweep"


@pytest.mark.parametrize("message", ["x is beyond the limit", ""])
def test_an_apply_failing_mid_sweep_is_reported_once_with_exit_2(tmp_path, message):
    inputs = tmp_path / "inputs.json"
    inputs.write_text(
        json.dumps({"inputs": {"x": [0.5, 2.0, 1.0], "message": message}})
    )
    result = check(FAILS, "--inputs", inputs)
    assert result.exit_code == 2
    out = result.stdout.replace("\n", " ")
    shown = message or "(no message)"
    assert out.count(f"ValueError: {shown}") == 1, out
    assert "COULD NOT CHECK" in out and "Traceback" not in out
    report = json.loads(check(FAILS, "--inputs", inputs, "--json").stdout)
    assert report["status"] == "error" and not report["ok"]
    assert report["errors"][0]["way"] == "finite differences"
    assert report["errors"][0]["error"].startswith(f"ValueError: {shown}")


def test_frameworks_option_and_a_missing_framework_is_skipped(monkeypatch):
    report = json.loads(check(WRONG, "--json", "--frameworks", "jax").stdout)
    assert [w["name"] for w in report["ways"]][-1] == "jax"
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real(name, *a),
    )
    result = check(EXAMPLES / "rosenbrock")
    assert result.exit_code == 0
    assert "skipped torch: torch is not installed" in result.stdout.replace("\n", " ")
    bad = runner.invoke(app, ["check", str(WRONG), "--frameworks", "tensorflow"])
    assert bad.exit_code == 2 and "'tensorflow'" in bad.stderr


DEFAULTED = Path(__file__).parent / "tesseracts" / "defaulted_wrong"


def test_a_differentiable_input_left_at_its_default_is_checked():
    """``s`` is not in the example inputs; its default is filled in, differentiated
    and found wrong; --inputs-paths may name it."""
    report = json.loads(check(DEFAULTED, "--json").stdout)
    assert report["inputs_paths"] == ["x", "s"]
    assert (
        "VJP endpoint disagrees with finite differences on d y / d s"
        in report["failures"]
    )
    assert not any("d y / d x" in f for f in report["failures"])
    only_s = check(DEFAULTED, "--inputs-paths", "s")
    assert only_s.exit_code == 1


@pytest.mark.served
def test_a_defaulted_input_is_checked_on_a_served_tesseract(served_tesseract):
    from tess_ad._client import url_of

    url = url_of(served_tesseract("defaulted_wrong"))
    assert url is not None
    inputs = DEFAULTED / "example_inputs.json"
    report = json.loads(check(url, "--inputs", inputs, "--json").stdout)
    assert report["inputs_paths"] == ["x", "s"] and report["status"] == "disagrees"


def test_json_is_a_document_also_when_the_check_cannot_run(tmp_path):
    result = check(tmp_path / "missing", "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["status"] == "error" and not document["ok"]
    assert "no such tesseract_api.py" in document["errors"][0]["error"]


def test_check_gradients_option_names_and_endpoint_selection():
    """check-gradients' --input-paths/--output-paths/--eps, and --endpoints."""
    report = json.loads(
        check(
            WRONG_JVP,
            "--json",
            "--input-paths",
            "x",
            "--output-paths",
            "y",
            "--eps",
            "1e-6",
            "--endpoints",
            "jvp",
            "--frameworks",
            "jax",
        ).stdout
    )
    assert report["inputs_paths"] == ["x"] and report["outputs_paths"] == ["y"]
    assert [w["name"] for w in report["ways"]] == [
        "finite differences",
        "JVP endpoint",
        "jax",
    ]
    assert report["failures"][0] == (
        "JVP endpoint disagrees with finite differences on d y / d x"
    )
    assert all("jax" in f for f in report["failures"][1:])
    bad = runner.invoke(app, ["check", str(WRONG), "--endpoints", "hessian"])
    assert bad.exit_code == 2 and "'hessian'" in bad.stderr


# -- a URL where no Tesseract answers -------------------------------------------------


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _serve_how(port: int) -> str:
    return (
        f"Is it served? Start it with `tesseract serve NAME --port {port}` or "
        "`TESSERACT_API_PATH=path/to/tesseract_api.py tesseract-runtime serve "
        f"--port {port}`, and check the host and port in the URL."
    )


def test_a_refused_url_says_so_in_one_line_with_how_to_serve_and_json():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    result = check(url)
    assert time.monotonic() - start < 5  # refused at once: no retries, no waiting
    assert result.exit_code == 2
    what = (
        f"cannot reach a Tesseract at {url}: connection refused (nothing is "
        f"listening on 127.0.0.1 port {port})"
    )
    assert _one_line(result) == f"error: {what}. {_serve_how(port)}"
    as_json = check(url, "--json")
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout) == {
        "target": url,
        "status": "error",
        "ok": False,
        "errors": [{"way": None, "error": what, "hint": _serve_how(port)}],
    }


def test_a_host_that_does_not_resolve_says_host_not_found():
    result = check(
        "http://no-such-host.invalid:8000"
    )  # .invalid never resolves (RFC 6761)
    assert result.exit_code == 2
    assert _one_line(result) == (
        "error: cannot reach a Tesseract at http://no-such-host.invalid:8000: host "
        "not found ('no-such-host.invalid' does not resolve). Check the host name "
        "in the URL."
    )


def test_a_server_that_never_answers_times_out_within_the_probe_timeout(monkeypatch):
    """A socket that listens but never answers: the connection is made, the GET hangs."""
    import tess_ad._check_target

    monkeypatch.setattr(tess_ad._check_target, "PROBE_TIMEOUT", (2.0, 0.5))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        start = time.monotonic()
        result = check(f"http://127.0.0.1:{port}")
        assert time.monotonic() - start < 5
    assert result.exit_code == 2
    assert _one_line(result) == (
        f"error: cannot reach a Tesseract at http://127.0.0.1:{port}: timed out "
        f"(connected to 127.0.0.1 port {port}, but GET /openapi.json got no answer "
        "within 0.5 s). Is the server stuck or busy? Check that this port serves "
        "a Tesseract, and that its GET /health answers."
    )


@pytest.fixture
def plain_http_server(tmp_path):
    """``python -m http.server`` on a free loopback port, serving tmp_path: not a Tesseract."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"python -m http.server did not start on {url}"
                    ) from exc
                time.sleep(0.1)
        yield url, port, tmp_path
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_another_http_server_is_not_a_tesseract(plain_http_server):
    url, port, served_dir = plain_http_server
    result = check(url)
    assert result.exit_code == 2
    answered = (
        f"cannot reach a Tesseract at {url}: the server on 127.0.0.1 port {port} "
        "answered, but is not a Tesseract"
    )
    assert _one_line(result) == (
        f"error: {answered} (GET /openapi.json gave HTTP 404 File not found). "
        f"{_serve_how(port)}"
    )
    # an /openapi.json that is not a Tesseract's
    (served_dir / "openapi.json").write_text(json.dumps({"paths": {"/items": {}}}))
    document = json.loads(check(url, "--json").stdout)
    assert document["errors"] == [
        {
            "way": None,
            "error": f"{answered} (its /openapi.json has no /apply endpoint)",
            "hint": _serve_how(port),
        }
    ]


# -- a served Tesseract that raises ------------------------------------------------------


@pytest.mark.served
@pytest.mark.parametrize(
    ("debug", "message", "shown"),
    [
        (
            False,
            "x is beyond the limit",
            "HTTP 500 from the served Tesseract: Internal Server Error",
        ),
        (
            True,
            "x is beyond the limit",
            "ValueError: x is beyond the limit (in the served Tesseract's apply)",
        ),
        (True, "", "ValueError: (no message) (in the served Tesseract's apply)"),
    ],
)
def test_a_served_tesseract_raising_mid_sweep(
    served_tesseract, tmp_path, debug, message, shown
):
    """A bare 500 gets the TESSERACT_DEBUG=1 hint; from a debug server, the
    Tesseract's own exception and endpoint are shown instead (and no hint)."""
    from tess_ad._check_errors import SERVED_500_HINT
    from tess_ad._client import url_of

    url = url_of(served_tesseract("fails_mid_sweep", debug=debug))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(
        json.dumps({"inputs": {"x": [0.5, 2.0, 1.0], "message": message}})
    )
    result = check_wide(url, "--inputs", inputs, "--frameworks", "jax")
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines.count(f"error in finite differences: {shown}") == 1, result.stdout
    hints = [line for line in lines if line.startswith("hint:")]
    assert hints == ([f"hint: {SERVED_500_HINT}"] if not debug else []), result.stdout
    assert lines[-1] == "COULD NOT CHECK: the Tesseract raised (above)."
    assert "Traceback" not in result.stdout
    report = json.loads(
        check(url, "--inputs", inputs, "--frameworks", "jax", "--json").stdout
    )
    assert report["status"] == "error"
    assert report["errors"] == [
        {
            "way": "finite differences",
            "error": shown,
            "hint": None if debug else SERVED_500_HINT,
        }
    ]


@pytest.mark.served
def test_a_served_500_hint_is_printed_once_for_every_way_it_explains(tmp_path):
    """The VJP endpoint fails: the VJP, jax and torch ways all get a bare 500."""
    from helpers import Server

    from tess_ad._check_errors import SERVED_500_HINT

    server = Server(RAISING / "tesseract_api.py").start()
    try:
        inputs = tmp_path / "inputs.json"
        inputs.write_text(json.dumps({"inputs": {"x": [1.0, 4.0]}}))
        result = check_wide(server.url, "--inputs", inputs)
    finally:
        server.stop()
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    bare = "HTTP 500 from the served Tesseract: Internal Server Error"
    for way in ("VJP endpoint", "jax", "torch"):
        assert f"error in {way}: {bare}" in lines, result.stdout
    assert result.stdout.count("TESSERACT_DEBUG=1") == 1
    assert (
        lines.index(f"hint: {SERVED_500_HINT}")
        == lines.index(f"error in torch: {bare}") + 1
    )


@pytest.mark.served
def test_a_served_apply_failing_at_the_inputs_is_one_line_with_the_hint(
    served_tesseract, tmp_path
):
    from tess_ad._check_errors import SERVED_500_HINT
    from tess_ad._client import url_of

    url = url_of(served_tesseract("fails_mid_sweep"))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"inputs": {"x": [3.0]}}))
    result = check(url, "--inputs", inputs)
    assert result.exit_code == 2
    what = "apply failed at these inputs: HTTP 500 from the served Tesseract: Internal Server Error"
    assert _one_line(result) == f"error: {what}. {SERVED_500_HINT}"
    document = json.loads(check(url, "--inputs", inputs, "--json").stdout)
    assert document["errors"] == [{"way": None, "error": what, "hint": SERVED_500_HINT}]


NAN_VJP = Path(__file__).parent / "tesseracts" / "nan_vjp"
WRONG_SHAPE = Path(__file__).parent / "tesseracts" / "jacobian_wrong_shape"


def test_a_nan_gradient_disagrees_and_the_json_stays_strict():
    """NaN compares false with everything: `|a - b| > tol` would let it pass."""
    result = check(NAN_VJP, "--json", "--frameworks", "jax")
    assert result.exit_code == 1

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON document")

    report = json.loads(result.stdout, parse_constant=refuse)
    vjp = next(w for w in report["ways"] if w["name"] == "VJP endpoint")
    (pair,) = vjp["pairs"]
    assert pair["verdict"] == "disagrees" and pair["not_finite"] == 3
    assert pair["max_abs_diff"] == "inf" and pair["worst"]["actual"] == "nan"
    # the worst entry: the NaN where the derivative is largest (the diagonal)
    assert report["where"][0].startswith(
        "VJP endpoint: d y[1] / d x[1] is nan; finite differences: 0.724716 ± "
    )


def test_a_block_of_the_wrong_shape_is_named_and_outranks_errors_it_causes():
    result = runner.invoke(app, ["check", str(WRONG_SHAPE)], env={"COLUMNS": "200"})
    assert result.exit_code == 1  # found wrong, though the adapters raised too
    out = result.stdout
    assert (
        "- jacobian endpoint: d y / d x has shape (3, 2), finite differences (2, 3)"
        in out
    )
    for way in ("jax", "torch"):
        assert (
            f"error in {way}: RuntimeError: the Tesseract's jacobian endpoint "
            "returned shape (3, 2) for dy/dx, expected (2, 3)"
        ) in out
    assert "COULD NOT CHECK" not in out and "FAILED" in out


def test_float32_arithmetic_behind_a_float64_output_is_not_reported_wrong():
    """tesseract-core's vectoradd computes `a * s + b` in float32 and declares the
    result Float64: its exact jacobian used to disagree with finite differences
    whose error estimate trusted the float64 output (off by 2e-5, allowed 1e-6)."""
    result = check(Path(__file__).parent / "tesseracts" / "float32_inside", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["where"]
    assert {p["verdict"] for w in report["ways"] for p in w["pairs"]} == {"agrees"}
