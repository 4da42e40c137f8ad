"""The report page: one self-contained HTML file of a benchmark's results (no server, no network, nothing
external — the plots and pictures are PNGs inside it as ``data:`` URIs, the sorting a few lines of inline script).

Sections, top to bottom:

1. the results tables (the Markdown tables of :func:`agents.benchmark.tables.markdown_table`, each sortable by
   clicking a column header: numbers by value, text alphabetically; a second click reverses);
2. the plots the benchmark drew (:mod:`agents.benchmark.plots`: anytime top-1, accuracy vs multiply-adds, …);
3. looks side by side: every agent's first run on the same few evaluation images (spread over them), each picture
   the glance frame and the patches numbered in order, coloured by p(true class) after each look, captioned
   with the image index and the true and predicted class names;
4. the failure gallery (:func:`agents.benchmark.report.looks.failure_gallery`): images where the chosen agent is
   wrong and the other right, and the reverse, both agents' looks on each.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence

import numpy as np

from ...episode_images import P_TRUE_LABEL, Looks
from .images import ReportImages
from .looks import Gallery, has_looks, looks_from_records

__all__ = ["PLOTS", "build_page", "markdown_to_html", "png_data_uri"]

#: The benchmark's plots shown, with their headings, in order.
PLOTS = (("budgeted.png", "Accuracy vs compute (budgeted batch classification)"),
         ("anytime_top1.png", "Anytime top-1 after each look"),
         ("madds_per_step.png", "Multiply-adds per step"),
         ("mean_return.png", "Mean return"),
         ("seconds.png", "Wall-clock"))

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.results { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
table.results th, table.results td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; }
table.results th { background: #eee; cursor: pointer; user-select: none; }
table.results th.sorted-asc::after { content: " \\25B2"; }
table.results th.sorted-desc::after { content: " \\25BC"; }
figure.look { display: inline-block; margin: 4px; vertical-align: top; text-align: center; font-size: 12px; }
figure.look img { width: 160px; height: 160px; image-rendering: pixelated; border: 1px solid #999; }
figure.look figcaption { width: 164px; }
.wrong { color: #b00; } .right { color: #070; }
.scale { display: inline-block; width: 240px; height: 12px; vertical-align: middle;
         background: linear-gradient(to right, rgb(255,0,0), rgb(255,255,0), rgb(0,255,0)); }
.row-name { font-weight: bold; margin-top: 0.6em; }
.gallery-item { display: inline-block; border: 1px solid #ddd; margin: 0 10px 10px 0; }
.note { color: #555; font-size: 13px; }
img.plot { max-width: 100%; }
"""

_SCRIPT = """
function cellValue(row, i) {
  const text = row.cells[i] ? row.cells[i].textContent.trim() : "";
  const num = parseFloat(text.replace(/\\u2212/g, "-").replace(/^[^0-9+\\-.]+/, ""));
  return isNaN(num) ? text.toLowerCase() : num;
}
function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
  const asc = !th.classList.contains("sorted-asc");
  for (const h of table.tHead.rows[0].cells) { h.classList.remove("sorted-asc", "sorted-desc"); }
  th.classList.add(asc ? "sorted-asc" : "sorted-desc");
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, i), y = cellValue(b, i);
    const kx = typeof x === "number" ? 0 : 1, ky = typeof y === "number" ? 0 : 1;
    if (kx !== ky) { return kx - ky; }
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  for (const r of rows) { body.appendChild(r); }
}
document.querySelectorAll("table.results th").forEach(th => th.addEventListener("click", () => sortBy(th)));
"""


def png_data_uri(png: bytes) -> str:
    """A PNG's bytes as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _array_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _cell(text: str) -> str:
    text = text.strip().replace("**", "").replace("`", "")
    return html.escape(text)


def markdown_to_html(markdown: str) -> str:
    """The benchmark's Markdown (pipe tables and lines of text) as HTML: each table a sortable ``<table
    class="results">`` with its header in ``<thead>``, each other line a paragraph."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if not table:
            return
        head, *rows = table
        out.append('<table class="results"><thead><tr>' + "".join(f"<th>{_cell(c)}</th>" for c in head)
                   + "</tr></thead><tbody>")
        out.extend("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
        out.append("</tbody></table>")
        table.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = stripped.strip("|").split("|")
            if all(re.fullmatch(r"\s*:?-{3,}:?\s*", c) for c in cells):
                continue  # the header's separator
            table.append(cells)
            continue
        flush()
        if stripped:
            heading = re.match(r"^(#+)\s*(.*)", stripped)
            if heading:
                level = min(len(heading.group(1)) + 2, 6)
                out.append(f"<h{level}>{_cell(heading.group(2))}</h{level}>")
            else:
                out.append(f'<p class="note">{_cell(stripped)}</p>')
    flush()
    return "\n".join(out)


def _figure(looks: Looks, agent: str | None = None) -> str:
    right = looks.predicted[-1] == looks.true_name
    who = f"{html.escape(agent)}: " if agent else ""
    alt = f"{agent or ''} looks on image {looks.index}".strip()
    end = " (stopped)" if looks.stopped else ""
    return (f'<figure class="look"><img alt="{html.escape(alt)}" src="{png_data_uri(_array_png(looks.frame()))}">'
            f"<figcaption>{who}#{looks.index} · {looks.looks} looks{end}<br>true: <b>{html.escape(looks.true_name)}"
            f'</b><br><span class="{"right" if right else "wrong"}">predicted: '
            f"{html.escape(looks.predicted[-1])}</span> · p(y)={looks.p_true[-1]:.2f}</figcaption></figure>")


def _scale() -> str:
    return (f'<p class="note">Each look is a numbered square (1 = the first patch), the glance the frame around the '
            f'image; colours: {html.escape(P_TRUE_LABEL)} <span>0</span> <span class="scale"></span> '
            "<span>1</span></p>")


def _looks_section(records: dict, columns: Sequence[int], arrays: dict, images: ReportImages) -> str:
    parts = []
    for name, record in records.items():
        parts.append(f'<div class="row-name">{html.escape(name)}</div>')
        if not has_looks(record):
            parts.append('<p class="note">no looks recorded for this agent (a folder of an older version: rerun '
                         "its benchmark)</p>")
            continue
        looks = looks_from_records(record, columns, arrays["image_index"], arrays["target"], images.image_at,
                                   images.class_names)
        parts.append('<div class="looks">' + "".join(_figure(lk) for lk in looks) + "</div>")
    return "\n".join(parts)


def _gallery_side(gallery: Gallery, columns: list[int], count: int, wrong: str, right: str, records: dict,
                  arrays: dict, images: ReportImages) -> str:
    title = (f"{html.escape(wrong)} wrong, {html.escape(right)} right: {count} images"
             + (f" (the first {len(columns)} shown)" if count > len(columns) else ""))
    parts = [f'<h3 class="gallery-side">{title}</h3>']
    if not columns:
        parts.append('<p class="note">none</p>')
        return "\n".join(parts)
    pair = [gallery.wrong, gallery.right]
    drawable = [n for n in pair if has_looks(records[n])]
    if not drawable:
        parts.append('<p class="note">no looks recorded for these agents (folders of an older version: rerun their '
                     "benchmarks)</p>")
        return "\n".join(parts)
    per_agent = {n: looks_from_records(records[n], columns, arrays["image_index"], arrays["target"],
                                       images.image_at, images.class_names) for n in drawable}
    for j in range(len(columns)):
        parts.append('<div class="gallery-item">' + "".join(_figure(per_agent[n][j], n) for n in drawable)
                     + "</div>")
    return "\n".join(parts)


def build_page(results: dict, arrays: dict | None, records: dict, plots: dict[str, bytes],
               images: ReportImages | None, no_images_reason: str, gallery: Gallery | None,
               look_columns: Sequence[int], markdown: str) -> str:
    """The whole page as one HTML string (see the module docstring); ``records``: agent → its per-image records,
    ``plots``: file name → PNG bytes, ``look_columns``: positions (in the records) of the images of section 3."""
    env = html.escape(str(results.get("env_id", "")))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Benchmark report: {env}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Benchmark report: {env}</h1>",
             f'<p class="note">{results.get("episodes", "?")} evaluation images '
             f'({html.escape(str(results.get("image_source", "")))}); reference: '
             f'{html.escape(str(results.get("reference")))}. Click a column header to sort.</p>',
             '<h2 id="tables">Results</h2>', markdown_to_html(markdown),
             '<h2 id="plots">Curves</h2>']
    for name, heading in PLOTS:
        if name in plots:
            parts.append(f"<h3>{html.escape(heading)}</h3><img class=\"plot\" alt=\"{html.escape(heading)}\" "
                         f"src=\"{png_data_uri(plots[name])}\">")
    parts.append('<h2 id="looks">Looks side by side</h2>')
    if images is None or arrays is None:
        parts.append(f'<p class="note">No pictures: {html.escape(no_images_reason)}.</p>')
    else:
        parts.append(_scale())
        parts.append(_looks_section(records, look_columns, arrays, images))
    parts.append('<h2 id="gallery">Failure gallery</h2>')
    if gallery is None:
        parts.append('<p class="note">No gallery: it needs two agents with per-image records.</p>')
    elif images is None or arrays is None:
        parts.append(f'<p class="note">No pictures: {html.escape(no_images_reason)}.</p>')
    else:
        parts.append(f'<p class="note">Images where one agent answered wrongly and the other rightly (each agent\'s '
                     f'first run, the one drawn): {html.escape(gallery.wrong)} vs {html.escape(gallery.right)} '
                     f'(choose the pair with <code>gfnet report DIR --wrong A --right B</code>).</p>')
        parts.append(f'<div id="failure-gallery" data-wrong="{html.escape(gallery.wrong)}" '
                     f'data-right="{html.escape(gallery.right)}">')
        parts.append(_gallery_side(gallery, gallery.wrong_only, gallery.counts[0], gallery.wrong, gallery.right,
                                   records, arrays, images))
        parts.append(_gallery_side(gallery, gallery.right_only, gallery.counts[1], gallery.right, gallery.wrong,
                                   records, arrays, images))
        parts.append("</div>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)
