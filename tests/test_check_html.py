"""`tess-ad check --report FILE.html`: the page, its heatmaps' data, and how it renders in a browser.

The browser test opens the page in headless Chromium (Debian's `chromium`,
which `.ci/run` installs when it is absent), lets a probe script count the
images the browser decoded, and screenshots it. Without Chromium it is
skipped, unless `TESS_AD_REQUIRE_CHROMIUM` is set (as `.ci/run` does), where
a missing browser fails the test instead of hiding it.
"""

import base64
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import EXAMPLES, load_forward_ad_decompositions
from typer.testing import CliRunner

from tess_ad.cli import app

runner = CliRunner()
TESSERACTS = Path(__file__).parent / "tesseracts"
OFF_IN_ONE_ENTRY = TESSERACTS / "vjp_off_in_one_entry"
# A probe appended to a copy of the page: after load, the number of images and
# of images the browser decoded, written where --dump-dom shows them.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter((i) => i.complete && i.naturalWidth > 0);
  document.body.dataset.images = images.length;
  document.body.dataset.decoded = decoded.length;
  document.body.dataset.widths = decoded.map((i) => i.naturalWidth).join(",");
  const box = images[0].getBoundingClientRect();
  document.body.dataset.box = [box.left, box.top, box.width, box.height].join(",");
});
</script>"""


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_ad():
    # torch's forward AD, where torch is installed (Python 3.12's stage has none;
    # these tests run the JAX way at most)
    if importlib.util.find_spec("torch") is not None:
        load_forward_ad_decompositions()


def check(*args):
    return runner.invoke(app, ["check", *map(str, args)], catch_exceptions=False)


def images(page: str) -> list[bytes]:
    """The PNGs embedded in a page."""
    found = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    return [base64.b64decode(data) for data in found]


@pytest.fixture(scope="module")
def wrong_page(tmp_path_factory):
    """The report of a VJP 0.1% wrong in one entry, written by `--report`."""
    path = tmp_path_factory.mktemp("report") / "check.html"
    # jax alone: the page is the same with torch, and Python 3.12's stage has none
    result = check(OFF_IN_ONE_ENTRY, "--report", path, "--json", "--frameworks", "jax")
    assert result.exit_code == 1, result.stdout
    return path, json.loads(result.stdout)


def test_the_page_holds_the_verdict_the_worst_entry_and_a_figure_per_pair(wrong_page):
    path, report = wrong_page
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "FAILED" in page
    assert "VJP endpoint: d y[2] / d x[2] is 1.6016" in page
    pngs = images(page)
    # one figure for the one output/input pair, one of the framework's probes
    assert len(pngs) == 1 + 1
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    # self-contained: nothing is fetched
    assert not re.search(r"(src|href)=['\"](https?:|//)", page)
    for way in report["ways"][1:]:
        assert way["name"] in page


def test_the_heatmap_data_marks_exactly_the_wrong_entry(local_tesseract):
    """The colour scale is the verdict: |(way - reference) / allowed| > 1 only where it is wrong.

    The VJP scales the gradient of x[2] by 1.001, so the entries of column 2
    that are not zero (d y[1] / d x[2] = 0.5 and d y[2] / d x[2] = 2 x[2])
    are wrong, and nothing else.
    """
    import tess_ad

    t = local_tesseract(OFF_IN_ONE_ENTRY)
    inputs = json.loads((OFF_IN_ONE_ENTRY / "example_inputs.json").read_text())
    report = tess_ad.check_gradients(t, inputs["inputs"], frameworks=())
    ratio = report.blocks.ratios["VJP endpoint"][("y", "x")]
    reference = report.blocks.reference["y"]["x"]
    assert ratio.shape == reference.shape == (5, 5)
    beyond = np.argwhere(np.abs(ratio) > 1)
    assert beyond.tolist() == [[1, 2], [2, 2]]
    assert list(report.blocks.ratios) == ["VJP endpoint"]  # its only endpoint
    assert report.blocks.error["y"]["x"].shape == (5, 5)
    page = report.to_html()
    assert len(images(page)) == 1  # no framework ways: the one pair's figure
    assert "given in Python" in page


def test_a_check_that_cannot_run_still_writes_a_page(tmp_path):
    path = tmp_path / "check.html"
    result = check(tmp_path / "nowhere", "--report", path)
    assert result.exit_code == 2
    page = path.read_text(encoding="utf-8")
    assert "COULD NOT CHECK" in page and "no such tesseract_api.py" in page


def test_report_needs_matplotlib_and_an_existing_folder(tmp_path, monkeypatch):
    result = check(EXAMPLES / "rosenbrock", "--report", tmp_path / "no" / "r.html")
    assert result.exit_code == 2
    assert "--report: no such folder" in result.stderr
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    result = check(EXAMPLES / "rosenbrock", "--report", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "pip install 'tess-ad[report]'" in result.stderr
    # refused before the check runs; the page says why
    assert "tess-ad[report]" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "finite differences" not in result.stdout


def test_nan_entries_are_drawn_as_such_and_empty_blocks_do_not_break_the_page(
    local_tesseract,
):
    import tess_ad

    t = local_tesseract(TESSERACTS / "nan_vjp")
    report = tess_ad.check_gradients(t, {"x": [0.3, -1.2, 0.8]}, frameworks=())
    ratio = report.blocks.ratios["VJP endpoint"][("y", "x")]
    # NaN where the VJP is NaN (column 1), finite elsewhere
    assert np.isnan(ratio[:, 1]).all() and np.isfinite(np.delete(ratio, 1, 1)).all()
    page = report.to_html()
    assert len(images(page)) == 1 and "black: not a finite number" in page

    smooth = local_tesseract(TESSERACTS / "smooth")
    empty = {"x64": np.zeros(0), "x32": np.array([0.2, 0.4], np.float32)}
    report = tess_ad.check_gradients(smooth, empty, frameworks=())
    page = report.to_html()
    assert "Empty block" in page
    assert len(images(page)) == 1  # d y32 / d x32, the one pair with entries


def test_large_blocks_are_pooled_without_losing_a_wrong_entry():
    """A 1000 x 1000 block drawn in ~250 pixels: one wrong entry must survive."""
    from tess_ad._check_html import POOL, _pool

    data = np.full((1000, 1000), 0.1)
    data[777, 123] = 2.5
    data[500, 999] = np.nan
    tiles, fr, fc = _pool(data)
    assert tiles.shape == (POOL, POOL) and (fr, fc) == (5, 5)
    assert tiles[777 // fr, 123 // fc] == 2.5
    assert np.isnan(tiles[500 // fr, 999 // fc])
    assert np.sum(tiles != 0.1) == 2
    small = np.arange(6.0).reshape(2, 3)
    assert _pool(small)[0] is small


def test_report_to_a_folder_is_refused_before_the_check(tmp_path):
    result = check(EXAMPLES / "rosenbrock", "--report", tmp_path)
    assert result.exit_code == 2
    assert f"--report: {tmp_path} is a folder" in result.stderr
    assert "finite differences" not in result.stdout


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("TESS_AD_REQUIRE_CHROMIUM"):
            pytest.fail("TESS_AD_REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, bounded in time; on a timeout its whole process group is killed."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    proc = subprocess.Popen(
        [chromium(), *flags, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


WINDOW = "--window-size=1280,2400"


def saturated_red(pixels: np.ndarray) -> int:
    """How many pixels are the colour scale's darkest red (RdBu_r's top, #67001f)."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(np.sum((r > 0.3) & (r < 0.5) & (g < 0.08) & (b < 0.2)))


def render(tmp_path: Path, page: str) -> tuple[dict[str, str], np.ndarray]:
    """The probe's findings and a screenshot, of one page in headless Chromium."""
    tmp_path.mkdir(exist_ok=True)
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(
        tmp_path, WINDOW, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    found = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    shot = tmp_path / "page.png"
    run_chromium(tmp_path, WINDOW, f"--screenshot={shot}", probed.as_uri())
    from matplotlib.image import imread

    return found, imread(shot)[..., :3]


def test_the_page_renders_in_headless_chromium_with_every_image(
    wrong_page, local_tesseract, tmp_path
):
    path, _ = wrong_page
    found, pixels = render(tmp_path / "wrong", path.read_text(encoding="utf-8"))
    assert found["images"] == found["decoded"] == "2", found
    assert all(int(w) > 300 for w in found["widths"].split(","))
    assert pixels.shape[:2] == (2400, 1280)
    # the pair's figure as the browser drew it: reference | VJP endpoint's ratios.
    # The VJP panel shows the wrong entries in the scale's dark red; checked with
    # a tolerance the error passes, the same panel is pale.
    left, top, width, height = (round(float(v)) for v in found["box"].split(","))
    figure = pixels[top : top + height, left : left + width]
    vjp_panel = figure[:, width // 2 : width // 2 + int(width * 0.32)]
    wrong_red = saturated_red(vjp_panel)

    right = tess_ad_page(local_tesseract)
    found, pixels = render(tmp_path / "right", right)
    left, top, width, height = (round(float(v)) for v in found["box"].split(","))
    figure = pixels[top : top + height, left : left + width]
    right_red = saturated_red(figure[:, width // 2 : width // 2 + int(width * 0.32)])
    assert wrong_red > 1000 and right_red < 100, (wrong_red, right_red)


def tess_ad_page(local_tesseract) -> str:
    """The same check with a 1% tolerance, which the 0.1% error passes: the same
    layout, with every ratio small."""
    import tess_ad

    t = local_tesseract(OFF_IN_ONE_ENTRY)
    inputs = json.loads((OFF_IN_ONE_ENTRY / "example_inputs.json").read_text())
    report = tess_ad.check_gradients(
        t, inputs["inputs"], frameworks=("jax",), rtol=0.01
    )
    assert report.ok, report.summary()
    return report.to_html()
