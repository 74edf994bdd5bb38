"""Render a gradient check's :class:`~tess_ad.Report` as one self-contained HTML page.

Why a page: a Jacobian that is wrong in a pattern (one row, a band, every
entry of one input) is seen at a glance in a heatmap and easily missed in a
list of worst entries. Per output/input pair the page shows the reference
Jacobian (finite differences) and each way's difference from it, divided by
the difference the check allows there (``K`` times the reference's
estimated error plus the way's rounding): the colour scale is the verdict,
with ``|ratio| > 1`` an entry that disagrees, so a float32 Tesseract's noise
and a 0.1% wrong entry are told apart by eye as they are by the check.
Framework ways, checked along random directions rather than per entry,
get one heatmap per path with a row per probe.

Everything is in one file (inline CSS, PNG figures base64-embedded, no
script, nothing fetched), so it can be kept as a CI artifact or mailed.
matplotlib draws with its Agg canvas directly (no ``pyplot``: no global
state, no display), and is imported only here, when a page is asked for.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._check_report import FRAMEWORK_WAYS

if TYPE_CHECKING:
    from ._check_report import Report

__all__ = ["render", "render_error"]

# One heatmap: its title, the 2-D data, and the verdict it shows (None for the
# reference Jacobian itself).
Panel = tuple[str, np.ndarray, "str | None"]

# The colour scale of a difference heatmap: (way - reference) / allowed,
# clipped to +-CLIP; beyond +-1 an entry disagrees.
CLIP = 3.0
# Entries that disagree are also marked with a dot, up to this many per panel.
MARKED = 400
# Blocks larger than this per side are drawn tile by tile (see _pool).
POOL = 200
# At most this many output/input pairs get a figure (the others are listed).
MAX_FIGURES = 60
DPI = 90

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin-bottom: 0.3em; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { text-align: left; padding: 0.25em 0.9em 0.25em 0; vertical-align: top; }
th { border-bottom: 1px solid #999; }
.status { display: inline-block; padding: 0.2em 0.7em; border-radius: 0.3em;
          color: #fff; font-weight: bold; }
.agrees { background: #2e7d32; } .disagrees { background: #c62828; }
.error { background: #6a1b9a; } .inconclusive { background: #ef6c00; }
.v-agrees { color: #2e7d32; } .v-disagrees { color: #c62828; font-weight: bold; }
.v-inconclusive { color: #ef6c00; } .v-error { color: #6a1b9a; font-weight: bold; }
.note { color: #555; }
figure { margin: 0.5em 0 1.5em 0; }
img { max-width: 100%; height: auto; }
"""


def render(report: Report) -> str:
    """The page: header and verdict, the summary table, notes, then the figures.

    Args:
        report: What :func:`tess_ad.check_gradients` returned.

    Returns:
        One self-contained HTML document.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tess-ad check: {_e(report['target'])}: {_e(report.status)}</title>",
        f"<style>{_CSS}</style></head><body>",
        *_header(report),
        *_summary(report),
        *_notes(report),
        *_figures(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_error(target: str, message: str) -> str:
    """The page of a check that could not run (a bad target, inputs or option).

    Args:
        target: The target as given.
        message: Why the check could not run.

    Returns:
        A short HTML document saying so.
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>tess-ad check: {_e(target)}: error</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>tess-ad check <code>{_e(target)}</code></h1>"
        '<p><span class="status error">COULD NOT CHECK</span></p>'
        f"<p class='mono'>{_e(message)}</p></body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _header(report: Report) -> list[str]:
    within = f"{report['k']:g} &times; the reference's estimated error" + (
        f" + rtol={report['rtol']:g}" if report["rtol"] is not None else ""
    )
    verdict = {
        "agrees": f"OK: every way agrees within {within}",
        "disagrees": f"FAILED: a way disagrees (allowed: {within})",
        "error": "COULD NOT CHECK: the Tesseract raised",
    }[report.status]
    return [
        f"<h1>tess-ad check <code>{_e(report['target'])}</code></h1>",
        f'<p><span class="status {_e(report.status)}">{verdict}</span></p>',
        "<table>",
        "<tr><th>inputs</th><td class='mono'>"
        f"{_e(report['inputs_file'] or 'given in Python')}</td></tr>",
        f"<tr><th>reference</th><td>{_e(report['reference'])} "
        f"({_e(report['method'])}, with error estimates)</td></tr>",
        f"<tr><th>inputs checked</th><td class='mono'>"
        f"{_e(', '.join(report['inputs_paths']))}</td></tr>",
        f"<tr><th>outputs checked</th><td class='mono'>"
        f"{_e(', '.join(report['outputs_paths']))}</td></tr>",
        "</table>",
    ]


def _way_verdict(report: Report, way: Mapping[str, Any]) -> tuple[str, str]:
    """``(css class, text)`` of one way's verdict over its pairs."""
    if way["error"] is not None:
        return "error", "error"
    if way["name"] == report["reference"]:
        return "", "reference"
    verdicts = [p["verdict"] for p in way["pairs"]]
    if not verdicts:
        return "", "not compared"
    for verdict in ("disagrees", "inconclusive"):
        if verdict in verdicts:
            return verdict, f"{verdict} ({verdicts.count(verdict)} of {len(verdicts)})"
    return "agrees", "agrees"


def _summary(report: Report) -> list[str]:
    rows = [
        "<h2>Summary</h2>",
        "<table><tr><th>way</th><th>how</th><th>calls</th><th>seconds</th>"
        "<th>verdict</th></tr>",
    ]
    for way in report["ways"]:
        css, text = _way_verdict(report, way)
        rows.append(
            f"<tr><td>{_e(way['name'])}</td><td class='note'>{_e(way['via'])}</td>"
            f"<td>{_e(way['calls_text'])}</td><td>{way['seconds']:.2f}</td>"
            f"<td class='v-{css}'>{_e(text)}</td></tr>"
        )
    rows.append("</table>")
    return rows


def _notes(report: Report) -> list[str]:
    out: list[str] = []
    if report.where:
        out.append("<h2>Where the ways disagree</h2><ul>")
        out += [f"<li class='mono'>{_e(line)}</li>" for line in report.where]
        out.append("</ul>")
    if report.inconclusive:
        out.append(
            "<p class='v-inconclusive'>Inconclusive on "
            f"{_e(', '.join(report.inconclusive))}: the finite-difference "
            "reference is too noisy there to tell a right gradient from a 10% "
            "wrong one. Try <code>--method richardson</code>, other inputs, or a "
            "float64 build of the Tesseract.</p>"
        )
    for skip in report["skipped"]:
        out.append(
            f"<p class='note'>Skipped {_e(skip['way'])}: {_e(skip['reason'])}</p>"
        )
    for err in report["errors"]:
        out.append(
            f"<p class='v-error'>Error in {_e(err['way'])}: "
            f"<span class='mono'>{_e(err['error'])}</span></p>"
        )
    out += [f"<p>Hint: {_e(hint)}</p>" for hint in report.hints]
    return out


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def _figures(report: Report) -> list[str]:
    blocks = report.blocks
    if not blocks.reference:
        return [
            "<h2>Figures</h2><p class='note'>None: the reference did not "
            "complete, so there is nothing to compare with.</p>"
        ]
    endpoint_ways = [
        w["name"]
        for w in report["ways"]
        if w["name"] in blocks.ratios and w["name"] not in FRAMEWORK_WAYS
    ]
    verdicts = {
        (w["name"], p["output"], p["input"]): p["verdict"]
        for w in report["ways"]
        for p in w["pairs"]
    }
    pairs = [
        (o, p)
        for o in report["outputs_paths"]
        for p in report["inputs_paths"]
        if blocks.reference.get(o, {}).get(p) is not None
    ]

    def badness(pair: tuple[str, str]) -> int:
        seen = {verdicts.get((name, *pair)) for name in endpoint_ways}
        return 0 if "disagrees" in seen else 1 if "inconclusive" in seen else 2

    # the pairs that matter first; a figure each, up to MAX_FIGURES
    pairs.sort(key=badness)
    out = [
        "<h2>Jacobian blocks</h2>",
        "<p class='note'>Each row of panels is one output/input pair: the "
        "reference Jacobian (rows: output elements, columns: input elements, "
        "row-major), then each way's difference from it divided by the "
        f"difference allowed there, clipped to &plusmn;{CLIP:g}. Beyond "
        "&plusmn;1 (dotted) an entry disagrees; black: not a finite number. "
        f"Blocks larger than {POOL} &times; {POOL} are shown tile by tile, each "
        "tile as its entry of largest magnitude. Pairs that disagree come "
        "first.</p>",
    ]
    for o, p in pairs[:MAX_FIGURES]:
        n_out = len(blocks.output_shapes.get(o, ()))
        label = f"d {o} / d {p}"
        out.append(f"<h3 id='{_e(_anchor(label))}'>{_e(label)}</h3>")
        reference = _matrix(blocks.reference[o][p], n_out)
        if reference.size == 0:
            out.append(f"<p class='note'>Empty block (shape {reference.shape}).</p>")
            continue
        panels: list[Panel] = [(f"reference {label}", reference, None)]
        missing = []
        for name in endpoint_ways:
            ratio = blocks.ratios[name].get((o, p))
            verdict = verdicts.get((name, o, p), "")
            if ratio is None:
                missing.append(f"{name}: {verdict} (its block has another shape)")
            else:
                panels.append((f"{name}: {verdict}", _matrix(ratio, n_out), verdict))
        out.append(
            _figure(
                panels,
                f"{label}: reference and differences",
                ("input element", "output element"),
            )
        )
        out += [f"<p class='v-disagrees'>{_e(line)}</p>" for line in missing]
    if len(pairs) > MAX_FIGURES:
        rest = ", ".join(f"d {o} / d {p}" for o, p in pairs[MAX_FIGURES:])
        out.append(
            f"<p class='note'>{len(pairs) - MAX_FIGURES} more pairs, all agreeing "
            f"or less important than those above, are not drawn: {_e(rest)}. "
            "Their numbers are in <code>--json</code>.</p>"
            if badness(pairs[MAX_FIGURES]) == 2
            else f"<p class='note'>{len(pairs) - MAX_FIGURES} more pairs are not "
            f"drawn: {_e(rest)}. Their numbers are in <code>--json</code>.</p>"
        )
    for name in FRAMEWORK_WAYS:
        ratios = blocks.ratios.get(name)
        if not ratios:
            continue
        out.append(f"<h2>{_e(name)} probes</h2>")
        out.append(
            "<p class='note'>Checked along random cotangents (VJP) and tangents "
            "(JVP) instead of entry by entry: each panel is one path, a row per "
            "probe, coloured by the difference from the reference's product "
            "divided by the difference allowed.</p>"
        )
        rows: dict[str, list[np.ndarray]] = {}
        seen: dict[str, set[str]] = {}
        for key, ratio in ratios.items():
            # keys are ("VJP probe k", input) and (output, "JVP probe k")
            head = (
                f"VJP, {key[1]}" if key[0].startswith("VJP probe") else f"JVP, {key[0]}"
            )
            rows.setdefault(head, []).append(np.ravel(ratio))
            seen.setdefault(head, set()).add(verdicts.get((name, *key), "agrees"))
        panels = [
            (f"{head}: {_worst(seen[head])}", np.vstack(stack), _worst(seen[head]))
            for head, stack in rows.items()
            if stack[0].size
        ]
        if panels:
            out.append(_figure(panels, f"{name} probes", ("element", "probe")))
    return out


def _anchor(label: str) -> str:
    return "pair-" + "".join(c if c.isalnum() else "-" for c in label)


def _matrix(block: np.ndarray, n_out: int) -> np.ndarray:
    """A Jacobian block as rows (output elements) by columns (input elements)."""
    block = np.asarray(block, np.float64)
    rows = int(np.prod(block.shape[:n_out], dtype=np.int64))
    cols = int(np.prod(block.shape[n_out:], dtype=np.int64))
    return block.reshape(rows, cols)


def _pool(data: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``data`` in tiles of at most :data:`POOL` per side, each its entry of largest magnitude.

    A plain image of a large block would drop most rows and columns when
    scaled down, and with them the entries that disagree; keeping each tile's
    largest entry (NaN counting as the largest) keeps every one of them
    visible. Returns the tiles and the tile height and width (1 when small).
    """
    rows, cols = data.shape
    fr, fc = -(-rows // POOL), -(-cols // POOL)
    if fr == 1 and fc == 1:
        return data, 1, 1
    padded = np.pad(data, ((0, -rows % fr), (0, -cols % fc)))
    tr, tc = padded.shape[0] // fr, padded.shape[1] // fc
    tiles = padded.reshape(tr, fr, tc, fc).transpose(0, 2, 1, 3).reshape(tr, tc, -1)
    key = np.where(np.isnan(tiles), np.inf, np.abs(tiles))
    pick = np.argmax(key, axis=-1)[..., None]
    return np.take_along_axis(tiles, pick, axis=-1)[..., 0], fr, fc


def _worst(verdicts: set[str]) -> str:
    return next((v for v in ("disagrees", "inconclusive") if v in verdicts), "agrees")


def _figure(panels: Sequence[Panel], alt: str, axes: tuple[str, str]) -> str:
    """Heatmaps, four to a row, as an embedded PNG.

    A panel with verdict ``None`` is a Jacobian (symmetric scale about 0);
    the others are ratios (fixed scale +-CLIP). ``axes`` names the columns
    and rows; ticks are element (or probe) numbers, from 0 (probes from 1).
    NaN and infinite entries are black.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    cmap = colormaps["RdBu_r"].with_extremes(bad="black")
    columns = min(len(panels), 4)
    lines = -(-len(panels) // columns)
    fig = Figure(figsize=(3.6 * columns, 3.0 * lines), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, data, verdict) in enumerate(panels):
        ax = fig.add_subplot(lines, columns, i + 1)
        data = np.asarray(data, np.float64)
        rows, cols = data.shape
        if verdict is None:
            finite = data[np.isfinite(data)]
            top = float(np.max(np.abs(finite))) if finite.size else 1.0
            norm = Normalize(-(top or 1.0), top or 1.0)
            shown = np.where(np.isfinite(data), data, np.nan)
        else:
            norm = Normalize(-CLIP, CLIP)
            shown = np.where(np.isnan(data), np.nan, np.clip(data, -CLIP, CLIP))
        tiles, fr, fc = _pool(shown)
        image = ax.imshow(
            np.ma.masked_invalid(tiles),
            cmap=cmap,
            norm=norm,
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, tiles.shape[1] * fc - 0.5, tiles.shape[0] * fr - 0.5, -0.5),
        )
        if verdict is not None:
            r, c = np.nonzero(~(np.abs(tiles) <= 1.0))
            if 0 < r.size <= MARKED:
                ax.plot(
                    c * fc + (fc - 1) / 2, r * fr + (fr - 1) / 2, "k.", markersize=3
                )
        ax.set_title(title, fontsize=8, color=_COLOURS.get(verdict or "", "black"))
        ax.set_xlabel(axes[0], fontsize=7)
        ax.set_ylabel(axes[1], fontsize=7)
        for axis, size in ((ax.xaxis, cols), (ax.yaxis, rows)):
            if size <= 12:
                axis.set_ticks(range(size))
            else:
                axis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        if axes[1] == "probe":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v) + 1}"))
        ax.tick_params(labelsize=7)
        bar = fig.colorbar(image, ax=ax, shrink=0.85)
        bar.ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data_url = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{data_url}'></figure>"
    )


_COLOURS = {"disagrees": "#c62828", "inconclusive": "#ef6c00", "agrees": "#2e7d32"}
