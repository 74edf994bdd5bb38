"""`tess-ad check --report FILE.html`: the page, its heatmaps' data, and how it renders in a browser.

The browser test opens the page in headless Chromium (Debian's `chromium`,
which `.ci/run` installs when it is absent), lets a probe script count the
images the browser decoded, and screenshots it. Without Chromium it is
skipped, unless `TESS_AD_REQUIRE_CHROMIUM` is set (as `.ci/run` does), where
a missing browser fails the test instead of hiding it.
"""

import base64
import json
import os
import re
import shutil
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
});
</script>"""


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_ad():
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


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("TESS_AD_REQUIRE_CHROMIUM"):
            pytest.fail("TESS_AD_REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run(
        [chromium(), *flags, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_the_page_renders_in_headless_chromium_with_every_image(wrong_page, tmp_path):
    path, _ = wrong_page
    page = path.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(
        tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert attributes["images"] == attributes["decoded"] == "2", attributes
    assert all(int(w) > 300 for w in attributes["widths"].split(","))

    shot = tmp_path / "page.png"
    run_chromium(
        tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", path.as_uri()
    )
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # the heatmaps' colours are on screen: saturated red (the wrong entry and
    # the failed banner) and blue (the reference's negative entries)
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    blue = (pixels[..., 2] > 0.5) & (pixels[..., 0] < 0.3)
    assert red.sum() > 500 and blue.sum() > 500, (red.sum(), blue.sum())
