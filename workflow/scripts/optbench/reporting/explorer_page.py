"""The explorer's page: HTML, style and script (optbench.reporting.explorer fills it).

The script inflates the packed data (gzip, base64) with the browser's
DecompressionStream, then draws with ``CHARTS``, a small SVG drawer with the
part of Plotly's interface it needs. What it draws, the browser test reads
back (tests/test_browser.py): every chart is a div of class ``chart`` whose
``data`` is its list of traces (x, y, names), and ``document.body`` gets
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

# A small SVG chart drawer (no third-party code: the report's single HTML file
# opens each result as a data: URL, which Chromium caps at 2 MB, so plotly.js
# (4.8 MB) cannot ride inside the page).
CHARTS = r"""
// A small SVG chart drawer with the part of Plotly's interface the explorer
// uses: Charts.react(div, traces, layout) keeps the traces as div.data and the
// layout as div.layout (what the browser test reads back) and draws lines,
// markers, bands (fill "tonexty"), error bars, log or linear axes, a legend,
// hover values and click events (div.on("plotly_click", f)).
var Charts = (function () {
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function usable(v, log) {
    return typeof v === "number" && isFinite(v) && (!log || v > 0);
  }

  function format(v, spec) {
    if (typeof v !== "number") return String(v);
    var digits = spec ? parseInt(spec.replace(/[^0-9]/g, ""), 10) || 4 : 6;
    return Number(v.toPrecision(digits)).toString();
  }

  function fill(template, trace, i) {
    var text = template.replace(/<extra>.*?<\/extra>/g, "").replace(/<br>/g, "\n");
    var field = /%\{([a-zA-Z_.]+)(\[(\d+)\])?(:[^}]*)?\}/g;
    return text.replace(field, function (_, key, __, index, spec) {
      var value;
      if (key === "x") value = trace.x[i];
      else if (key === "y") value = trace.y[i];
      else if (key === "customdata") {
        value = trace.customdata[i];
        if (index !== undefined) value = value[+index];
      } else if (key === "fullData.name") value = trace.name;
      return format(value, spec);
    });
  }

  function niceStep(span, count) {
    var raw = span / count, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= raw) return steps[i] * power;
    return 10 * power;
  }

  function axis(values, type, categories) {
    if (categories) return {categories: categories, lo: -0.5, hi: categories.length - 0.5};
    var log = type === "log";
    var kept = values.filter(function (v) { return usable(v, log); });
    var lo = kept.length ? Math.min.apply(null, kept) : (log ? 0.1 : 0);
    var hi = kept.length ? Math.max.apply(null, kept) : (log ? 10 : 1);
    if (log) {
      lo = Math.log10(lo); hi = Math.log10(hi);
      if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
      var pad = (hi - lo) * 0.05;
      return {log: true, lo: lo - pad, hi: hi + pad};
    }
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    var margin = (hi - lo) * 0.05;
    return {log: false, lo: lo - margin, hi: hi + margin};
  }

  function position(ax, v, a, b) {
    var u;
    if (ax.categories) u = ax.categories.indexOf(String(v));
    else if (ax.log) u = v > 0 ? Math.log10(v) : NaN;
    else u = v;
    return a + (u - ax.lo) / (ax.hi - ax.lo) * (b - a);
  }

  function tickValues(ax) {
    if (ax.categories) return ax.categories.map(function (c) { return [c, c]; });
    if (ax.log) {
      var out = [], first = Math.ceil(ax.lo), last = Math.floor(ax.hi);
      var every = Math.max(1, Math.ceil((last - first + 1) / 8));
      // Under two decades: 1, 2 and 5 times each power of ten, else the powers.
      var multiples = ax.hi - ax.lo < 2 ? [1, 2, 5] : [1];
      for (var p = Math.floor(ax.lo); p <= last; p += every) {
        multiples.forEach(function (m) {
          var v = m * Math.pow(10, p), u = Math.log10(v);
          if (u >= ax.lo && u <= ax.hi) out.push([v, m === 1 && multiples.length === 1 ?
            "1e" + p : format(v, "3")]);
        });
      }
      var middle = Math.pow(10, (ax.lo + ax.hi) / 2);
      if (!out.length) out.push([middle, format(middle, "3")]);
      return out;
    }
    var step = niceStep(ax.hi - ax.lo, 6), ticks = [];
    for (var v = Math.ceil(ax.lo / step) * step; v <= ax.hi + 1e-12; v += step) {
      ticks.push([v, format(Math.abs(v) < step * 1e-9 ? 0 : v, "4")]);
    }
    return ticks;
  }

  function draw(div) {
    var traces = div.data, layout = div.layout || {};
    div.innerHTML = "";
    div.style.position = "relative";
    var width = div.clientWidth || 900, height = div.clientHeight || 420;
    var legend = traces.filter(function (t) { return t.showlegend !== false && t.name; });
    var margin = {l: 70, r: legend.length ? 230 : 20, t: 40,
                  b: (layout.margin && layout.margin.b) || 50};
    var svg = el("svg", {width: width, height: height, "class": "main-svg"}, div);
    var x0 = margin.l, x1 = width - margin.r, y0 = height - margin.b, y1 = margin.t;
    var xType = (layout.xaxis || {}).type, yType = (layout.yaxis || {}).type;
    var categorical = traces.some(function (t) { return typeof t.x[0] === "string"; });
    var categories = null;
    if (categorical) {
      categories = [];
      traces.forEach(function (t) { t.x.forEach(function (v) {
        if (categories.indexOf(String(v)) < 0) categories.push(String(v)); }); });
    }
    var xs = [], ys = [];
    traces.forEach(function (t) {
      xs = xs.concat(t.x);
      t.y.forEach(function (v, i) {
        ys.push(v);
        if (t.error_y && typeof v === "number") {
          ys.push(v + (t.error_y.array[i] || 0), v - (t.error_y.arrayminus[i] || 0));
        }
      });
    });
    (layout.shapes || []).forEach(function (s) { ys.push(s.y0); });
    var xa = axis(xs, xType, categories), ya = axis(ys, yType, null);
    var X = function (v) { return position(xa, v, x0, x1); };
    var Y = function (v) { return position(ya, v, y0, y1); };
    var title = layout.title && layout.title.text;
    if (title) {
      el("text", {x: (x0 + x1) / 2, y: 20, "text-anchor": "middle", "font-size": 13,
                  "class": "gtitle"}, svg).textContent = title;
    }
    var grid = el("g", {stroke: "#e5e5e5"}, svg);
    var labels = el("g", {"font-size": 11, fill: "#444"}, svg);
    tickValues(xa).forEach(function (t) {
      var x = X(t[0]);
      el("line", {x1: x, x2: x, y1: y0, y2: y1}, grid);
      var anchor = categorical ? "end" : "middle";
      var label = el("text", {x: x, y: y0 + 15, "text-anchor": anchor}, labels);
      if (categorical) label.setAttribute("transform", "rotate(-30 " + x + " " + (y0 + 15) + ")");
      label.textContent = t[1];
    });
    tickValues(ya).forEach(function (t) {
      var y = Y(t[0]);
      el("line", {x1: x0, x2: x1, y1: y, y2: y}, grid);
      el("text", {x: x0 - 6, y: y + 4, "text-anchor": "end"}, labels).textContent = t[1];
    });
    el("rect", {x: x0, y: y1, width: x1 - x0, height: y0 - y1, fill: "none", stroke: "#888"}, svg);
    var xTitle = ((layout.xaxis || {}).title || {}).text;
    var yTitle = ((layout.yaxis || {}).title || {}).text;
    if (xTitle && !categorical) {
      el("text", {x: (x0 + x1) / 2, y: height - 10, "text-anchor": "middle", "font-size": 12}, svg)
        .textContent = xTitle;
    }
    if (yTitle) {
      el("text", {x: 14, y: (y0 + y1) / 2, "text-anchor": "middle", "font-size": 12,
                  transform: "rotate(-90 14 " + (y0 + y1) / 2 + ")"}, svg).textContent = yTitle;
    }
    el("clipPath", {id: div.id + "-clip"}, el("defs", {}, svg)).appendChild(
      el("rect", {x: x0, y: y1, width: x1 - x0, height: y0 - y1}));
    var plot = el("g", {"clip-path": "url(#" + div.id + "-clip)", "class": "scatterlayer"}, svg);
    (layout.shapes || []).forEach(function (s) {
      el("line", {x1: x0, x2: x1, y1: Y(s.y0), y2: Y(s.y0), stroke: "#555",
                  "stroke-dasharray": "3,3"}, plot);
    });
    var points = [];  // [px, py, trace, index] for hover
    var previous = null;
    traces.forEach(function (t, ti) {
      var color = (t.line && t.line.color) || (t.marker && t.marker.color) ||
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"][ti % 4];
      // A point off a log axis (step 0, a loss of 0) leaves a gap, as a non-finite one.
      var pairs = t.x.map(function (v, i) {
        var px = X(v);
        return usable(t.y[i], ya.log) && isFinite(px) ? [px, Y(t.y[i]), i] : null; });
      if (t.fill === "tonexty" && previous) {
        var upper = pairs.filter(Boolean), lower = previous.filter(Boolean).reverse();
        if (upper.length && lower.length) {
          el("polygon", {points: upper.concat(lower).map(function (p) { return p[0] + "," + p[1]; })
            .join(" "), fill: color, "fill-opacity": 0.2, stroke: "none"}, plot);
        }
      }
      previous = pairs;
      var mode = t.mode || "lines";
      var width = t.line && t.line.width !== undefined ? t.line.width : 2;
      if (mode.indexOf("lines") >= 0 && width > 0) {
        var d = "", pen = false;
        pairs.forEach(function (p) {
          if (!p) { pen = false; return; }
          d += (pen ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1);
          pen = true;
        });
        var dash = {dash: "6,4", dot: "2,3", dashdot: "6,3,2,3", longdash: "10,4",
                    longdashdot: "10,3,2,3"}[(t.line && t.line.dash) || "solid"];
        var path = el("path", {d: d, fill: "none", stroke: color, "stroke-width": width,
                               "class": "trace"}, plot);
        if (dash) path.setAttribute("stroke-dasharray", dash);
      }
      if (t.error_y) {
        pairs.forEach(function (p) {
          if (!p) return;
          var v = t.y[p[2]];
          var top = Y(v + (t.error_y.array[p[2]] || 0));
          var bottom = Y(v - (t.error_y.arrayminus[p[2]] || 0));
          el("line", {x1: p[0], x2: p[0], y1: isFinite(top) ? top : p[1],
                      y2: isFinite(bottom) ? bottom : p[1], stroke: color,
                      "stroke-width": 1.5}, plot);
        });
      }
      if (mode.indexOf("markers") >= 0) {
        pairs.forEach(function (p) {
          if (!p) return;
          var symbol = t.marker && t.marker.symbol;
          symbol = Array.isArray(symbol) ? symbol[p[2]] : symbol;
          var size = (t.marker && t.marker.size) || 8;
          var point = el(symbol === "star" || symbol === "diamond" ? "rect" : "circle",
            symbol === "star" || symbol === "diamond" ?
              {x: p[0] - size / 2, y: p[1] - size / 2, width: size, height: size, fill: color,
               transform: "rotate(45 " + p[0] + " " + p[1] + ")", "class": "point"} :
              {cx: p[0], cy: p[1], r: size / 2, fill: color, "class": "point"}, plot);
          point.style.cursor = "pointer";
          point.addEventListener("click", function () {
            (div._listeners.plotly_click || []).forEach(function (f) {
              f({points: [{x: t.x[p[2]], y: t.y[p[2]], pointIndex: p[2], data: t,
                           customdata: t.customdata ? t.customdata[p[2]] : undefined}]});
            });
          });
        });
      }
      if (t.hoverinfo !== "skip") {
        pairs.forEach(function (p) { if (p) points.push([p[0], p[1], t, p[2]]); });
      }
    });
    var box = el("g", {"font-size": 11}, svg);
    legend.forEach(function (t, i) {
      var y = margin.t + 10 + i * 16;
      var color = (t.line && t.line.color) || (t.marker && t.marker.color) ||
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"][traces.indexOf(t) % 4];
      el("line", {x1: x1 + 10, x2: x1 + 30, y1: y, y2: y, stroke: color, "stroke-width": 2}, box);
      el("text", {x: x1 + 35, y: y + 4}, box).textContent = t.name;
    });
    var tip = document.createElement("div");
    tip.className = "hovertext";
    tip.style.cssText = "position:absolute;display:none;pointer-events:none;background:#fff;" +
      "border:1px solid #888;padding:2px 5px;font-size:11px;white-space:pre";
    div.appendChild(tip);
    svg.addEventListener("mousemove", function (event) {
      var r = svg.getBoundingClientRect(), mx = event.clientX - r.left, my = event.clientY - r.top;
      var best = null, distance = 400;
      points.forEach(function (p) {
        var d = (p[0] - mx) * (p[0] - mx) + (p[1] - my) * (p[1] - my);
        if (d < distance) { distance = d; best = p; }
      });
      if (!best) { tip.style.display = "none"; return; }
      var t = best[2];
      tip.textContent = t.hovertemplate ? fill(t.hovertemplate, t, best[3]) :
        t.name + "\n" + format(t.x[best[3]]) + ", " + format(t.y[best[3]], "4");
      tip.style.left = (best[0] + 10) + "px"; tip.style.top = (best[1] + 10) + "px";
      tip.style.display = "block";
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  }

  function react(div, traces, layout) {
    div.data = traces;
    div.layout = layout;
    div._listeners = div._listeners || {};
    div.on = function (name, f) { (div._listeners[name] = div._listeners[name] || []).push(f); };
    div.removeAllListeners = function (name) { div._listeners[name] = []; };
    draw(div);
  }

  function purge(div) {
    div.innerHTML = "";
    div.data = [];
  }

  return {react: react, purge: purge};
})();
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

// Curve values come as steps of 1/log_steps decade, each from the previous
// finite value (optbench.reporting.explorer.encoded).
function decode(codes) {
  var level = 0;
  return codes.map(function (code) {
    if (code === null) return null;
    level += code;
    return Math.pow(10, level / DATA.log_steps);
  });
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
  Array.prototype.forEach.call(box.querySelectorAll(".chart"), function (d) { Charts.purge(d); });
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
    Charts.react(div, traces, {
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
  Charts.react(div, traces, {
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
  Charts.react(document.getElementById("speedups"), traces, {
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
    // The 95 % interval of best_of_k.tsv as error bars; none where the seeds
    // were too few (the hover says why) or an end is infinite (a diverged trial).
    var end = function (r, column) {
      var v = num(r[column]), y = num(r.expected_log10);
      return v === null || !isFinite(v) || y === null ? 0 : Math.abs(v - y);
    };
    return {x: g.map(function (r) { return num(r.k); }),
            y: g.map(function (r) { return num(r.expected_log10); }),
            error_y: {type: "data", symmetric: false,
              array: g.map(function (r) { return end(r, "expected_high"); }),
              arrayminus: g.map(function (r) { return end(r, "expected_low"); })},
            customdata: g.map(function (r) {
              var l = num(r.expected_low), h = num(r.expected_high);
              return l === null || h === null ? "no interval: " + r.ci_method :
                "interval " + l.toPrecision(3) + " .. " + h.toPrecision(3) + " (" +
                r.ci_method + ")"; }),
            mode: "lines+markers", name: key, line: {color: colorOf(g[0].optimizer)},
            hovertemplate: key + "<br>k = %{x}<br>expected log10 = %{y:.4g}, %{customdata}" +
              "<extra></extra>"};
  });
  Charts.react(document.getElementById("bestofk"), kTraces, {
    title: {text: kTraces.length ? "Best of k trials: expected log10 of the best trial's metric" +
      " (bars: the interval of best_of_k.tsv)" :
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
    DATA = JSON.parse(await inflate("data-packed"));
    DATA.cells.forEach(function (c) {
      [c.train, c.heldout].forEach(function (curve) {
        if (!curve) return;
        ["center", "low", "high"].forEach(function (k) {
          if (curve[k]) curve[k] = decode(curve[k]);
        });
        curve.lines = curve.lines.map(decode);
      });
    });
    state.chosen = defaultChoice();
    buildControls();
    wire();
    Object.keys(DATA.tables).forEach(buildTable);
    drawAll();
    document.getElementById("limits").textContent = "Curves longer than " +
      DATA.downsampling.max_points + " steps are drawn at " + DATA.downsampling.max_points +
      " steps at most (evenly and geometrically spaced, the first and last included), values to " +
      (100 * (Math.pow(10, 0.5 / DATA.log_steps) - 1)).toFixed(2) +
      " %; the tables and run files keep every value.";
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


def render(title: str, data_packed: str) -> str:
    """The page, with the packed data (base64 of gzip) inside."""
    return "\n".join(
        [
            '<!DOCTYPE html><html><head><meta charset="utf-8">',
            f"<title>Explorer: {html.escape(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1 style='font-size:17px'>Explorer: {html.escape(title)}</h1>",
            BODY,
            f'<script type="application/octet-stream" id="data-packed">{data_packed}</script>',
            f"<script>{CHARTS}</script>",
            f"<script>{SCRIPT}</script>",
            "</body></html>\n",
        ]
    )
