/* Draws the dashboard's charts from the page's embedded JSON, refreshes the overview, and
 * keeps a running job's page live from its heartbeats. */
(function () {
  "use strict";

  var REFRESH_MS = 10000;
  var LIVE_MS = 3000;
  // Telemetry drawn on a job page is bounded, whatever a worker reports.
  var MAX_ROWS = 16;
  var MAX_COLUMNS = 12;
  var MAX_TEXT = 80;
  // Power readings from heartbeats, [ms, watts], appended to the job's power chart.
  var livePower = [];
  // The step of the last live report: the telemetry charts reload when it moves.
  var lastStep;

  function ms(iso) {
    return iso ? Date.parse(iso) : NaN;
  }

  function points(pairs) {
    return (pairs || []).map(function (p) { return [ms(p[0]), p[1]]; });
  }

  function num(v) {
    return v === null || v === undefined ? "—" : Charts.formatValue(v);
  }

  /* Same rule as the server's co2e filter: grams below one kilogram. */
  function co2e(kg) {
    if (kg === null || kg === undefined) return "—";
    if (Math.abs(kg) < 1e-9) return "0 g";
    if (Math.abs(kg) < 1) return Charts.formatValue(kg * 1000) + " g";
    return Charts.formatValue(kg) + " kg";
  }

  /* Fill and edge colours (CSS custom properties) of a job's bar by what it is. */
  var BAR_COLOURS = {
    planned: ["--bar-planned", "--green"],
    ready: ["--bar-ready", "--green"],
    paused: ["--bar-paused", "--amber"],
    running: ["--amber", "--bar-running-edge"],
    done: ["--bar-done", "--grey"],
    failed: ["--bar-failed", "--red"],
  };

  function bar(kind, shade, from, to, title) {
    var colours = BAR_COLOURS[shade] || BAR_COLOURS[kind];
    return { kind: kind, from: from, to: to, color: colours[0], edge: colours[1], title: title };
  }

  function jobBars(job, nowMs) {
    var intervals = (job.planned_intervals || []).map(function (iv) { return [ms(iv[0]), ms(iv[1])]; });
    if (job.finished_at && job.started_at) {
      return [bar("done", job.state === "failed" ? "failed" : "done", ms(job.started_at), ms(job.finished_at),
        job.name + ": ran " + Charts.timeLabel(ms(job.started_at), true) + " → " + Charts.timeLabel(ms(job.finished_at)))];
    }
    if (job.state === "running") {
      var start = ms(job.started_at) || nowMs;
      var end = Math.max(intervals.length ? intervals[intervals.length - 1][1] : nowMs, nowMs);
      return [bar("running", "running", start, end, job.name + ": running")];
    }
    return intervals.map(function (iv) {
      return bar("planned", job.state, iv[0], iv[1],
        job.name + ": planned " + Charts.timeLabel(iv[0], true) + " → " + Charts.timeLabel(iv[1]));
    });
  }

  var BAND_COLOURS = { planned: "--band-planned", running: "--band-running" };

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
        if (b.kind !== "done") bands.push({ from: b.from, to: b.to, color: BAND_COLOURS[b.kind], title: b.title });
      });
      return {
        label: job.name + " · " + job.state,
        bars: laneBars,
        marks: [{ t: ms(job.deadline), color: "--red", title: "deadline " + Charts.timeLabel(ms(job.deadline), true) }],
      };
    });
    Charts.timeSeries(document.getElementById("intensity-chart"), {
      series: [
        { name: "observed", points: history, step: true, color: "--grey" },
        { name: "forecast", points: forecast, step: true, color: "--green", fill: "--green-soft" },
      ],
      bands: bands,
      markers: [{ t: nowMs, label: "now", color: "--blue" }],
      xRange: range,
      yLabel: "g CO2e/kWh",
      height: 260,
      // As wide as the lane labels below, so bars line up with the hours above them.
      axisSize: 140,
      sync: "overview",
      empty: "no carbon signal for this zone",
    });
    Charts.lanes(document.getElementById("job-timeline"), {
      lanes: lanes,
      xRange: range,
      markers: [{ t: nowMs, color: "--blue" }],
      sync: "overview",
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
    return iso ? Charts.timeLabel(ms(iso), true) + "Z" : "—";
  }

  function fmtWindow(intervals) {
    if (!intervals || !intervals.length) return "—";
    var text = fmtTime(intervals[0][0]) + " → " + Charts.timeLabel(ms(intervals[intervals.length - 1][1])) + "Z";
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
          { name: "actual", value: pct(b.actual_kg_co2e), color: "--green" },
          { name: "committed", value: pct(b.committed_kg_co2e), color: "--committed" },
        ],
        marks: [
          { name: "forecast", value: pct(b.forecast_kg_co2e), color: "--ink" },
          { name: "limit", value: 100, color: "--red" },
        ],
      };
    });
    Charts.bars(document.getElementById("budget-chart"), {
      rows: rows, unit: "% of limit", category: "team", empty: "no team has a budget",
    });
    drawBurn(view);
  }

  /* How each budget burned this period: actual and actual + committed, in % of its limit. */
  function drawBurn(view) {
    var series = [];
    var range;
    var nowMs = ms(view.now);
    view.teams.filter(function (t) { return t.budget; }).forEach(function (t) {
      var b = t.budget;
      var pct = function (kg) { return (100 * kg) / b.limit_kg_co2e; };
      var burn = (b.burn || []).map(function (p) { return [ms(p[0]), pct(p[1]), pct(p[2])]; });
      if (burn.length) burn.push([Math.min(nowMs, ms(b.period_end)), burn[burn.length - 1][1], burn[burn.length - 1][2]]);
      series.push({ name: t.team + ": actual + committed", color: "--committed", step: true, dash: [4, 3],
        points: burn.map(function (p) { return [p[0], p[2]]; }) });
      series.push({ name: t.team + ": actual", color: "--green", step: true, fill: "--green-soft",
        points: burn.map(function (p) { return [p[0], p[1]]; }) });
      range = range ? [Math.min(range[0], ms(b.period_start)), Math.max(range[1], ms(b.period_end))]
        : [ms(b.period_start), ms(b.period_end)];
    });
    if (range) series.push({ name: "limit", color: "--red", points: [[range[0], 100], [range[1], 100]] });
    Charts.timeSeries(document.getElementById("burn-chart"), {
      series: series, xRange: range, yLabel: "% of limit", yMin: 0, height: 220,
      empty: "no team has a budget",
    });
  }

  function drawJob(view) {
    var timeline = view.energy.timeline || [];
    var power = timeline.map(function (p) { return [ms(p.t), p.watts]; });
    var intensity = timeline.filter(function (p) { return p.g_per_kwh !== null; }).map(function (p) {
      return [ms(p.t), p.g_per_kwh];
    });
    var range = power.length > 1 ? [power[0][0], power[power.length - 1][0]] : undefined;
    Charts.timeSeries(document.getElementById("power-chart"), {
      series: [{ name: "power (W)", points: power.concat(livePower), color: "--amber", fill: "--amber-soft" }],
      xRange: view.live && !view.live.terminal ? undefined : range, yLabel: "watts", yMin: 0, height: 220, sync: "job",
      empty: "no power samples yet",
    });
    Charts.timeSeries(document.getElementById("job-intensity-chart"), {
      series: [{ name: "grid intensity (g/kWh)", points: intensity, step: true, color: "--green" }],
      xRange: range, yLabel: "g/kWh", height: 150, sync: "job", empty: "no intensity yet",
    });
    var kwh = view.energy.kwh;
    Charts.bars(document.getElementById("energy-chart"), {
      unit: "kWh",
      empty: "no energy measured yet",
      category: "component",
      height: 170,
      rows: [["gpu", "--amber"], ["cpu", "--blue"], ["ram", "--ram"]].map(function (part) {
        return { label: part[0].toUpperCase(), segments: [{ name: part[0], value: kwh[part[0]], color: part[1] }] };
      }),
    });
  }

  /* -- the job's stored telemetry, per attempt ------------------------------------------ */

  var TELEMETRY_CHARTS = {
    utilisation: { yLabel: "%", yMin: 0, empty: "no GPU utilisation reported" },
    memory: { yLabel: "MiB", yMin: 0, empty: "no torch memory reported" },
    temperature: { yLabel: "°C", empty: "no GPU temperature reported" },
    power: { yLabel: "W", yMin: 0, empty: "no GPU power reported" },
    step_time: { yLabel: "s", yMin: 0, empty: "no step times reported" },
    loss: { yLabel: "", empty: "no losses reported" },
  };
  var GPU_COLOURS = ["--blue", "--amber", "--green", "--ram"];
  var FIGURE_COLOURS = { step_time_s: "--blue", loss: "--blue", grad_norm: "--amber", kl: "--ram", mel: "--green" };
  // Which attempt the charts show; null follows the newest.
  var telemetryAttempt = null;
  var telemetryView = null;

  function telemetrySeries(s) {
    var colour = typeof s.gpu === "number" ? GPU_COLOURS[s.gpu % GPU_COLOURS.length] : (FIGURE_COLOURS[s.field] || "--ink");
    return {
      name: String(s.name),
      points: points(s.points),
      color: colour,
      // Reserved memory dashed beside the same GPU's allocated line: the gap is fragmentation.
      dash: s.field === "torch_reserved_mib" ? [6, 4] : undefined,
    };
  }

  function drawTelemetry(view) {
    if (!view || !document.getElementById("telemetry-history")) return;
    telemetryView = view;
    var warnings = (view.warnings || []).slice(0, MAX_ROWS * 2);
    var markers = warnings.filter(function (w) { return isFinite(ms(w.at)); }).map(function (w) {
      return { t: ms(w.at), label: shortText(w.code), color: "--red" };
    });
    Object.keys(TELEMETRY_CHARTS).forEach(function (name) {
      var el = document.getElementById("tele-" + name);
      if (!el) return;
      var spec = TELEMETRY_CHARTS[name];
      Charts.timeSeries(el, {
        series: ((view.charts || {})[name] || []).slice(0, MAX_ROWS).map(telemetrySeries),
        markers: markers, yLabel: spec.yLabel, yMin: spec.yMin, height: 170, sync: "telemetry",
        empty: spec.empty,
      });
      el.dataset.markers = el.chart ? String(markers.length) : "0";
    });
    var select = document.getElementById("telemetry-attempt");
    if (select) {
      while (select.firstChild) select.removeChild(select.firstChild);
      var attempts = (view.attempts || []).slice(-MAX_ROWS * 4);
      if (attempts.indexOf(view.attempt) < 0) attempts.push(view.attempt);
      attempts.forEach(function (a) {
        var option = document.createElement("option");
        option.value = String(a);
        option.textContent = String(a);
        option.selected = a === view.attempt;
        select.appendChild(option);
      });
    }
    var summary = document.getElementById("telemetry-summary");
    if (summary) {
      var text = view.points ? view.points + " points" : "no telemetry stored for this attempt";
      if (view.points && view.stride > 1) text += ", each up to " + view.stride + " heartbeats merged";
      if (view.gpus > view.gpus_shown) text += " · " + view.gpus_shown + " of " + view.gpus + " GPUs drawn";
      summary.textContent = text;
    }
    var list = document.getElementById("telemetry-warnings");
    if (list) {
      while (list.firstChild) list.removeChild(list.firstChild);
      warnings.forEach(function (w) {
        var item = document.createElement("li");
        item.dataset.code = shortText(w.code);
        item.textContent = fmtSeconds(w.at) + " " + shortText(w.message);
        list.appendChild(item);
      });
      list.hidden = !warnings.length;
      var none = document.getElementById("telemetry-no-warnings");
      if (none) none.hidden = warnings.length > 0;
    }
  }

  function loadTelemetry() {
    var section = document.getElementById("telemetry-history");
    if (!section) return;
    var url = section.dataset.api + (telemetryAttempt === null ? "" : "?attempt=" + encodeURIComponent(telemetryAttempt));
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (view) { if (view) drawTelemetry(view); })
      .catch(function () { /* keep the last drawing; the next refresh tries again */ });
  }

  function watchTelemetryAttempt() {
    var select = document.getElementById("telemetry-attempt");
    if (!select) return;
    select.addEventListener("change", function () {
      var chosen = Number(select.value);
      // The newest attempt is followed as the job goes on; an older one stays put.
      var attempts = (telemetryView && telemetryView.attempts) || [];
      telemetryAttempt = attempts.length && chosen === attempts[attempts.length - 1] ? null : chosen;
      loadTelemetry();
    });
  }

  function setLive(name, value) {
    document.querySelectorAll('[data-live="' + name + '"]').forEach(function (el) { el.textContent = value; });
  }

  function fmtSeconds(iso) {
    if (!iso) return "—";
    var d = new Date(ms(iso));
    var pad = function (n) { return n < 10 ? "0" + n : String(n); };
    return Charts.timeLabel(d.getTime(), true) + ":" + pad(d.getUTCSeconds()) + "Z";
  }

  function gpuWatts(figures) {
    var gpus = (figures && Array.isArray(figures.gpu_watts)) ? figures.gpu_watts.slice(0, MAX_ROWS) : [];
    if (!gpus.length) return "—";
    return gpus.map(function (g) {
      var watts = g && typeof g.watts === "number" ? num(g.watts) + " W" : "—";
      return "GPU " + (g && g.index !== undefined ? g.index : "?") + ": " + watts;
    }).join(" · ");
  }

  /* Any JSON value as short text: numbers formatted, the rest cut to a readable length. */
  function shortText(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") return isFinite(value) ? num(value) : "—";
    var text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT - 1) + "…" : text;
  }

  function label(key) {
    return String(key).replace(/_/g, " ");
  }

  /* Telemetry in whatever shape the worker sends: plain figures as a list, lists of
   * records (one per GPU) as a table with a column per key. Nothing is read as markup. */
  function renderTelemetry(holder, telemetry) {
    if (!holder) return;
    while (holder.firstChild) holder.removeChild(holder.firstChild);
    if (!telemetry || typeof telemetry !== "object" || Array.isArray(telemetry)) {
      holder.dataset.fields = "0";
      return;
    }
    var facts = document.createElement("dl");
    facts.className = "facts telemetry";
    var tables = [];
    var fields = 0;
    function fact(key, value) {
      var div = document.createElement("div");
      var dt = document.createElement("dt");
      dt.textContent = label(key);
      var dd = document.createElement("dd");
      dd.dataset.telemetry = key;
      dd.textContent = shortText(value);
      div.appendChild(dt);
      div.appendChild(dd);
      facts.appendChild(div);
      fields += 1;
    }
    Object.keys(telemetry).slice(0, MAX_ROWS * 2).forEach(function (key) {
      var value = telemetry[key];
      if (Array.isArray(value) && value.length && value.every(function (v) { return v && typeof v === "object" && !Array.isArray(v); })) {
        tables.push([key, value.slice(0, MAX_ROWS)]);
      } else if (value && typeof value === "object" && !Array.isArray(value)) {
        Object.keys(value).slice(0, MAX_COLUMNS).forEach(function (inner) { fact(key + "." + inner, value[inner]); });
      } else {
        fact(key, value);
      }
    });
    if (fields) holder.appendChild(facts);
    tables.forEach(function (entry) {
      var columns = [];
      entry[1].forEach(function (row) {
        Object.keys(row).forEach(function (k) {
          if (columns.indexOf(k) < 0 && columns.length < MAX_COLUMNS) columns.push(k);
        });
      });
      var table = document.createElement("table");
      table.className = "telemetry";
      table.dataset.telemetry = entry[0];
      var caption = document.createElement("caption");
      caption.textContent = label(entry[0]);
      table.appendChild(caption);
      var head = document.createElement("tr");
      columns.forEach(function (k) {
        var th = document.createElement("th");
        th.textContent = label(k);
        head.appendChild(th);
      });
      var thead = document.createElement("thead");
      thead.appendChild(head);
      table.appendChild(thead);
      var body = document.createElement("tbody");
      entry[1].forEach(function (row) {
        var tr = document.createElement("tr");
        columns.forEach(function (k) { cell(tr, shortText(row[k]), typeof row[k] === "number" ? "n" : ""); });
        body.appendChild(tr);
      });
      table.appendChild(body);
      holder.appendChild(table);
      fields += entry[1].length;
    });
    holder.dataset.fields = String(fields);
  }

  function renderWarnings(list, warnings) {
    if (!list) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    (warnings || []).forEach(function (w) {
      var item = document.createElement("li");
      item.textContent = fmtSeconds(w.at) + " " + shortText(w.reason);
      list.appendChild(item);
    });
    list.hidden = !(warnings || []).length;
  }

  function renderLive(live) {
    var section = document.getElementById("live");
    if (!section || !live) return;
    section.dataset.state = live.state;
    var badge = section.querySelector('[data-live="state"]');
    if (badge) {
      badge.className = "state " + live.state;
      badge.textContent = live.state;
    }
    var progress = live.progress || {};
    var step = typeof progress.step === "number" ? progress.step : null;
    setLive("step", step === null ? "—" : String(step));
    setLive("max-steps", live.max_steps ? String(live.max_steps) : "?");
    setLive("stage", progress.stage ? shortText(progress.stage) : "—");
    setLive("loss", typeof progress.loss === "number" ? num(progress.loss) : "—");
    var bar = document.getElementById("job-progress");
    if (bar && live.max_steps) {
      bar.max = live.max_steps;
      bar.value = Math.min(step || 0, live.max_steps);
    }
    var figures = live.live;
    setLive("watts", figures && typeof figures.watts === "number" ? num(figures.watts) + " W" : "—");
    setLive("kwh", figures ? num(figures.kwh_so_far) + " kWh" : "—");
    setLive("kg", figures ? co2e(figures.kg_co2e_so_far) : "—");
    setLive("at", figures && figures.at ? fmtSeconds(figures.at) : "—");
    setLive("gpu-watts", gpuWatts(figures));
    renderTelemetry(document.getElementById("telemetry"), live.telemetry);
    renderWarnings(document.getElementById("warnings"), live.warnings);
  }

  /* A heartbeat's power reading, once per report, for the power chart. */
  function notePower(live) {
    var figures = live && live.live;
    if (!figures || !figures.at || typeof figures.watts !== "number") return null;
    var t = ms(figures.at);
    if (livePower.length && t <= livePower[livePower.length - 1][0]) return null;
    livePower.push([t, figures.watts]);
    return [t, figures.watts];
  }

  function pollLive(api, view) {
    fetch(api + "/live", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (live) {
        if (live) {
          var step = live.progress && live.progress.step;
          if (step !== lastStep) { lastStep = step; loadTelemetry(); }
          renderLive(live);
          var reading = notePower(live);
          if (reading) {
            var chart = document.getElementById("power-chart");
            if (!chart.chart || !Charts.appendPoint(chart, 1, reading[0], reading[1])) drawJob(view);
            var note = document.getElementById("power-empty");
            if (note) note.hidden = true;
          }
          if (live.state !== view.job.state) {
            // A new state brings new facts (start, attempts, the final energy report).
            window.location.reload();
            return;
          }
        }
        window.setTimeout(function () { pollLive(api, view); }, LIVE_MS);
      })
      .catch(function () {
        window.setTimeout(function () { pollLive(api, view); }, LIVE_MS);
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
      notePower(view.live);
      drawJob(view);
      lastStep = view.live && view.live.progress ? view.live.progress.step : undefined;
      watchTelemetryAttempt();
      loadTelemetry();
      if (view.live && !view.live.terminal) {
        renderLive(view.live);
        window.setTimeout(function () { pollLive(api, view); }, LIVE_MS);
      }
    }
    var redraw;
    window.addEventListener("resize", function () {
      window.clearTimeout(redraw);
      redraw = window.setTimeout(function () {
        if (page === "overview") drawOverview(view);
        else if (page === "budgets") drawBudgets(view);
        else if (page === "job") { drawJob(view); drawTelemetry(telemetryView); }
      }, 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
