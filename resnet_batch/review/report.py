"""`resnet-batch report OUT --html FILE`: one self-contained page to review a labeling run.

Counts; the run (where its wall time went, from the run record, and the rows saved against
seconds since its launch, a point per part file, so a stall shows as a flat stretch);
errors by category, a histogram of top-1 confidence, a table of classes linking to
a contact sheet per class (its least confident images first, probability under each), the
review queue, the largest near-duplicate groups (when `neighbors` has run) and the error
rows. Thumbnails are small JPEGs embedded as data URIs, at most `per_class` per class, so
the page's size depends on the number of classes, not of rows (about 2 KB a thumbnail).
Nothing outside the file is loaded: it opens from disk with no server.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.identity import TAR_SEPARATOR
from ..core.storage import modified_at, replaced_atomically
from ..model.registry import NO_WEIGHTS, RANDOM_WEIGHTS_NOTE
from ..output.record import RunRecord
from ..output.targets import check_tool_target
from ..output.writer import OutputDir
from .charts import RunSeries, histogram_svg, phases_svg, runs_svg
from .review import Review, collect

THUMBNAIL_PX = 72
THUMBNAIL_QUALITY = 70
MAX_DUPLICATE_GROUPS = 20
DUPLICATE_THUMBNAILS = 6


def thumbnail(path: str, max_pixels: int = 100_000_000) -> str | None:
    """A small JPEG data URI of the image at `path`, or None when it cannot be read."""
    from PIL import Image

    from ..data.decode import ImageError, decode_rgb
    from ..data.image_bytes import read_image_bytes

    if TAR_SEPARATOR in path.lower():  # a tar member's offset is not in the output: no thumbnail
        return None
    try:
        img = decode_rgb(read_image_bytes(path), max_pixels)
    except ImageError:
        return None
    img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=THUMBNAIL_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body{font:14px system-ui,sans-serif;margin:0 2em 4em;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
td.n,th.n{text-align:right}.counts td{font-size:16px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.cell{width:90px;font-size:11px;word-break:break-all}
.cell img{display:block;max-width:72px;max-height:72px;background:#eee}
.cell .p{font-weight:bold;font-size:12px;word-break:normal;overflow-wrap:break-word;hyphens:auto}
.warn{background:#fff3cd;padding:6px 10px;border-left:4px solid #e0b15a}
#runs-legend{list-style:none;padding:0;font-size:12px}.missing{width:72px;height:48px;background:#eee}
.sheet{display:none}.sheet:target{display:block}
svg text{font-size:10px}
"""

SCRIPT = """
// Contact sheets are hidden sections shown by their #anchor (CSS :target); keep the
// one that is open in view after the link is followed.
window.addEventListener('hashchange', () => {
  const el = document.getElementById(location.hash.slice(1));
  if (el) el.scrollIntoView();
});
"""


def saved_over_time(output: str) -> tuple[RunRecord, list[RunSeries]]:
    """The run record, and for each run of the output (resumes included) the rows it saved
    against seconds since its launch: a point per part file, the file's time and rows."""
    out = OutputDir(output)
    record = out.run_record() or RunRecord()
    stamps = []
    for part in out.part_files():
        when = modified_at(out.fs, part)
        try:
            with out.fs.open(part, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException):
            continue  # damaged: open_output has said so
        if when is not None:
            stamps.append((when, rows))
    stamps.sort()
    runs = [r for r in record.all_runs() if r.get("launched")]
    launches = [float(r["launched"]) for r in runs] or [stamps[0][0] if stamps else 0.0]
    series = [RunSeries(launched, []) for launched in launches]
    for when, rows in stamps:
        run = max((i for i, launched in enumerate(launches) if launched <= when), default=0)
        points = series[run].points
        points.append((max(when - launches[run], 0.0), (points[-1][1] if points else 0) + rows))
    return record, [s for s in series if s.points]


def _run_section(record: RunRecord, series: list[RunSeries]) -> list[str]:
    parts = ["<h2>The run</h2>"]
    finished = record.finished if isinstance(record.finished, dict) else {}
    phases = finished.get("phases")
    if isinstance(phases, dict) and phases:
        rate = finished.get("steady_images_per_s")
        steady = f"; steady rate {float(rate):.1f} images/s" if rate else ""
        wall = sum(max(float(v), 0.0) for v in phases.values())
        parts += [
            f"<p id='run-summary'>the last run: wall {wall:.1f} s{steady}, as its summary said</p>",
            phases_svg(phases),
        ]
    else:
        parts.append("<p>the run record does not say how the run went (it has not finished)</p>")
    if series:
        runs = f"{len(series)} runs (resumes) wrote this output; " if len(series) > 1 else ""
        parts += [f"<p>{runs}rows saved against seconds since each run's launch, a point per part file</p>"]
        parts.append(runs_svg(series))
    return parts


def _cell(path: str, caption: str, thumbs: dict[str, str | None]) -> str:
    uri = thumbs.get(path)
    image = f'<img src="{uri}" alt="">' if uri else '<div class="missing"></div>'
    return (
        f'<div class="cell" title="{_e(path)}">{image}<span class="p">{_e(caption)}</span><br>'
        f"{_e(os.path.basename(path))}</div>"
    )


def render(
    review: Review,
    thumbs: dict[str, str | None],
    duplicates: list[list[tuple[str, float]]],
    record: RunRecord | None = None,
    series: list[RunSeries] | None = None,
) -> str:
    run = review.run
    random = run.weights == NO_WEIGHTS
    classes = sorted(review.classes.values(), key=lambda c: (-c.count, c.name))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>resnet-batch report: {_e(run.model or '')}</title><style>{CSS}</style></head><body>",
        f"<h1>resnet-batch report</h1><p>{_e(run.model or '?')}, weights {_e(run.weights or '?')}, "
        f"version {_e(run.package_version or '?')}</p>",
        "<table class='counts'>",
        f"<tr><td>inputs</td><td class='n' id='count-inputs'>{review.rows}</td></tr>",
        f"<tr><td>labeled</td><td class='n' id='count-labeled'>{review.labeled}</td></tr>",
        f"<tr><td>errors</td><td class='n' id='count-errors'>{sum(review.errors.values())}</td></tr>",
        f"<tr><td>classes</td><td class='n' id='count-classes'>{len(classes)}</td></tr>",
        f"<tr><td>to review</td><td class='n' id='count-review'>{review.flagged}</td></tr></table>",
        *([f"<p id='random-weights' class='warn'>{_e(RANDOM_WEIGHTS_NOTE)}</p>"] if random else []),
        *_run_section(record or RunRecord(), series or []),
        "<h2>Errors by category</h2><table id='error-categories'>",
        *(f"<tr><td>{_e(c)}</td><td class='n'>{n}</td></tr>" for c, n in review.errors.most_common()),
        "</table>" if review.errors else "</table><p>none</p>",
        "<h2>Top-1 confidence</h2><p>images per top-1 probability, from 0 to 1</p>",
        histogram_svg(review.histogram),
        "<h2>Classes</h2><table id='classes'><tr><th>class</th><th class='n'>images</th>"
        "<th class='n'>mean top-1</th></tr>",
    ]
    for i, stats in enumerate(classes):
        parts.append(
            f"<tr><td><a href='#sheet-{i}'>{_e(stats.name)}</a></td><td class='n'>{stats.count}</td>"
            f"<td class='n'>{stats.mean_prob:.3f}</td></tr>"
        )
    parts.append("</table>")
    for i, stats in enumerate(classes):
        picks = stats.lowest.sorted()
        parts.append(
            f"<section class='sheet' id='sheet-{i}'><h2>{_e(stats.name)}: the {len(picks)} least "
            f"confident of {stats.count}</h2><div class='grid'>"
        )
        parts += [_cell(p.path, f"{p.prob:.3f}", thumbs) for p in picks]
        parts.append("</div></section>")
    parts += _queue_duplicates_and_errors(review, thumbs, duplicates, random)
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _queue_duplicates_and_errors(
    review: Review, thumbs: dict[str, str | None], duplicates: list[list[tuple[str, float]]], random: bool
) -> list[str]:
    parts = [
        f"<h2>Review queue</h2><p>{_e(review.queue_rule)}: {review.flagged} rows; "
        f"the {len(review.queue)} least confident shown.</p><div class='grid' id='review-queue'>"
    ]
    parts += [_cell(p.path, f"{p.label} {p.prob:.3f}", thumbs) for p in review.queue]
    parts.append("</div>")
    if duplicates and random:
        parts.append("<h2>Largest near-duplicate groups</h2><p>not shown: random weights' embeddings group nothing</p>")
    elif duplicates:
        parts.append("<h2>Largest near-duplicate groups</h2>")
        for group in duplicates:
            parts.append(f"<p>{len(group)} images</p><div class='grid'>")
            parts += [_cell(path, f"{sim:.3f}", thumbs) for path, sim in group[:DUPLICATE_THUMBNAILS]]
            parts.append("</div>")
    parts.append("<h2>Error rows</h2><table id='error-rows'><tr><th>path</th><th>error</th></tr>")
    parts += [f"<tr><td>{_e(p)}</td><td>{_e(e)}</td></tr>" for p, e in review.error_rows]
    parts.append("</table>")
    if len(review.error_rows) < sum(review.errors.values()):
        parts.append(f"<p>the first {len(review.error_rows)} of {sum(review.errors.values())} shown</p>")
    return parts


def build_report(
    output: str,
    html_path: str,
    per_class: int = 4,
    queue: int = 200,
    neighbors: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    io_threads: int = 8,
) -> Review:
    check_tool_target(html_path, "--html", folder=False)
    review = collect(output, per_class=per_class, queue=queue, progress=progress)
    duplicates = []
    if neighbors:
        from .neighbors import largest_groups

        duplicates = largest_groups(neighbors, MAX_DUPLICATE_GROUPS)
    wanted = {p.path for stats in review.classes.values() for p in stats.lowest.sorted()}
    wanted |= {p.path for p in review.queue}
    wanted |= {path for group in duplicates for path, _ in group[:DUPLICATE_THUMBNAILS]}
    with ThreadPoolExecutor(io_threads) as pool:
        thumbs = dict(zip(wanted, pool.map(thumbnail, wanted), strict=False))
    page = render(review, thumbs, duplicates, *saved_over_time(output))
    with replaced_atomically(html_path) as (tmp,), open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    return review
