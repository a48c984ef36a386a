"""report.html: genlab report as one self-contained page to look at in a browser.

The metric table (sortable by any column: click its header), each configuration's final sample grid
side by side (for several seeds, the first seed's run), and the report's plots. Every image is
embedded as a data: URI and the little script and style are inline, so the file can be mailed,
archived or opened from any folder with nothing beside it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.common { color: #555; font-family: monospace; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; cursor: pointer; user-select: none; }
th:first-child, td:first-child { text-align: left; font-family: monospace; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.best { font-weight: bold; background: #e8f5e9; }
.grids, .plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; background: #fafafa; }
figure img { display: block; image-rendering: pixelated; }
.grids img { width: 256px; height: auto; }
figcaption { font-family: monospace; font-size: 0.85em; margin-top: 6px; max-width: 256px; word-break: break-all; }
.plots img { max-width: 720px; height: auto; }
.plots figcaption { max-width: none; }
.missing { width: 256px; height: 64px; display: flex; align-items: center; justify-content: center; color: #999; }
"""

# Sorting: numbers by their value (data-sort), text by itself; a missing value sorts last either way.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def final_grid(run: Path) -> Path | None:
    """The run's last sample grid: samples/step_<highest>.png."""
    grids = sorted((run / "samples").glob("step_*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return grids[-1] if grids else None


def first_seed(members: list[dict]) -> dict:
    """The run shown for a configuration: its lowest seed (runs without a seed first)."""
    def key(m):
        s = m.get("seed")
        return (s is not None, int(s) if s is not None and str(s).lstrip("-").isdigit() else 0, str(m["run"]))
    return min(members, key=key)


def _header(name: str) -> str:
    """A metric's column header with its feature network on a line of its own: fid / [lenet-mnist]."""
    base, tag = name.split("[", 1) if "[" in name else (name, "")
    return html.escape(base) + (f"<br><small>[{html.escape(tag)}</small>" if tag else "")


def render(names: list[str], rows: list[dict], groups: dict[str, list[dict]], common: dict, pngs: list[Path],
           cell) -> str:
    """The page's HTML; `cell(row, column)` formats a table cell as the text report does."""
    e = html.escape
    head = ["configuration", "n", *names, "steps", "train s", "status"]
    cols = [None, None, *names, "steps", "train_time", None]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>genlab report</title>", f"<style>{STYLE}</style></head><body>", "<h1>genlab report</h1>"]
    n_runs = sum(len(m) for m in groups.values())
    shared = " ".join(f"{k}={v}" for k, v in common.items())
    out.append(f"<p>{n_runs} runs in {len(rows)} configurations" + (
        f"; common: <span class=\"common\">{e(shared)}</span>" if shared else "") + "</p>")
    out += ["<h2>Metrics</h2>", "<p>Mean ± std over seeds; the best value of each metric (by its direction) is "
            "marked * and shaded. Click a column to sort.</p>",
            '<table class="sortable" id="metrics"><thead><tr>'
            + "".join(f"<th>{_header(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        tds = []
        for h, c in zip(head, cols):
            if h == "configuration":
                tds.append(f'<td data-sort="{e(r["configuration"])}">{e(r["configuration"])}</td>')
            elif h == "n":
                tds.append(f'<td data-sort="{r["n"]}">{r["n"]}</td>')
            elif h == "status":
                tds.append(f'<td data-sort="{e(r["status"])}">{e(r["status"])}</td>')
            else:
                value = "" if r[c] is None else repr(float(r[c][0]))
                best = ' class="best"' if c in r.get("best", ()) else ""
                tds.append(f'<td data-sort="{value}"{best}>{e(cell(r, c))}</td>')
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody></table>", "<h2>Samples</h2>",
            "<p>Each configuration's final sample grid (for several seeds, the first seed's run).</p>",
            '<div class="grids">']
    for label, members in groups.items():
        shown = first_seed(members)
        grid = final_grid(Path(shown["run"]))
        caption = e(label) + (f" (seed {e(str(shown['seed']))})" if shown.get("seed") is not None else "")
        if grid is not None:
            step = re.sub(r"\D", "", grid.stem).lstrip("0") or "0"
            out.append(f'<figure class="grid"><img src="{data_uri(grid)}" alt="samples of {e(label)}">'
                       f"<figcaption>{caption}, step {step}</figcaption></figure>")
        else:
            out.append(f'<figure class="grid"><div class="missing">no sample grid</div>'
                       f"<figcaption>{caption}</figcaption></figure>")
    out.append("</div>")
    if pngs:
        out += ["<h2>Curves</h2>", '<div class="plots">']
        for p in pngs:
            out.append(f'<figure class="plot"><img src="{data_uri(p)}" alt="{e(p.stem)}">'
                       f"<figcaption>{e(p.name)}</figcaption></figure>")
        out.append("</div>")
    out += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(out) + "\n"
