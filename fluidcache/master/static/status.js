// The fluidcache status page: polls GET /v1/status with the cluster token and draws it.
// The token comes from the login form or the URL fragment (#token=..., which browsers never
// send to a server), is kept in sessionStorage (this tab only), and is dropped from the URL at
// once. Data is written with textContent only: paths and error messages are never parsed as HTML.
"use strict";

(() => {
  const KEY = "fluidcache.token";
  const REFRESH_MS = 1500;
  const TIMEOUT_MS = 5000;
  const STATUS_URL = "/v1/status";
  const RUNNING = new Set(["Pending", "Executing"]);
  // Report fields drawn in a fixed order; any other scalar field is shown after them as it comes.
  const SUMMARY = ["ufs_total_bytes", "cached_bytes", "cache_capacity", "cached_percent",
                   "file_count"];
  const LABELS = {
    ufs_total_bytes: "UFS total", cached_bytes: "Cached", cache_capacity: "Capacity",
    cached_percent: "Cached %", file_count: "Files",
  };

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let epoch = 0; // bumped on every token change: answers to older requests are dropped
  let lastOk = 0;

  // ---- formatting --------------------------------------------------------------------------

  function bytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return String(n);
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let v = n;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
  }
  const percent = (p) => `${Number(p).toFixed(2)} %`;
  const count = (n) => Number(n).toLocaleString("en-US");
  function seconds(s) {
    if (typeof s !== "number" || s < 0 || !isFinite(s)) return "–";
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  // A field's display, guessed from its name: the Report may grow fields this page predates.
  function display(key, value) {
    if (typeof value === "number") {
      if (key.endsWith("percent")) return percent(value);
      if (key.endsWith("ratio")) return percent(100 * value);
      if (key.endsWith("bytes") || key.endsWith("capacity") || key === "used") return bytes(value);
      if (key === "rate" || key.endsWith("_rate")) return `${bytes(value)}/s`;
      return Number.isInteger(value) ? count(value) : String(Number(value.toFixed(3)));
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }
  const label = (key) => LABELS[key] || key.replace(/_/g, " ");

  // ---- DOM helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function bar(done, total, text) {
    const frac = total > 0 ? Math.max(0, Math.min(1, done / total)) : 0;
    const b = el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0,
                          "aria-valuemax": 100, "aria-valuenow": (100 * frac).toFixed(1) },
                 el("span"), el("em", {}, text));
    b.firstChild.style.width = `${100 * frac}%`;
    return b;
  }

  // One <dt>/<dd> pair per field; data-key/data-value keep the raw number for tests and tools.
  function fields(obj, keys) {
    const dl = el("dl", { class: "fields" });
    for (const key of keys) {
      if (!(key in obj)) continue;
      const v = obj[key];
      dl.append(el("dt", {}, label(key)),
                el("dd", { "data-key": key, "data-value": typeof v === "object" ? null : v,
                           title: typeof v === "number" ? String(v) : null }, display(key, v)));
    }
    return dl;
  }
  const scalarKeys = (obj) => Object.keys(obj).filter(
    (k) => obj[k] === null || typeof obj[k] !== "object");
  const isTable = (v) => Array.isArray(v) && v.length > 0 && v.every(
    (x) => x && typeof x === "object" && !Array.isArray(x));

  // ---- sections ----------------------------------------------------------------------------

  function datasetCard(name, d, attrs) {
    const keys = [...SUMMARY, ...scalarKeys(d).filter((k) => !SUMMARY.includes(k))]
      .filter((k) => !["dataset", "name"].includes(k));
    const card = el("div", { class: "card dataset", ...attrs }, el("h4", {}, name));
    if ("cached_percent" in d) {
      card.append(bar(d.cached_percent, 100,
                      `${percent(d.cached_percent)} of ${bytes(d.ufs_total_bytes)}`));
    }
    card.append(fields(d, keys));
    for (const [k, v] of Object.entries(d)) {
      if (isTable(v) && k !== "workers" && k !== "datasets") {
        card.append(el("h3", {}, label(k)), genericTable(v));
      }
    }
    return card;
  }

  function genericTable(rows) {
    const keys = [...new Set(rows.flatMap(scalarKeys))];
    return el("table", {},
      el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", {}, label(k))))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...keys.map(
        (k) => el("td", { "data-key": k, "data-value": r[k] }, display(k, r[k])))))));
  }

  function drawDatasets(report) {
    const cards = el("div", { class: "cards" });
    const many = Array.isArray(report.datasets) && report.datasets.length > 0;
    cards.append(datasetCard(many ? "All datasets" : "Dataset", report, { "data-dataset": "*" }));
    if (many) {
      for (const d of report.datasets) {
        const name = d.dataset || d.name || "?";
        cards.append(datasetCard(name, d, { "data-dataset": name }));
      }
    }
    const out = [cards];
    // Lists the page does not know (advice, per-tier totals...) still show, as plain tables.
    for (const [k, v] of Object.entries(report)) {
      if (k === "workers" || k === "datasets") continue;
      if (isTable(v)) out.push(el("h3", {}, label(k)), genericTable(v));
      else if (Array.isArray(v) && v.length) {
        out.push(el("h3", {}, label(k)), el("ul", {}, ...v.map((x) => el("li", {}, display(k, x)))));
      }
    }
    $("datasets").replaceChildren(...out);
  }

  function drawWorkers(workers, now) {
    if (!workers.length) {
      $("workers").replaceChildren(el("p", { class: "empty" }, "No live worker."));
      return;
    }
    const cards = el("div", { class: "cards" });
    for (const w of workers) {
      const age = w.last_heartbeat ? now - w.last_heartbeat : -1;
      const card = el("div", { class: "card worker", "data-worker": w.worker_id },
        el("h4", {}, w.worker_id,
           el("span", { class: `state-${w.state}` }, w.state),
           el("span", { class: "muted" }, w.node || "")),
        el("div", { class: "muted" },
           `${w.address} · ${age >= 0 ? `heartbeat ${seconds(age)} ago` : "no heartbeat yet"}`));
      for (const t of w.tiers || []) {
        const pct = t.capacity ? (100 * t.used) / t.capacity : 0;
        card.append(el("div", { class: "tier", "data-medium": t.medium, "data-used": t.used,
                                "data-capacity": t.capacity },
          el("strong", {}, t.medium),
          bar(t.used, t.capacity, `${bytes(t.used)} of ${bytes(t.capacity)} (${pct.toFixed(1)} %)`),
          el("small", {}, `${count(t.blocks || 0)} blocks`)));
      }
      const rest = scalarKeys(w).filter(
        (k) => !["worker_id", "address", "node", "state", "last_heartbeat"].includes(k));
      if (rest.length) card.append(fields(w, rest));
      cards.append(card);
    }
    $("workers").replaceChildren(cards);
  }

  function jobRow(j, now) {
    const total = j.bytes_total || 0;
    const done = j.bytes_done || 0;
    const pct = total ? (100 * done) / total : 0;
    const started = j.started ? `${seconds(now - j.started)} ago` : "not yet";
    const progress = el("td", { class: "progress" },
      bar(done, total, total ? `${bytes(done)} of ${bytes(total)} (${pct.toFixed(1)} %)`
                             : `${bytes(done)}`));
    for (const t of (j.targets || []).length > 1 ? j.targets : []) {
      progress.append(el("div", { class: "muted" },
        `${t.path}: ${bytes(t.bytes_done)} of ${bytes(t.bytes_total)}`));
    }
    return el("tr", { "data-job": j.job_id, "data-phase": j.phase, "data-bytes-done": done,
                      "data-bytes-total": total },
      el("td", { title: j.job_id }, el("code", {}, j.job_id.slice(0, 12))),
      el("td", {}, j.kind, j.schedule ? el("div", { class: "muted" }, j.schedule) : null),
      el("td", {}, `${j.dataset}: ${(j.paths || []).join(", ")}`,
         j.kind === "load" ? el("div", { class: "muted" },
           `replicas ${j.replicas === -1 ? "all" : j.replicas}`) : null),
      el("td", { class: `phase phase-${j.phase}`, "data-key": "phase" }, j.phase),
      progress,
      el("td", { "data-key": "files" }, `${count(j.files_done || 0)} / ${count(j.files_total || 0)}`),
      el("td", { "data-key": "rate" }, RUNNING.has(j.phase) || j.rate ? `${bytes(j.rate || 0)}/s` : "–"),
      el("td", { "data-key": "eta" }, j.phase === "Executing" ? seconds(j.eta) : "–"),
      el("td", {}, started, j.started ? el("div", { class: "muted" },
        `ran ${seconds((j.finished || now) - j.started)}`) : null),
      el("td", { class: j.error ? "error" : "result" }, j.error || j.result || ""));
  }

  function jobTable(jobs, now, none) {
    if (!jobs.length) return el("p", { class: "empty" }, none);
    const head = ["Job", "Kind", "Targets", "Phase", "Bytes", "Files", "Rate", "ETA",
                  "Started", "Error / result"];
    return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...jobs.map((j) => jobRow(j, now))));
  }

  function drawJobs(jobs, now) {
    $("jobs-running").replaceChildren(
      jobTable(jobs.filter((j) => RUNNING.has(j.phase)), now, "No job running."));
    $("jobs-recent").replaceChildren(
      jobTable(jobs.filter((j) => !RUNNING.has(j.phase)), now, "No finished job."));
  }

  // ---- states ------------------------------------------------------------------------------

  function banner(kind, text) {
    const b = $("banner");
    b.className = kind || "";
    b.textContent = text || "";
    b.hidden = !text;
  }

  // No token, or one the master refused: no data on the page at all, and the login form.
  function locked(text, kind) {
    stop();
    for (const id of ["datasets", "workers", "jobs-running", "jobs-recent"]) $(id).replaceChildren();
    $("data").hidden = true;
    $("updated").textContent = "";
    $("signout").hidden = true;
    $("login").hidden = false;
    banner(kind, text);
    $("token").focus();
  }

  function draw(status) {
    drawDatasets(status.report);
    drawWorkers(status.report.workers || [], status.time);
    drawJobs(status.jobs || [], status.time);
    $("data").hidden = false;
    $("login").hidden = true;
    $("signout").hidden = false;
    lastOk = Date.now();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    banner(null, null);
  }

  // ---- polling -----------------------------------------------------------------------------

  function stop() {
    epoch++;
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  async function poll(mine) {
    const token = sessionStorage.getItem(KEY);
    if (!token) { locked("Wrong or missing token: enter the cluster token.", "unauthorized"); return; }
    let answer = null;
    let failure = null;
    const abort = new AbortController();
    const t = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const resp = await fetch(STATUS_URL, {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store", credentials: "omit", signal: abort.signal,
      });
      if (mine !== epoch) return;
      if (resp.status === 401) {
        sessionStorage.removeItem(KEY);
        locked("Wrong or missing token: the master refused it. Enter the cluster token.",
               "unauthorized");
        return;
      }
      const body = await resp.json().catch(() => null);
      if (resp.ok && body) answer = body;
      else failure = `HTTP ${resp.status}${body && body.message ? `: ${body.message}` : ""}`;
    } catch (e) {
      failure = e.name === "AbortError" ? "no answer within 5 s" : String(e.message || e);
    } finally {
      clearTimeout(t);
    }
    if (mine !== epoch) return;
    if (answer) {
      draw(answer);
    } else if (lastOk) {
      banner("stale", `Master unreachable (${failure}); figures from ` +
                      `${seconds((Date.now() - lastOk) / 1000)} ago.`);
    } else {
      banner("error", `Master unreachable: ${failure}`);
    }
    timer = setTimeout(() => poll(mine), REFRESH_MS);
  }

  function start() {
    stop();
    lastOk = 0;
    banner(null, "Loading…");
    poll(epoch);
  }

  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (!params.has("token")) return;
    const token = params.get("token").trim();
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
    // Out of the address bar, the history and any screenshot.
    history.replaceState(null, "", location.pathname + location.search);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      $("token").value = "";
      if (!token) return;
      sessionStorage.setItem(KEY, token);
      start();
    });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      locked("Token forgotten.", "stale");
    });
    window.addEventListener("hashchange", () => { tokenFromFragment(); start(); });
    tokenFromFragment();
    start();
  });
})();
