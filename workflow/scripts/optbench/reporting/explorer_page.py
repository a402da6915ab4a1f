"""The explorer's page: HTML, style and script (optbench.reporting.explorer fills it).

The script inflates the packed plotly.js and data (gzip, base64) with the
browser's DecompressionStream, then draws. What it draws, the browser test
reads back (tests/test_browser.py): every chart is a div of class ``chart``
whose ``data`` is Plotly's list of traces, and ``document.body`` gets
``data-ready="1"`` once the first drawing is done (``data-error`` on failure).
"""

from __future__ import annotations

import html

STYLE = """
body{font-family:sans-serif;margin:0.8em;font-size:13px;color:#222}
h2{font-size:15px;margin:1.2em 0 0.3em}
#controls{display:flex;flex-wrap:wrap;gap:0.8em;align-items:flex-start}
#controls fieldset{border:1px solid #ccc;padding:0.3em 0.5em}
#controls select[multiple]{min-width:9em;height:7em}
.chart{width:100%;height:420px}
.note{color:#555;max-width:70em}
table{border-collapse:collapse;margin-top:0.3em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#eee;cursor:pointer;position:sticky;top:0}
th[data-order=asc]::after{content:' \\25B2'}th[data-order=desc]::after{content:' \\25BC'}
td.text{text-align:left}tbody tr:nth-child(even){background:#fafafa}
.tablebox{max-height:28em;overflow:auto;margin-bottom:1em}
#status{color:#a00}
"""

SCRIPT = r"""
"use strict";
var DATA = null;
var PALETTE = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2",
               "#7f7f7f","#bcbd22","#17becf"];
var DASHES = ["solid","dash","dot","dashdot","longdash","longdashdot"];
var state = {role: "evaluation", metric: "train", seeds: "band", xlog: false, ylog: true,
             chosen: {}, parameter: null, trial: null};

async function inflate(id) {
  var text = document.getElementById(id).textContent.trim();
  var binary = atob(text), bytes = new Uint8Array(binary.length);
  for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

function distinct(values) {
  var seen = [];
  values.forEach(function (v) { if (seen.indexOf(v) < 0) seen.push(v); });
  return seen;
}

function colorOf(optimizer) {
  var names = distinct(DATA.cells.map(function (c) { return c.cell.optimizer; }));
  return PALETTE[names.indexOf(optimizer) % PALETTE.length];
}

function tableRows(name) {
  var t = DATA.tables[name];
  return t.rows.map(function (row) {
    var o = {};
    t.columns.forEach(function (c, i) { o[c] = row[i]; });
    return o;
  });
}

function num(text) {
  var lower = String(text).toLowerCase();
  if (lower === "inf") return Infinity;
  if (lower === "-inf") return -Infinity;
  if (text === "" || lower === "nan") return null;
  var n = Number(text);
  return isNaN(n) ? null : n;
}

// --- Selection ---------------------------------------------------------
function defaultChoice() {
  // Every value of each field, but only the variants the selection chose
  // (selection.tsv) and the first (problem, loss): a readable first view.
  var chosen = {};
  DATA.fields.forEach(function (f) {
    chosen[f] = distinct(DATA.cells.map(function (c) { return c.cell[f]; }));
  });
  var picked = tableRows("selection").map(function (r) { return r.variant; });
  if (picked.length && chosen.variant) chosen.variant = distinct(picked);
  ["problem", "loss"].forEach(function (f) {
    if (chosen[f] && chosen[f].length > 1) chosen[f] = [chosen[f][0]];
  });
  return chosen;
}

function selectedCells() {
  return DATA.cells.filter(function (c) {
    return c.role === state.role && DATA.fields.every(function (f) {
      return state.chosen[f].indexOf(c.cell[f]) >= 0;
    });
  });
}

function buildControls() {
  var box = document.getElementById("fields");
  box.innerHTML = "";
  DATA.fields.forEach(function (f) {
    var set = document.createElement("fieldset");
    set.innerHTML = "<legend>" + f + "</legend>";
    var select = document.createElement("select");
    select.multiple = true;
    select.id = "select-" + f;
    distinct(DATA.cells.filter(function (c) { return c.role === state.role; })
      .map(function (c) { return c.cell[f]; })).forEach(function (v) {
      var option = document.createElement("option");
      option.value = v; option.textContent = v;
      option.selected = state.chosen[f].indexOf(v) >= 0;
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      state.chosen[f] = Array.prototype.filter.call(select.options, function (o) {
        return o.selected; }).map(function (o) { return o.value; });
      state.trial = null;
      drawAll();
    });
    set.appendChild(select);
    box.appendChild(set);
  });
  var roles = distinct(DATA.cells.map(function (c) { return c.role; }));
  var role = document.getElementById("role");
  role.innerHTML = roles.map(function (r) {
    return "<option" + (r === state.role ? " selected" : "") + ">" + r + "</option>"; }).join("");
}

function setRadio(name, value) {
  Array.prototype.forEach.call(document.getElementsByName(name), function (input) {
    input.checked = input.value === String(value);
  });
}

// --- Curves --------------------------------------------------------------
function panelKey(cell) { return cell.problem + " / " + cell.loss; }

function curveTraces(cells) {
  var traces = [];
  var variantsOf = {};
  cells.forEach(function (entry) {
    var curve = state.metric === "train" ? entry.train : entry.heldout;
    if (!curve) return;
    var cell = entry.cell;
    var label = cell.optimizer + " " + cell.variant;
    DATA.fields.forEach(function (f) {
      if (["problem", "loss", "optimizer", "variant"].indexOf(f) < 0) {
        label += " " + f + "=" + cell[f];
      }
    });
    var list = variantsOf[cell.optimizer] = variantsOf[cell.optimizer] || [];
    if (list.indexOf(cell.variant) < 0) list.push(cell.variant);
    var color = colorOf(cell.optimizer);
    var dash = DASHES[list.indexOf(cell.variant) % DASHES.length];
    if (state.seeds === "band") {
      if (curve.low) {
        traces.push({x: curve.step, y: curve.low, mode: "lines", line: {width: 0, color: color},
                     showlegend: false, legendgroup: label, hoverinfo: "skip",
                     name: label + " band"});
        traces.push({x: curve.step, y: curve.high, mode: "lines", line: {width: 0, color: color},
                     fill: "tonexty", opacity: 0.2, fillcolor: color + "33", showlegend: false,
                     legendgroup: label, hoverinfo: "skip", name: label + " band"});
      }
      traces.push({x: curve.step, y: curve.center, mode: "lines", name: label, legendgroup: label,
                   line: {color: color, dash: dash, width: 2},
                   hovertemplate: label + "<br>step %{x}<br>%{y:.4g}<extra></extra>"});
    } else {
      curve.lines.forEach(function (line, i) {
        traces.push({x: curve.step, y: line, mode: "lines", name: label + " seed " + curve.seeds[i],
                     legendgroup: label, line: {color: color, dash: dash, width: 1},
                     hovertemplate: label + " seed " + curve.seeds[i] +
                       "<br>step %{x}<br>%{y:.4g}<extra></extra>"});
      });
    }
  });
  return traces;
}

function drawCurves() {
  var box = document.getElementById("curves");
  var groups = {};
  selectedCells().forEach(function (c) {
    var key = panelKey(c.cell);
    (groups[key] = groups[key] || []).push(c);
  });
  var keys = Object.keys(groups);
  Array.prototype.forEach.call(box.querySelectorAll(".chart"), function (d) { Plotly.purge(d); });
  box.innerHTML = keys.length ? "" : "<p class='note'>No cell matches the selection.</p>";
  var what = state.metric === "train" ? "training loss" : "held-out loss";
  keys.forEach(function (key, i) {
    var div = document.createElement("div");
    div.className = "chart"; div.id = "curves-" + i;
    box.appendChild(div);
    var traces = curveTraces(groups[key]);
    var title = key + ": " + what + " (" + state.role + " seeds; " +
      (state.seeds === "band" ? DATA.band : "one line per seed") + ")";
    if (!traces.length) title += ": no " + what + " recorded (eval_every)";
    Plotly.react(div, traces, {
      title: {text: title, font: {size: 13}},
      xaxis: {title: {text: "step"}, type: state.xlog ? "log" : "linear"},
      yaxis: {title: {text: what}, type: state.ylog ? "log" : "linear", exponentformat: "e"},
      hovermode: "closest", margin: {t: 40, r: 10}, legend: {font: {size: 11}}
    }, {displaylogo: false, responsive: true});
  });
  var note = document.getElementById("trial-note");
  note.textContent = state.trial ? "Showing the runs of trial " + state.trial +
    " (clicked in the sensitivity view)." : "";
}

// --- Sensitivity ---------------------------------------------------------
function sensitivityRows() {
  return tableRows("sensitivity").filter(function (r) {
    return r.parameter && r.parameter !== "nan" &&
      state.chosen.problem.indexOf(r.problem) >= 0 && state.chosen.loss.indexOf(r.loss) >= 0 &&
      state.chosen.optimizer.indexOf(r.optimizer) >= 0;
  });
}

function drawSensitivity() {
  var rows = sensitivityRows();
  var parameters = distinct(rows.map(function (r) { return r.parameter; }));
  var select = document.getElementById("parameter");
  if (parameters.indexOf(state.parameter) < 0) state.parameter = parameters[0] || null;
  select.innerHTML = parameters.map(function (p) {
    return "<option" + (p === state.parameter ? " selected" : "") + ">" + p + "</option>";
  }).join("");
  var div = document.getElementById("sensitivity");
  var centre = DATA.band.indexOf("median") === 0 ? "median" : "geo_mean";
  var traces = [];
  var groups = {};
  rows.filter(function (r) { return r.parameter === state.parameter; }).forEach(function (r) {
    var key = r.optimizer + " (" + r.problem + " / " + r.loss + ")";
    (groups[key] = groups[key] || []).push(r);
  });
  Object.keys(groups).forEach(function (key) {
    var g = groups[key];
    traces.push({x: g.map(function (r) { return num(r.value); }),
                 y: g.map(function (r) { return num(r[centre]); }),
                 customdata: g.map(function (r) {
                   return [r.problem, r.loss, r.optimizer, r.variant]; }),
                 mode: "markers", name: key,
                 marker: {color: colorOf(g[0].optimizer), size: 9,
                          symbol: g.map(function (r) {
                            return r.selected === "True" ? "star" : "circle"; })},
                 hovertemplate: "%{customdata[2]} %{customdata[3]}<br>" + state.parameter +
                   " = %{x:.4g}<br>" + centre + " = %{y:.4g}<extra>click: its runs</extra>"});
  });
  var values = traces.reduce(function (a, t) { return a.concat(t.x); }, []).filter(function (v) {
    return v !== null; });
  var logx = values.length && Math.min.apply(null, values) > 0 &&
    Math.max.apply(null, values) / Math.min.apply(null, values) > 100;
  Plotly.react(div, traces, {
    title: {text: traces.length ? "Every trial: " + state.parameter + " against the final " +
      centre + " of its ranking metric (star: chosen); click a trial to show its runs" :
      "No searched or swept hyper-parameter in the selection", font: {size: 13}},
    xaxis: {title: {text: state.parameter || ""}, type: logx ? "log" : "linear"},
    yaxis: {title: {text: centre}, type: "log", exponentformat: "e"},
    hovermode: "closest", margin: {t: 40, r: 10}
  }, {displaylogo: false, responsive: true});
  div.removeAllListeners && div.removeAllListeners("plotly_click");
  div.on("plotly_click", function (event) {
    var d = event.points[0].customdata;
    showTrial(d[0], d[1], d[2], d[3]);
  });
}

function showTrial(problem, loss, optimizer, variant) {
  // The trial's runs: its tuning seeds where it has any, else its evaluation seeds.
  var has = function (role) {
    return DATA.cells.some(function (c) {
      return c.role === role && c.cell.problem === problem && c.cell.loss === loss &&
        c.cell.optimizer === optimizer && c.cell.variant === variant;
    });
  };
  state.role = has("tuning") ? "tuning" : "evaluation";
  state.chosen.problem = [problem]; state.chosen.loss = [loss];
  state.chosen.optimizer = [optimizer]; state.chosen.variant = [variant];
  state.seeds = "lines";
  state.trial = optimizer + " " + variant + " on " + problem + " / " + loss;
  buildControls();
  setRadio("seeds", "lines");
  drawCurves();
  drawSpeedups();
}

// --- Speed-ups and best-of-k ---------------------------------------------
function inSelection(r) {
  return state.chosen.problem.indexOf(r.problem) >= 0 && state.chosen.loss.indexOf(r.loss) >= 0;
}

function drawSpeedups() {
  var rows = tableRows("baseline").filter(inSelection);
  var traces = [];
  [["speedup", "steps"], ["time_speedup", "wall-clock time"]].forEach(function (pair, i) {
    var kept = rows.filter(function (r) { return num(r[pair[0]]) !== null; });
    if (!kept.length) return;
    traces.push({
      x: kept.map(function (r) { return r.optimizer + " (" + r.problem + " / " + r.loss + ", " +
        r.measure + ")"; }),
      y: kept.map(function (r) { return num(r[pair[0]]); }),
      error_y: {type: "data", symmetric: false,
        array: kept.map(function (r) { var h = num(r[pair[0] + "_high"]), y = num(r[pair[0]]);
          return h === null || !isFinite(h) ? 0 : h - y; }),
        arrayminus: kept.map(function (r) { var l = num(r[pair[0] + "_low"]), y = num(r[pair[0]]);
          return l === null || !isFinite(l) ? 0 : y - l; })},
      customdata: kept.map(function (r) {
        var l = num(r[pair[0] + "_low"]), h = num(r[pair[0] + "_high"]);
        return l === null || h === null ? "no interval: " + r[pair[0] + "_ci_method"] :
          "interval " + l.toPrecision(3) + " .. " + h.toPrecision(3) + " (" +
          r[pair[0] + "_ci_method"] + ")"; }),
      mode: "markers", type: "scatter", name: "speed-up in " + pair[1],
      marker: {size: 10, symbol: i ? "diamond" : "circle"},
      hovertemplate: "%{x}<br>%{y:.3g}x, %{customdata}<extra>" + pair[1] + "</extra>"});
  });
  var baseline = rows.length ? rows[0].baseline : "";
  Plotly.react(document.getElementById("speedups"), traces, {
    title: {text: traces.length ? "Speed-up over " + baseline +
      " (bars: the interval of baseline.tsv; 1 = as fast)" :
      "No speed-up over a baseline in the selection (config key baseline)", font: {size: 13}},
    yaxis: {type: "log", title: {text: "speed-up (x)"}}, margin: {t: 40, r: 10, b: 140},
    shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: 1, y1: 1, line: {dash: "dot"}}]
  }, {displaylogo: false, responsive: true});

  var bk = tableRows("best_of_k").filter(inSelection);
  var groups = {};
  bk.forEach(function (r) {
    var key = r.optimizer + " (" + r.problem + " / " + r.loss + ")";
    (groups[key] = groups[key] || []).push(r);
  });
  var kTraces = Object.keys(groups).map(function (key) {
    var g = groups[key];
    return {x: g.map(function (r) { return num(r.k); }),
            y: g.map(function (r) { return num(r.expected_log10); }),
            mode: "lines+markers", name: key, line: {color: colorOf(g[0].optimizer)},
            hovertemplate: key + "<br>k = %{x}<br>expected log10 = %{y:.4g}<extra></extra>"};
  });
  Plotly.react(document.getElementById("bestofk"), kTraces, {
    title: {text: kTraces.length ? "Best of k trials: expected log10 of the best trial's metric" :
      "No search in the selection (best_of_k.tsv is empty)", font: {size: 13}},
    xaxis: {title: {text: "k (trials)"}}, yaxis: {title: {text: "expected log10"}},
    margin: {t: 40, r: 10}
  }, {displaylogo: false, responsive: true});
}

// --- Tables: sortable and filterable -------------------------------------
function cellOrder(text) {
  var n = num(text);
  if (n === null) return [2, 0];
  return [0, n];
}

function buildTable(name) {
  var t = DATA.tables[name];
  var box = document.getElementById("table-" + name);
  var filter = document.createElement("input");
  filter.type = "search"; filter.placeholder = "filter: words that every shown row contains";
  filter.size = 50; filter.id = "filter-" + name;
  var count = document.createElement("span");
  var table = document.createElement("table");
  table.id = "tab-" + name;
  var head = "<thead><tr>" + t.columns.map(function (c) { return "<th>" + c + "</th>"; }).join("") +
    "</tr></thead>";
  var body = t.rows.map(function (row) {
    return "<tr>" + row.map(function (v) {
      var n = num(v);
      return n === null && v !== "nan" ? "<td class='text'>" + v.replace(/</g, "&lt;") + "</td>" :
        "<td title='" + v + "'>" + (n === null || !isFinite(n) || Number.isInteger(n) ? v :
          Number(n.toPrecision(4))) + "</td>";
    }).join("") + "</tr>";
  }).join("");
  table.innerHTML = head + "<tbody>" + body + "</tbody>";
  var scroll = document.createElement("div");
  scroll.className = "tablebox";
  scroll.appendChild(table);
  box.appendChild(filter); box.appendChild(count); box.appendChild(scroll);
  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row, i) {
      var text = t.rows[row.getAttribute("data-i") | 0].join(" ").toLowerCase();
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      row.style.display = ok ? "" : "none";
      if (ok) shown++;
    });
    count.textContent = " " + shown + " of " + t.rows.length + " rows";
  }
  Array.prototype.forEach.call(table.tBodies[0].rows, function (row, i) {
    row.setAttribute("data-i", i); });
  filter.addEventListener("input", applyFilter);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("data-order") !== "asc";
      Array.prototype.forEach.call(th.parentNode.cells, function (c) {
        c.removeAttribute("data-order"); });
      th.setAttribute("data-order", ascending ? "asc" : "desc");
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      rows.sort(function (x, y) {
        var a = cellOrder(t.rows[x.getAttribute("data-i")][index]);
        var b = cellOrder(t.rows[y.getAttribute("data-i")][index]);
        if (a[0] !== b[0]) return a[0] - b[0];
        if (a[0] === 2) return 0;
        var sa = a[1], sb = b[1];
        if (isNaN(sa) || isNaN(sb)) { sa = t.rows[x.getAttribute("data-i")][index];
                                      sb = t.rows[y.getAttribute("data-i")][index]; }
        var order = sa < sb ? -1 : sa > sb ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
    });
  });
  applyFilter();
}

function drawAll() {
  drawCurves();
  drawSensitivity();
  drawSpeedups();
}

function wire() {
  document.getElementById("role").addEventListener("change", function (e) {
    state.role = e.target.value; state.trial = null; buildControls(); drawAll(); });
  document.getElementById("parameter").addEventListener("change", function (e) {
    state.parameter = e.target.value; drawSensitivity(); });
  [["metric", "metric"], ["seeds", "seeds"], ["xscale", "xlog"], ["yscale", "ylog"]].forEach(
    function (pair) {
      Array.prototype.forEach.call(document.getElementsByName(pair[0]), function (input) {
        input.addEventListener("change", function () {
          var v = input.value;
          state[pair[1]] = v === "true" ? true : v === "false" ? false : v;
          drawCurves();
        });
      });
    });
}

async function start() {
  try {
    var code = await inflate("plotly-packed");
    var script = document.createElement("script");
    script.textContent = code;
    document.head.appendChild(script);
    DATA = JSON.parse(await inflate("data-packed"));
    state.chosen = defaultChoice();
    buildControls();
    wire();
    Object.keys(DATA.tables).forEach(buildTable);
    drawAll();
    document.getElementById("limits").textContent = "Curves longer than " +
      DATA.downsampling.max_points + " steps are drawn at " + DATA.downsampling.max_points +
      " steps at most (evenly and geometrically spaced, the first and last included), values to " +
      DATA.downsampling.digits + " significant digits; the tables and run files keep every value.";
    document.body.setAttribute("data-ready", "1");
  } catch (error) {
    document.getElementById("status").textContent = "The explorer could not start: " + error +
      ". It needs a browser with DecompressionStream " +
      "(Chrome/Edge 80+, Firefox 113+, Safari 16.4+).";
    document.body.setAttribute("data-error", String(error));
    throw error;
  }
}
start();
"""

BODY = """
<p id="status"></p>
<div id="controls">
  <fieldset><legend>seeds of</legend><select id="role"></select></fieldset>
  <span id="fields" style="display:contents"></span>
  <fieldset><legend>curve</legend>
    <label><input type="radio" name="metric" value="train" checked> training loss</label><br>
    <label><input type="radio" name="metric" value="heldout"> held-out loss</label></fieldset>
  <fieldset><legend>seeds as</legend>
    <label><input type="radio" name="seeds" value="band" checked> centre and band</label><br>
    <label><input type="radio" name="seeds" value="lines"> one line per seed</label></fieldset>
  <fieldset><legend>step axis</legend>
    <label><input type="radio" name="xscale" value="false" checked> linear</label><br>
    <label><input type="radio" name="xscale" value="true"> log</label></fieldset>
  <fieldset><legend>loss axis</legend>
    <label><input type="radio" name="yscale" value="false"> linear</label><br>
    <label><input type="radio" name="yscale" value="true" checked> log</label></fieldset>
</div>
<p class="note">Pick several values with Ctrl or Shift. A diverged run's line stops at its
first non-finite loss. <span id="limits"></span> <b id="trial-note"></b></p>
<div id="curves"></div>
<h2>Sensitivity: every trial</h2>
<label>hyper-parameter <select id="parameter"></select></label>
<div id="sensitivity" class="chart"></div>
<h2>Speed-ups over the baseline, and best of k</h2>
<div id="speedups" class="chart"></div>
<div id="bestofk" class="chart"></div>
<h2>Tables (click a column's name to sort; type to filter)</h2>
<h3>leaderboard.tsv</h3><div id="table-leaderboard"></div>
<h3>baseline.tsv</h3><div id="table-baseline"></div>
<h3>best_of_k.tsv</h3><div id="table-best_of_k"></div>
<h3>sensitivity.tsv</h3><div id="table-sensitivity"></div>
<h3>selection.tsv</h3><div id="table-selection"></div>
"""


def render(title: str, data_packed: str, plotly_packed: str) -> str:
    """The page, with the packed data and plotly.js (base64 of gzip) inside."""
    return "\n".join(
        [
            '<!DOCTYPE html><html><head><meta charset="utf-8">',
            f"<title>Explorer: {html.escape(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1 style='font-size:17px'>Explorer: {html.escape(title)}</h1>",
            BODY,
            f'<script type="application/octet-stream" id="plotly-packed">{plotly_packed}</script>',
            f'<script type="application/octet-stream" id="data-packed">{data_packed}</script>',
            f"<script>{SCRIPT}</script>",
            "</body></html>\n",
        ]
    )
