/* gwchart: a small SVG chart library for the greenwindow dashboard.
 *
 * Three chart kinds, all drawn as plain SVG so they scale and print well:
 *   GWChart.timeSeries(el, {series, bands, markers, xRange, yLabel, height})
 *   GWChart.timeline(el, {lanes, xRange, markers, height})
 *   GWChart.bars(el, {rows, unit})
 * Times are milliseconds since the epoch and are labelled in UTC. Every chart writes the
 * number of data points it drew into el.dataset.points, so pages and tests can check it.
 * Text always goes through textContent, never markup.
 */
(function (global) {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var MARGIN = { left: 56, right: 16, top: 12, bottom: 26 };
  var MINUTE = 60 * 1000;
  var TIME_STEPS = [1 / 6, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880].map(
    function (m) { return m * MINUTE; }
  );

  function node(name, attrs, parent) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) {
      if (attrs[key] !== undefined && attrs[key] !== null) el.setAttribute(key, attrs[key]);
    });
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, value, cls, anchor) {
    var el = node("text", { x: x, y: y, class: cls || "", "text-anchor": anchor || "start" }, parent);
    el.textContent = value;
    return el;
  }

  function tooltip(el, value) {
    var title = node("title", {}, el);
    title.textContent = value;
  }

  function pad2(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function timeLabel(ms, withDate, withSeconds) {
    var d = new Date(ms);
    var hm = pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes());
    if (withSeconds) hm += ":" + pad2(d.getUTCSeconds());
    if (!withDate) return hm;
    return d.getUTCFullYear() + "-" + pad2(d.getUTCMonth() + 1) + "-" + pad2(d.getUTCDate()) + " " + hm;
  }

  /* Round axis steps: 1, 2 or 5 times a power of ten. */
  function niceStep(span, count) {
    var raw = span / Math.max(count, 1);
    var power = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    var best = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) {
      return s >= raw;
    });
    return best || 10 * power;
  }

  function formatValue(v) {
    var a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en");
    if (a >= 10) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    if (a === 0) return "0";
    return v.toPrecision(2);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function frame(el, height) {
    clear(el);
    var width = Math.max(el.clientWidth || 0, 320);
    var svg = node("svg", {
      viewBox: "0 0 " + width + " " + height,
      width: "100%",
      height: height,
      role: "img",
      class: "gwchart",
    }, el);
    return {
      svg: svg,
      width: width,
      height: height,
      x0: MARGIN.left,
      x1: width - MARGIN.right,
      y0: MARGIN.top,
      y1: height - MARGIN.bottom,
    };
  }

  function timeScale(f, range) {
    var span = Math.max(range[1] - range[0], 1);
    return function (t) {
      return f.x0 + ((t - range[0]) / span) * (f.x1 - f.x0);
    };
  }

  function timeAxis(f, range, x, withGrid) {
    var span = range[1] - range[0];
    var step = TIME_STEPS.find(function (s) { return span / s <= 9; }) || TIME_STEPS[TIME_STEPS.length - 1];
    var first = Math.ceil(range[0] / step) * step;
    var axis = node("g", { class: "axis x" }, f.svg);
    node("line", { x1: f.x0, x2: f.x1, y1: f.y1, y2: f.y1 }, axis);
    for (var t = first; t <= range[1]; t += step) {
      var px = x(t);
      if (withGrid) node("line", { class: "grid", x1: px, x2: px, y1: f.y0, y2: f.y1 }, axis);
      var midnight = new Date(t).getUTCHours() === 0 && new Date(t).getUTCMinutes() === 0;
      var label = midnight ? timeLabel(t, true).slice(5, 10) : timeLabel(t, false, step < MINUTE);
      text(axis, px, f.y1 + 16, label, "tick", "middle");
    }
  }

  function valueAxis(f, lo, hi, label) {
    var step = niceStep(hi - lo, 4);
    var axis = node("g", { class: "axis y" }, f.svg);
    var y = function (v) { return f.y1 - ((v - lo) / Math.max(hi - lo, 1e-12)) * (f.y1 - f.y0); };
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      node("line", { class: "grid", x1: f.x0, x2: f.x1, y1: y(v), y2: y(v) }, axis);
      text(axis, f.x0 - 6, y(v) + 4, formatValue(v), "tick", "end");
    }
    if (label) {
      var t = text(axis, 12, (f.y0 + f.y1) / 2, label, "label", "middle");
      t.setAttribute("transform", "rotate(-90 12 " + (f.y0 + f.y1) / 2 + ")");
    }
    return y;
  }

  function seriesRange(series) {
    var ts = [], vs = [];
    series.forEach(function (s) {
      s.points.forEach(function (p) { ts.push(p[0]); vs.push(p[1]); });
    });
    return { ts: ts, vs: vs };
  }

  function pathFor(points, x, y, step, stepMs) {
    var d = "";
    points.forEach(function (p, i) {
      var px = x(p[0]), py = y(p[1]);
      if (i === 0) d += "M" + px + "," + py;
      else if (step) d += "H" + px + "V" + py;
      else d += "L" + px + "," + py;
    });
    if (step && points.length) d += "H" + x(points[points.length - 1][0] + (stepMs || 0));
    return d;
  }

  function medianGap(points) {
    if (points.length < 2) return 0;
    var gaps = [];
    for (var i = 1; i < points.length; i++) gaps.push(points[i][0] - points[i - 1][0]);
    gaps.sort(function (a, b) { return a - b; });
    return gaps[Math.floor(gaps.length / 2)];
  }

  function markersOn(f, markers, x) {
    (markers || []).forEach(function (m) {
      var px = x(m.t);
      if (px < f.x0 || px > f.x1) return;
      var g = node("g", { class: "marker " + (m.cls || "") }, f.svg);
      node("line", { x1: px, x2: px, y1: f.y0 - 4, y2: f.y1 }, g);
      if (m.label) text(g, px + 4, f.y0 + 6, m.label, "marker-label");
    });
  }

  /* A line or step chart over time, with shaded bands (windows) and vertical markers. */
  function timeSeries(el, opts) {
    var series = (opts.series || []).filter(function (s) { return s.points && s.points.length; });
    var f = frame(el, opts.height || 240);
    var all = seriesRange(series);
    var count = all.vs.length;
    el.dataset.points = String(count);
    el.dataset.series = String(series.length);
    if (!count) {
      text(f.svg, (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, opts.empty || "no data yet", "empty", "middle");
      return { points: 0 };
    }
    var range = opts.xRange || [Math.min.apply(null, all.ts), Math.max.apply(null, all.ts)];
    if (range[1] <= range[0]) range = [range[0] - 30 * MINUTE, range[0] + 30 * MINUTE];
    var lo = opts.yMin !== undefined ? opts.yMin : Math.min(0, Math.min.apply(null, all.vs));
    var hi = Math.max.apply(null, all.vs);
    hi = hi <= lo ? lo + 1 : hi + (hi - lo) * 0.08;
    var x = timeScale(f, range);
    var clip = "clip" + Math.random().toString(36).slice(2, 8);
    var defs = node("defs", {}, f.svg);
    node("rect", { x: f.x0, y: f.y0, width: f.x1 - f.x0, height: f.y1 - f.y0 },
      node("clipPath", { id: clip }, defs));
    var y = valueAxis(f, lo, hi, opts.yLabel);
    timeAxis(f, range, x, true);
    var plot = node("g", { "clip-path": "url(#" + clip + ")" }, f.svg);
    (opts.bands || []).forEach(function (b) {
      var a = Math.max(x(b.from), f.x0), z = Math.min(x(b.to), f.x1);
      if (z <= a) return;
      var rect = node("rect", { class: "band " + (b.cls || ""), x: a, y: f.y0, width: z - a, height: f.y1 - f.y0 }, plot);
      if (b.title) tooltip(rect, b.title);
    });
    series.forEach(function (s) {
      var stepMs = s.step ? medianGap(s.points) : 0;
      var line = pathFor(s.points, x, y, s.step, stepMs);
      if (s.fill) {
        var last = s.points[s.points.length - 1][0] + stepMs;
        node("path", {
          class: "area " + (s.cls || ""),
          d: line + "V" + y(lo) + "H" + x(s.points[0][0]) + "Z",
          "data-last": last,
        }, plot);
      }
      var path = node("path", { class: "line " + (s.cls || ""), d: line, "data-points": s.points.length }, plot);
      if (s.name) tooltip(path, s.name + " (" + s.points.length + " points)");
    });
    markersOn(f, opts.markers, x);
    return { points: count, x: x, range: range };
  }

  /* Horizontal bars on a time axis, one lane each (jobs and their planned windows). */
  function timeline(el, opts) {
    var lanes = opts.lanes || [];
    var laneHeight = 22;
    var f = frame(el, MARGIN.top + MARGIN.bottom + Math.max(lanes.length, 1) * laneHeight + 4);
    var range = opts.xRange;
    var x = timeScale(f, range);
    var bars = 0;
    timeAxis(f, range, x, true);
    if (!lanes.length) {
      text(f.svg, (f.x0 + f.x1) / 2, f.y0 + 14, opts.empty || "nothing planned", "empty", "middle");
    }
    lanes.forEach(function (lane, i) {
      var top = f.y0 + 2 + i * laneHeight;
      var g = node("g", { class: "lane" }, f.svg);
      var right = f.x0;
      lane.bars.forEach(function (b) {
        var a = Math.max(x(b.from), f.x0), z = Math.min(x(b.to), f.x1);
        if (z < a) return;
        var rect = node("rect", {
          class: "bar " + (b.cls || ""), x: a, y: top, width: Math.max(z - a, 3), height: laneHeight - 6, rx: 3,
        }, g);
        if (b.title) tooltip(rect, b.title);
        right = Math.max(right, a + Math.max(z - a, 3));
        bars += 1;
      });
      (lane.marks || []).forEach(function (m) {
        var px = x(m.t);
        if (px < f.x0 || px > f.x1) return;
        var tick = node("line", { class: "deadline", x1: px, x2: px, y1: top - 1, y2: top + laneHeight - 5 }, g);
        if (m.title) tooltip(tick, m.title);
      });
      var labelAtRight = right + 6 < f.x1 - 120;
      var label = text(g, labelAtRight ? right + 6 : f.x0 + 4, top + laneHeight - 10, lane.label, "lane-label");
      if (!labelAtRight) label.setAttribute("class", "lane-label inside");
    });
    markersOn(f, opts.markers, x);
    el.dataset.points = String(bars);
    return { points: bars };
  }

  /* Horizontal bars with stacked segments and tick marks (budgets, energy by component). */
  function bars(el, opts) {
    var rows = opts.rows || [];
    var rowHeight = 34;
    var f = frame(el, MARGIN.top + MARGIN.bottom + Math.max(rows.length, 1) * rowHeight);
    var left = opts.labelWidth || 110;
    f.x0 = left;
    var max = 0;
    rows.forEach(function (r) {
      var sum = r.segments.reduce(function (acc, s) { return acc + Math.max(s.value || 0, 0); }, 0);
      max = Math.max(max, sum);
      (r.marks || []).forEach(function (m) { max = Math.max(max, m.value || 0); });
    });
    max = max > 0 ? max * 1.08 : 1;
    var step = niceStep(max, 4);
    var x = function (v) { return f.x0 + (v / max) * (f.x1 - f.x0); };
    var axis = node("g", { class: "axis x" }, f.svg);
    for (var v = 0; v <= max + 1e-12; v += step) {
      node("line", { class: "grid", x1: x(v), x2: x(v), y1: f.y0, y2: f.y1 }, axis);
      text(axis, x(v), f.y1 + 16, formatValue(v) + (v === 0 && opts.unit ? " " + opts.unit : ""), "tick", "middle");
    }
    var drawn = 0;
    if (!rows.length) text(f.svg, (f.x0 + f.x1) / 2, f.y0 + 16, opts.empty || "no data", "empty", "middle");
    rows.forEach(function (r, i) {
      var top = f.y0 + i * rowHeight + 6;
      var g = node("g", { class: "row" }, f.svg);
      text(g, f.x0 - 8, top + 15, r.label, "row-label", "end");
      var at = 0;
      r.segments.forEach(function (s) {
        var value = Math.max(s.value || 0, 0);
        var rect = node("rect", {
          class: "seg " + (s.cls || ""), x: x(at), y: top, width: Math.max(x(at + value) - x(at), value > 0 ? 1 : 0), height: rowHeight - 14,
        }, g);
        if (s.title) tooltip(rect, s.title);
        at += value;
        drawn += 1;
      });
      (r.marks || []).forEach(function (m) {
        var line = node("line", { class: "mark " + (m.cls || ""), x1: x(m.value), x2: x(m.value), y1: top - 4, y2: top + rowHeight - 10 }, g);
        if (m.title) tooltip(line, m.title);
      });
    });
    el.dataset.points = String(drawn);
    return { points: drawn };
  }

  global.GWChart = { timeSeries: timeSeries, timeline: timeline, bars: bars, timeLabel: timeLabel, formatValue: formatValue };
})(window);
