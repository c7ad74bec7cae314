/* The dashboard's three chart shapes, drawn with the vendored uPlot (see VENDORED.md):
 *   Charts.timeSeries(el, {series, bands, markers, xRange, yLabel, height, empty})
 *   Charts.lanes(el, {lanes, xRange, markers, empty})     one row of bars per job
 *   Charts.bars(el, {rows, unit, height, empty})          stacked bars per category
 * Times come in as milliseconds since the epoch and are labelled in UTC. Colours are names of
 * CSS custom properties in dashboard.css, so the palette lives in one place. Each chart writes
 * what it drew into el.dataset (points, series, shapes) for pages and tests to check, and keeps
 * its uPlot instance on el.chart so a page can append points.
 */
(function (global) {
  "use strict";

  var palette = {};

  function colour(name) {
    if (!name) return undefined;
    if (name.charAt(0) !== "-") return name;
    if (!(name in palette)) {
      palette[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    }
    return palette[name];
  }

  function utc(seconds) {
    return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC");
  }

  function pad2(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function timeLabel(ms, withDate) {
    var d = new Date(ms);
    var hm = pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes());
    if (!withDate) return hm;
    return d.getUTCFullYear() + "-" + pad2(d.getUTCMonth() + 1) + "-" + pad2(d.getUTCDate()) + " " + hm;
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
    if (el.chart) { el.chart.destroy(); el.chart = null; }
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function empty(el, message) {
    clear(el);
    var p = document.createElement("p");
    p.className = "chart-empty";
    p.textContent = message || "no data";
    el.appendChild(p);
    el.dataset.points = "0";
    el.dataset.series = "";
  }

  function width(el) {
    return Math.max(el.clientWidth || 0, 320);
  }

  /* Series on their own time stamps, aligned on one shared x axis (uPlot's data layout);
   * a series has null where it has no point. */
  function align(series) {
    var index = {};
    var xs = [];
    series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (!(p[0] in index)) { index[p[0]] = true; xs.push(p[0]); }
      });
    });
    xs.sort(function (a, b) { return a - b; });
    var at = {};
    xs.forEach(function (x, i) { at[x] = i; });
    var columns = series.map(function (s) {
      var ys = xs.map(function () { return null; });
      s.points.forEach(function (p) { ys[at[p[0]]] = p[1]; });
      return ys;
    });
    return [xs.map(function (x) { return x / 1000; })].concat(columns);
  }

  /* Draw inside the plot area only. */
  function clipped(u, draw) {
    var ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    draw(ctx);
    ctx.restore();
  }

  function xPos(u, ms) {
    return u.valToPos(ms / 1000, "x", true);
  }

  function drawBands(bands) {
    return function (u) {
      clipped(u, function (ctx) {
        bands.forEach(function (b) {
          var x0 = xPos(u, b.from);
          var x1 = xPos(u, b.to);
          ctx.fillStyle = colour(b.color);
          ctx.fillRect(x0, u.bbox.top, Math.max(x1 - x0, 1), u.bbox.height);
        });
      });
    };
  }

  function drawMarkers(markers) {
    return function (u) {
      clipped(u, function (ctx) {
        markers.forEach(function (m, i) {
          var x = Math.round(xPos(u, m.t));
          ctx.strokeStyle = colour(m.color || "--blue");
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          if (m.label) {
            ctx.setLineDash([]);
            ctx.fillStyle = colour(m.color || "--blue");
            ctx.font = 11 * devicePixelRatio + "px system-ui, sans-serif";
            // Near the right edge the label goes left of its line; markers close together
            // take turns on three rows so their labels do not overwrite each other.
            var room = u.bbox.left + u.bbox.width - x;
            var text = ctx.measureText(m.label).width + 4 * devicePixelRatio;
            var left = room < text ? x - text : x + 4 * devicePixelRatio;
            ctx.fillText(m.label, left, u.bbox.top + (12 + 13 * (i % 3)) * devicePixelRatio);
          }
        });
      });
    };
  }

  /* 24-hour UTC tick labels, with the date under the first tick and wherever the day turns. */
  function timeValues(u, splits, axisIdx, space, incr) {
    var previous = null;
    return splits.map(function (s, i) {
      var d = new Date(s * 1000);
      var date = pad2(d.getUTCMonth() + 1) + "-" + pad2(d.getUTCDate());
      if (incr >= 86400) return date;
      var time = pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes());
      if (incr < 60) time += ":" + pad2(d.getUTCSeconds());
      var label = i === 0 || date !== previous ? time + "\n" + date : time;
      previous = date;
      return label;
    });
  }

  var timeAxis = {
    values: timeValues,
    stroke: "#5f6f65",
    grid: { stroke: "#edf1ee", width: 1 },
    ticks: { stroke: "#b8c4bc", width: 1 },
  };

  function valueAxis(label, size) {
    return {
      label: label,
      labelSize: 18,
      size: size || 50,
      stroke: "#5f6f65",
      grid: { stroke: "#edf1ee", width: 1 },
      ticks: { stroke: "#b8c4bc", width: 1 },
      values: function (u, splits) { return splits.map(formatValue); },
    };
  }

  /* Lines over time: spec.series = [{name, points: [[ms, value]], color, fill, step, dash}]. */
  function timeSeries(el, spec) {
    var series = (spec.series || []).map(function (s) {
      return Object.assign({}, s, { points: (s.points || []).filter(function (p) {
        return isFinite(p[0]) && p[1] !== null && p[1] !== undefined;
      }) });
    });
    var count = series.reduce(function (n, s) { return n + s.points.length; }, 0);
    if (!count) return empty(el, spec.empty);
    clear(el);
    var xRange = spec.xRange;
    var options = {
      width: width(el),
      height: spec.height || 220,
      tzDate: utc,
      legend: { show: spec.legend !== false },
      cursor: { sync: spec.sync ? { key: spec.sync } : undefined, drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: xRange ? function () { return [xRange[0] / 1000, xRange[1] / 1000]; } : undefined },
        y: { range: function (u, min, max) {
          var low = spec.yMin !== undefined ? spec.yMin : Math.min(0, min);
          var high = Math.max(max, low + 1);
          return [low, high + (high - low) * 0.08];
        } },
      },
      axes: [timeAxis, valueAxis(spec.yLabel, spec.axisSize)],
      series: [{ label: "time", value: function (u, v) { return v === null ? "—" : timeLabel(v * 1000, true) + "Z"; } }].concat(
        series.map(function (s) {
          var stroke = colour(s.color);
          return {
            label: s.name,
            stroke: stroke,
            width: 2,
            dash: s.dash,
            fill: s.fill ? colour(s.fill) : undefined,
            spanGaps: true,
            paths: s.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
            points: { show: s.points.length === 1 },
            value: function (u, v) { return v === null ? "—" : formatValue(v); },
          };
        })
      ),
      hooks: {
        drawClear: [drawBands(spec.bands || [])],
        draw: [drawMarkers(spec.markers || [])],
      },
    };
    el.chart = new uPlot(options, align(series), el);
    el.dataset.points = String(count);
    el.dataset.series = series.map(function (s) { return s.name; }).join("|");
    el.dataset.bands = String((spec.bands || []).length);
    return el.chart;
  }

  /* Appends one point to a series of a drawn time series chart (a live reading). */
  function appendPoint(el, seriesIndex, ms, value) {
    var u = el.chart;
    if (!u) return false;
    var data = u.data.map(function (column) { return Array.prototype.slice.call(column); });
    var x = ms / 1000;
    if (data[0].length && x <= data[0][data[0].length - 1]) return false;
    data[0].push(x);
    for (var i = 1; i < data.length; i++) data[i].push(i === seriesIndex ? value : null);
    u.setData(data);
    el.dataset.points = String(Number(el.dataset.points || 0) + 1);
    return true;
  }

  /* One row per lane: bars [{from, to, kind, color, title}] and marks [{t, color, title}]. */
  function lanes(el, spec) {
    var rows = spec.lanes || [];
    var bars = [];
    rows.forEach(function (lane, i) {
      lane.bars.forEach(function (b) { bars.push(Object.assign({ lane: i }, b)); });
    });
    if (!rows.length) return empty(el, spec.empty);
    clear(el);
    var n = rows.length;
    var xRange = spec.xRange;
    var caption = document.createElement("p");
    caption.className = "chart-caption";
    var laneY = function (i) { return n - 1 - i; };
    function drawLanes(u) {
      clipped(u, function (ctx) {
        bars.forEach(function (b) {
          var x0 = xPos(u, b.from);
          var x1 = xPos(u, b.to);
          var top = u.valToPos(laneY(b.lane) + 0.8, "y", true);
          var bottom = u.valToPos(laneY(b.lane) + 0.2, "y", true);
          ctx.fillStyle = colour(b.color);
          ctx.fillRect(x0, top, Math.max(x1 - x0, 2), bottom - top);
          ctx.strokeStyle = colour(b.edge || b.color);
          ctx.lineWidth = devicePixelRatio;
          ctx.strokeRect(x0, top, Math.max(x1 - x0, 2), bottom - top);
        });
        rows.forEach(function (lane, i) {
          (lane.marks || []).forEach(function (m) {
            if (!isFinite(m.t)) return;
            var x = Math.round(xPos(u, m.t));
            ctx.strokeStyle = colour(m.color || "--red");
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(x, u.valToPos(laneY(i) + 0.95, "y", true));
            ctx.lineTo(x, u.valToPos(laneY(i) + 0.05, "y", true));
            ctx.stroke();
          });
        });
      });
    }
    /* Canvas bars have no tooltips: name the bar under the cursor below the chart. */
    function describe(u) {
      var left = u.cursor.left;
      var top = u.cursor.top;
      var text = "";
      if (left >= 0 && top >= 0) {
        var t = u.posToVal(left, "x") * 1000;
        var lane = n - 1 - Math.floor(u.posToVal(top, "y"));
        bars.forEach(function (b) {
          if (b.lane === lane && t >= b.from && t <= b.to) text = b.title;
        });
      }
      caption.textContent = text;
    }
    var options = {
      width: width(el),
      height: Math.max(70, 28 * n + 34),
      tzDate: utc,
      legend: { show: false },
      cursor: { sync: spec.sync ? { key: spec.sync } : undefined, y: false, points: { show: false }, drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: function () { return [xRange[0] / 1000, xRange[1] / 1000]; } },
        y: { range: [0, n] },
      },
      axes: [timeAxis, {
        size: spec.labelWidth || 140,
        font: "11px system-ui, sans-serif",
        stroke: "#1d2a22",
        grid: { show: false },
        ticks: { show: false },
        splits: function () { return rows.map(function (lane, i) { return laneY(i) + 0.5; }); },
        values: function (u, splits) {
          return splits.map(function (s) {
            var label = rows[n - 1 - Math.floor(s)].label;
            return label.length > 20 ? label.slice(0, 19) + "…" : label;
          });
        },
      }],
      series: [{}, { label: "lanes", show: true, stroke: "transparent", points: { show: false } }],
      hooks: { draw: [drawLanes, drawMarkers(spec.markers || [])], setCursor: [describe] },
    };
    el.chart = new uPlot(options, [[xRange[0] / 1000, xRange[1] / 1000], [null, null]], el);
    el.appendChild(caption);
    var shapes = {};
    bars.forEach(function (b) { shapes[b.kind] = (shapes[b.kind] || 0) + 1; });
    el.dataset.points = String(bars.length);
    el.dataset.shapes = JSON.stringify(shapes);
    el.dataset.series = rows.map(function (lane) { return lane.label; }).join("|");
    return el.chart;
  }

  /* Stacked bars per row: rows = [{label, segments: [{name, value, color}],
   * marks: [{name, value, color}]}]. A segment name is one legend entry across rows. */
  function bars(el, spec) {
    var rows = spec.rows || [];
    if (!rows.length) return empty(el, spec.empty);
    clear(el);
    var names = [];
    var colours = {};
    rows.forEach(function (row) {
      row.segments.forEach(function (s) {
        if (names.indexOf(s.name) < 0) { names.push(s.name); colours[s.name] = s.color; }
      });
    });
    /* Cumulative tops, drawn from the longest down so each segment shows above the last. */
    var columns = names.map(function () { return rows.map(function () { return null; }); });
    var count = 0;
    rows.forEach(function (row, r) {
      var top = 0;
      row.segments.forEach(function (s) {
        if (s.value === null || s.value === undefined || !isFinite(s.value)) return;
        top += s.value;
        columns[names.indexOf(s.name)][r] = top;
        count += 1;
      });
    });
    var order = names.map(function (name, i) { return i; }).reverse();
    var marks = [];
    rows.forEach(function (row, r) {
      (row.marks || []).forEach(function (m) { if (isFinite(m.value)) marks.push(Object.assign({ row: r }, m)); });
    });
    var highest = 0;
    columns.forEach(function (col) { col.forEach(function (v) { if (v > highest) highest = v; }); });
    marks.forEach(function (m) { if (m.value > highest) highest = m.value; });
    // All zero (nothing measured yet) draws no bars worth reading.
    if (!(highest > 0)) return empty(el, spec.empty);
    function drawMarks(u) {
      clipped(u, function (ctx) {
        var half = Math.max((u.valToPos(1, "x", true) - u.valToPos(0, "x", true)) * 0.36, 4);
        marks.forEach(function (m) {
          var x = u.valToPos(m.row, "x", true);
          var y = Math.round(u.valToPos(m.value, "y", true));
          ctx.strokeStyle = colour(m.color);
          ctx.lineWidth = 3 * devicePixelRatio;
          ctx.beginPath();
          ctx.moveTo(x - half, y);
          ctx.lineTo(x + half, y);
          ctx.stroke();
        });
      });
    }
    var options = {
      width: width(el),
      height: spec.height || 200,
      legend: { show: true },
      cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: {
        x: { time: false, range: [-0.5, rows.length - 0.5] },
        y: { range: [0, Math.max(highest, 1e-9) * 1.1] },
      },
      axes: [
        {
          stroke: "#1d2a22",
          grid: { show: false },
          splits: function () { return rows.map(function (row, i) { return i; }); },
          values: function (u, splits) { return splits.map(function (s) { return rows[s] ? rows[s].label : ""; }); },
        },
        valueAxis(spec.unit),
      ],
      series: [{ label: spec.category || "row", value: function (u, v) { return v === null || !rows[v] ? "—" : rows[v].label; } }].concat(
        order.map(function (i) {
          return {
            label: names[i],
            fill: colour(colours[names[i]]),
            stroke: colour(colours[names[i]]),
            width: 0,
            paths: uPlot.paths.bars({ size: [0.7, 90] }),
            points: { show: false },
            value: function (u, v) { return v === null ? "—" : formatValue(v); },
          };
        })
      ),
      hooks: { draw: [drawMarks] },
    };
    el.chart = new uPlot(options, [rows.map(function (row, i) { return i; })].concat(order.map(function (i) { return columns[i]; })), el);
    el.dataset.points = String(count);
    el.dataset.series = names.join("|");
    var markCounts = {};
    marks.forEach(function (m) { markCounts[m.name] = (markCounts[m.name] || 0) + 1; });
    el.dataset.marks = JSON.stringify(markCounts);
    return el.chart;
  }

  global.Charts = {
    timeSeries: timeSeries,
    appendPoint: appendPoint,
    lanes: lanes,
    bars: bars,
    timeLabel: timeLabel,
    formatValue: formatValue,
  };
})(window);
