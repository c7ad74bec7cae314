/* Draws the dashboard's charts from the page's embedded JSON, and refreshes the overview. */
(function () {
  "use strict";

  var ACTIVE = { scheduled: 1, ready: 1, running: 1, paused: 1, held: 1 };
  var REFRESH_MS = 10000;

  function ms(iso) {
    return iso ? Date.parse(iso) : NaN;
  }

  function points(pairs) {
    return (pairs || []).map(function (p) { return [ms(p[0]), p[1]]; });
  }

  function num(v) {
    return v === null || v === undefined ? "—" : GWChart.formatValue(v);
  }

  /* Same rule as the server's co2e filter: grams below one kilogram. */
  function co2e(kg) {
    if (kg === null || kg === undefined) return "—";
    if (Math.abs(kg) < 1e-9) return "0 g";
    if (Math.abs(kg) < 1) return GWChart.formatValue(kg * 1000) + " g";
    return GWChart.formatValue(kg) + " kg";
  }

  function jobBars(job, nowMs) {
    var intervals = (job.planned_intervals || []).map(function (iv) { return [ms(iv[0]), ms(iv[1])]; });
    if (job.finished_at && job.started_at) {
      return [{
        from: ms(job.started_at), to: ms(job.finished_at), cls: "done " + job.state,
        title: job.name + ": ran " + GWChart.timeLabel(ms(job.started_at), true) + " → " + GWChart.timeLabel(ms(job.finished_at)),
      }];
    }
    if (job.state === "running") {
      var start = ms(job.started_at) || nowMs;
      var end = Math.max(intervals.length ? intervals[intervals.length - 1][1] : nowMs, nowMs);
      return [{ from: start, to: end, cls: "running", title: job.name + ": running" }];
    }
    return intervals.map(function (iv) {
      return {
        from: iv[0], to: iv[1], cls: "planned " + job.state,
        title: job.name + ": planned " + GWChart.timeLabel(iv[0], true) + " → " + GWChart.timeLabel(iv[1]),
      };
    });
  }

  function drawOverview(view) {
    var nowMs = ms(view.now);
    var history = points(view.history);
    var forecast = points(view.forecast);
    var all = history.concat(forecast).map(function (p) { return p[0]; });
    var stepMs = (view.step_minutes || 60) * 60000;
    var range = [Math.min.apply(null, all.concat([nowMs])), Math.max.apply(null, all.concat([nowMs])) + stepMs];
    var bands = [];
    var lanes = view.timeline.map(function (job) {
      var laneBars = jobBars(job, nowMs);
      laneBars.forEach(function (b) {
        var kind = b.cls.split(" ")[0];
        if (kind !== "done") bands.push({ from: b.from, to: b.to, cls: kind, title: b.title });
      });
      return {
        label: job.name + " · " + job.state,
        bars: laneBars,
        marks: [{ t: ms(job.deadline), title: "deadline " + GWChart.timeLabel(ms(job.deadline), true) }],
      };
    });
    GWChart.timeSeries(document.getElementById("intensity-chart"), {
      series: [
        { name: "observed", points: history, step: true, cls: "history" },
        { name: "forecast", points: forecast, step: true, fill: true, cls: "forecast" },
      ],
      bands: bands,
      markers: [{ t: nowMs, label: "now", cls: "now" }],
      xRange: range,
      yLabel: "g CO2e/kWh",
      height: 260,
      empty: "no carbon signal for this zone",
    });
    GWChart.timeline(document.getElementById("job-timeline"), {
      lanes: lanes,
      xRange: range,
      markers: [{ t: nowMs, cls: "now" }],
      empty: "no job is planned or running in this zone",
    });
  }

  function cell(row, value, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = value;
    row.appendChild(td);
    return td;
  }

  function fmtTime(iso) {
    return iso ? GWChart.timeLabel(ms(iso), true) + "Z" : "—";
  }

  function fmtWindow(intervals) {
    if (!intervals || !intervals.length) return "—";
    var text = fmtTime(intervals[0][0]) + " → " + GWChart.timeLabel(ms(intervals[intervals.length - 1][1])) + "Z";
    return intervals.length > 1 ? text + " (" + intervals.length + " parts)" : text;
  }

  function renderJobs(view) {
    var body = document.querySelector("#jobs-table tbody");
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    view.jobs.forEach(function (job) {
      var row = document.createElement("tr");
      row.dataset.jobId = job.id;
      row.dataset.state = job.state;
      var first = cell(row, "");
      var link = document.createElement("a");
      link.href = "/dashboard/jobs/" + encodeURIComponent(job.id);
      link.textContent = job.name;
      first.appendChild(link);
      first.appendChild(document.createElement("br"));
      var code = document.createElement("code");
      code.textContent = job.id;
      first.appendChild(code);
      cell(row, job.team);
      var state = cell(row, "");
      var badge = document.createElement("span");
      badge.className = "state " + job.state;
      badge.textContent = job.state;
      state.appendChild(badge);
      cell(row, job.state_reason, "reason");
      cell(row, job.objective);
      cell(row, fmtTime(job.deadline));
      cell(row, fmtWindow(job.planned_intervals));
      cell(row, co2e(job.estimated_kg_co2e), "n");
      cell(row, co2e(job.expected_saving_kg_co2e), "n");
      cell(row, co2e(job.actual_kg_co2e), "n");
      body.appendChild(row);
    });
    var counts = document.getElementById("job-counts");
    if (counts) {
      counts.textContent = Object.keys(view.counts).sort().map(function (k) {
        return view.counts[k] + " " + k;
      }).join(" · ") || "no jobs yet";
    }
  }

  /* Each team against its own limit: bars in percent of the limit, so small teams show. */
  function drawBudgets(view) {
    var rows = view.teams.filter(function (t) { return t.budget; }).map(function (t) {
      var b = t.budget;
      var pct = function (kg) { return (100 * kg) / b.limit_kg_co2e; };
      return {
        label: t.team,
        segments: [
          { value: pct(b.actual_kg_co2e), cls: "actual", title: "actual " + co2e(b.actual_kg_co2e) },
          { value: pct(b.committed_kg_co2e), cls: "committed", title: "committed " + co2e(b.committed_kg_co2e) },
        ],
        marks: [
          { value: pct(b.forecast_kg_co2e), cls: "forecast", title: "forecast " + co2e(b.forecast_kg_co2e) },
          { value: 100, cls: "limit", title: "limit " + co2e(b.limit_kg_co2e) },
        ],
      };
    });
    GWChart.bars(document.getElementById("budget-chart"), { rows: rows, unit: "% of limit", empty: "no team has a budget" });
    drawBurn(view);
  }

  /* How each budget burned this period: actual and actual + committed, in % of its limit. */
  function drawBurn(view) {
    var series = [];
    var range;
    view.teams.filter(function (t) { return t.budget; }).forEach(function (t) {
      var b = t.budget;
      var pct = function (kg) { return (100 * kg) / b.limit_kg_co2e; };
      var nowMs = ms(view.now);
      var burn = (b.burn || []).map(function (p) { return [ms(p[0]), pct(p[1]), pct(p[2])]; });
      if (burn.length) burn.push([Math.min(nowMs, ms(b.period_end)), burn[burn.length - 1][1], burn[burn.length - 1][2]]);
      series.push({ name: t.team + ": actual + committed", cls: "burn-committed", step: true,
        points: burn.map(function (p) { return [p[0], p[2]]; }) });
      series.push({ name: t.team + ": actual", cls: "burn-actual", step: true, fill: true,
        points: burn.map(function (p) { return [p[0], p[1]]; }) });
      range = [ms(b.period_start), ms(b.period_end)];
      series.push({ name: "limit", cls: "burn-limit", points: [[range[0], 100], [range[1], 100]] });
    });
    GWChart.timeSeries(document.getElementById("burn-chart"), {
      series: series, xRange: range, yLabel: "% of limit", yMin: 0, height: 200,
      empty: "no team has a budget",
    });
  }

  function drawJob(view) {
    var timeline = view.energy.timeline || [];
    var power = timeline.map(function (p) { return [ms(p.t), p.watts]; });
    var intensity = timeline.filter(function (p) { return p.g_per_kwh !== null; }).map(function (p) {
      return [ms(p.t), p.g_per_kwh];
    });
    var range = power.length ? [power[0][0], power[power.length - 1][0]] : undefined;
    GWChart.timeSeries(document.getElementById("power-chart"), {
      series: [{ name: "power", points: power, cls: "power", fill: true }],
      xRange: range, yLabel: "watts", height: 220, empty: "no power samples yet",
    });
    GWChart.timeSeries(document.getElementById("job-intensity-chart"), {
      series: [{ name: "grid intensity", points: intensity, step: true, cls: "forecast" }],
      xRange: range, yLabel: "g/kWh", height: 150, empty: "no intensity yet",
    });
    var kwh = view.energy.kwh;
    GWChart.bars(document.getElementById("energy-chart"), {
      labelWidth: 50,
      unit: "kWh",
      rows: ["gpu", "cpu", "ram"].map(function (part) {
        return {
          label: part.toUpperCase(),
          segments: [{ value: kwh[part], cls: part, title: part + " " + num(kwh[part]) + " kWh" }],
        };
      }),
    });
  }

  function refreshOverview(api) {
    fetch(api, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (view) {
        if (!view) return;
        drawOverview(view);
        renderJobs(view);
      })
      .catch(function () { /* keep the last drawing; the next refresh tries again */ });
  }

  function start() {
    var holder = document.getElementById("page-data");
    if (!holder) return;
    var view = JSON.parse(holder.textContent);
    var page = holder.dataset.page;
    var api = holder.dataset.api;
    if (page === "overview") {
      drawOverview(view);
      window.setInterval(function () { refreshOverview(api); }, REFRESH_MS);
    } else if (page === "budgets") {
      drawBudgets(view);
    } else if (page === "job") {
      drawJob(view);
      if (ACTIVE[view.job.state]) window.setTimeout(function () { window.location.reload(); }, REFRESH_MS);
    }
    var redraw;
    window.addEventListener("resize", function () {
      window.clearTimeout(redraw);
      redraw = window.setTimeout(function () {
        if (page === "overview") drawOverview(view);
        else if (page === "budgets") drawBudgets(view);
        else if (page === "job") drawJob(view);
      }, 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
