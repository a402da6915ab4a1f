"""Each analysis table as a page the report opens: an HTML table, sortable by a
click on a column's header and filtered by the words typed in its box, with
the TSV itself one click away.

Snakemake's report offers a registered TSV for download only; an HTML file it
shows inside the report. So every table of ``outputs.TABLES`` gets a page
beside its TSV (results/summary/pages/NAME.html), written from the TSV's own
text (numbers shown to 4 digits, each cell's full text on hover and in the
TSV), within the report's budget for a page (``PAGE_BYTES``).
Self-contained: the sorting script and the style are inline (the report
opens offline; no CDN), and a small TSV rides along as a data: link, so the
page alone gives the file back.
"""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from optbench import runfiles

# Sorts by the clicked column: numbers (inf, -inf, nan included) as numbers,
# other text alphabetically; a second click reverses. Empty and nan cells go last.
SORT_SCRIPT = """
function cellValue(row, index) {
  var cell = row.cells[index];
  var text = (cell.getAttribute("data-v") || cell.textContent).trim();
  var lower = text.toLowerCase();
  if (lower === "inf" || lower === "+inf") return [0, Infinity];
  if (lower === "-inf") return [0, -Infinity];
  if (text === "" || lower === "nan") return [2, 0];
  var number = Number(text);
  return isNaN(number) ? [1, text] : [0, number];
}
function sortBy(header) {
  var table = header.closest("table"), body = table.tBodies[0];
  var index = Array.prototype.indexOf.call(header.parentNode.cells, header);
  var ascending = header.getAttribute("data-order") !== "asc";
  Array.prototype.forEach.call(header.parentNode.cells, function (c) {
    c.removeAttribute("data-order");
  });
  header.setAttribute("data-order", ascending ? "asc" : "desc");
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (x, y) {
    var a = cellValue(x, index), b = cellValue(y, index);
    if (a[0] !== b[0]) return a[0] - b[0];
    if (a[0] === 2) return 0;
    var order = a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
    return ascending ? order : -order;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
// Keeps the rows whose cells hold every word typed (case aside), and counts them.
function filterRows(box) {
  var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
  var body = document.querySelector("table").tBodies[0], shown = 0;
  Array.prototype.forEach.call(body.rows, function (row) {
    var text = Array.prototype.map.call(row.cells, function (c) {
      return c.getAttribute("data-v") || c.textContent; }).join(" ").toLowerCase();
    var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
    row.style.display = keep ? "" : "none";
    if (keep) shown++;
  });
  document.getElementById("shown").textContent = shown + " of " + body.rows.length + " rows shown";
}
"""

# A number's full text (data-v) as the title of the cell under the pointer:
# one copy of it in the page instead of two.
HOVER_SCRIPT = """
document.addEventListener("mouseover", function (event) {
  var cell = event.target.closest && event.target.closest("td[data-v]");
  if (cell && !cell.title) cell.title = cell.getAttribute("data-v");
});
"""

STYLE = (
    "body{font-family:sans-serif;margin:1em;font-size:13px}"
    "table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
    "th{background:#eee;cursor:pointer;position:sticky;top:0}"
    "th[data-order=asc]::after{content:' \\25B2'}th[data-order=desc]::after{content:' \\25BC'}"
    "td.text{text-align:left}tbody tr:nth-child(even){background:#fafafa}"
    "tbody tr:hover{background:#eef4ff}"
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# Shown digits of a number with a fraction; the full value sorts the column
# and shows on hover, and the TSV keeps it.
SHOWN_DIGITS = 4


def short(text: str) -> str:
    """A number's text as shown: integers and inf/nan as written, others to
    ``SHOWN_DIGITS`` significant digits."""
    if text.lstrip("+-").isdigit() or text.lower().lstrip("+-") in ("inf", "nan"):
        return text
    return f"{float(text):.{SHOWN_DIGITS}g}"


# The report's budget for a table page (docs/report.md, "Size"). Chromium
# opens a report entry as a data: URL and refuses one over 2 MB (the entry
# stays blank), and the modern study's report (3,055 runs) must stay under
# 15 MB with its twenty pages: a page stays under this many bytes (about
# 0.67 MB as base64 inside the report). It carries its TSV as a download link
# only while the TSV is small, and shows the rows that fit, saying so; the
# whole table is the TSV, which the report offers for download beside the
# page, or the study's summary folder (the scaling study's steps.tsv, 19 MB,
# made an 87 MB page before; at 1.5 MB a page, the modern study's report was
# 20.2 MB).
PAGE_BYTES = 500_000
LINKED_TSV_BYTES = 150_000


def _cell_html(cell: str) -> str:
    if not _is_number(cell):
        return f'<td class="text">{html.escape(cell)}</td>'
    shown = short(cell)
    if shown == cell:  # integers, inf, nan, short decimals: the text is the value
        return f"<td>{shown}</td>"
    # The full value once: it sorts the column, and HOVER_SCRIPT shows it as
    # the cell's title when the pointer is over it.
    return f'<td data-v="{html.escape(cell)}">{shown}</td>'


def _row_html(row: list[str]) -> str:
    return "<tr>" + "".join(_cell_html(cell) for cell in row) + "</tr>"


def _lines(text: str):
    """The lines of ``text`` one at a time, each with its newline (csv.reader's
    input; io.StringIO would copy the whole text, four bytes a character)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def page(tsv_text: str, file_name: str, caption: str = "") -> str:
    """The HTML page of one table, from its TSV text; ``caption`` (HTML) above it."""
    # Row by row: a 10^6-run runs.tsv held as lists of cells took 3 GB.
    rows = csv.reader(_lines(tsv_text), delimiter="\t")
    header = next(rows, [])
    name = html.escape(file_name)
    encoded = tsv_text.encode("utf-8")
    link = ""
    if len(encoded) <= LINKED_TSV_BYTES:
        data = base64.b64encode(encoded).decode("ascii")
        link = (
            f' <a download="{name}" '
            f'href="data:text/tab-separated-values;base64,{data}">Download the TSV</a>'
        )
    budget = PAGE_BYTES - len(link) - len(caption) - len(SORT_SCRIPT + HOVER_SCRIPT) - 4000
    shown, total = [], 0
    for row in rows:
        total += 1
        if budget < 0:
            continue  # counted, not shown
        line = _row_html(row)
        budget -= len(line.encode("utf-8")) + 1
        if budget >= 0:
            shown.append(line)
    if len(shown) < total:
        extent = (
            f"{total:,} rows, {len(header)} columns; the first {len(shown):,} are shown "
            f"(sorting and the filter act on these). The whole table: {name} in the report's "
            "download list, or in the study's summary folder."
        )
    else:
        extent = (
            f"{total} rows, {len(header)} columns. Click a column's name to sort by it; "
            "type words to keep the rows holding them."
        )
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f"<title>{name}</title><style>{STYLE}</style>",
        f"<script>{SORT_SCRIPT}{HOVER_SCRIPT}</script></head><body>",
        f"<p><b>{name}</b>: {extent}{link}</p>",
    ]
    parts.append(
        '<p><input type="search" id="filter" size="50" placeholder="filter: words every row '
        'shown holds" oninput="filterRows(this)"> <span id="shown"></span></p>'
    )
    if caption:
        parts.append(f"<div>{caption}</div>")
    parts.append("<table><thead><tr>")
    parts += [f'<th onclick="sortBy(this)">{html.escape(name)}</th>' for name in header]
    parts.append("</tr></thead><tbody>")
    parts += shown
    parts.append("</tbody></table></body></html>\n")
    return "\n".join(parts)


def write_pages(tsv_paths: dict, page_paths: dict) -> None:
    """``tsv_paths``/``page_paths``: table name -> path. Writes each page atomically."""
    for name, out in page_paths.items():
        tsv = Path(tsv_paths[name])
        runfiles.write_text_atomic(out, page(tsv.read_text(encoding="utf-8"), tsv.name))
