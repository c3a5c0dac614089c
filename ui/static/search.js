// Search page: service and operation drop-downs from the API, attribute
// conditions, durations, time range and limit; results as a duration-over-
// time scatter plot and a list. The form state is the URL's query string.

import { api, el, errorBox, fmtDuration, fmtTime, navigate, serviceColor } from "/ui/app.js";

const LOOKBACKS = ["15m", "1h", "6h", "24h", "7d"];

export async function renderSearch(main) {
  const params = new URLSearchParams(location.search);
  const form = el("form", { class: "form", id: "search-form" });
  const service = el("select", { name: "service", id: "service" }, el("option", { value: "" }, "All services"));
  const operation = el("select", { name: "operation", id: "operation" }, el("option", { value: "" }, "All operations"));
  const attrs = el("textarea", {
    name: "attr", id: "attr", spellcheck: "false",
    placeholder: "one condition per line, e.g.\nhttp.response.status_code>=500\nresource.deployment.environment=prod",
  });
  attrs.value = params.getAll("attr").join("\n");
  const minDuration = el("input", { name: "minDuration", id: "min-duration", placeholder: "e.g. 100ms", size: 8, value: params.get("minDuration") || "" });
  const maxDuration = el("input", { name: "maxDuration", id: "max-duration", placeholder: "e.g. 2s", size: 8, value: params.get("maxDuration") || "" });
  const status = el("select", { name: "status", id: "status" },
    el("option", { value: "" }, "any"), el("option", { value: "error" }, "error"), el("option", { value: "ok" }, "ok"));
  status.value = params.get("status") || "";
  const lookback = el("select", { name: "lookback", id: "lookback" },
    ...LOOKBACKS.map((l) => el("option", { value: l }, `last ${l}`)), el("option", { value: "custom" }, "custom range"));
  const start = el("input", { type: "datetime-local", name: "start", id: "start", step: "1" });
  const end = el("input", { type: "datetime-local", name: "end", id: "end", step: "1" });
  if (params.get("start")) {
    lookback.value = "custom";
    start.value = toLocalInput(params.get("start"));
    end.value = toLocalInput(params.get("end") || "");
  } else {
    lookback.value = params.get("lookback") || "1h";
  }
  const custom = el("span", { class: "custom-range", style: { display: lookback.value === "custom" ? "contents" : "none" } },
    el("label", {}, "From", start), el("label", {}, "To", end));
  lookback.addEventListener("change", () => {
    custom.style.display = lookback.value === "custom" ? "contents" : "none";
  });
  const limit = el("input", { name: "limit", id: "limit", type: "number", min: 1, max: 1000, size: 5, value: params.get("limit") || "20" });
  form.append(
    el("label", {}, "Service", service),
    el("label", {}, "Operation", operation),
    el("label", {}, "Attributes", attrs),
    el("label", {}, "Status", status),
    el("label", {}, "Min duration", minDuration),
    el("label", {}, "Max duration", maxDuration),
    el("label", {}, "Time", lookback),
    custom,
    el("label", {}, "Limit", limit),
    el("button", { type: "submit", class: "primary", id: "find" }, "Find traces"),
  );
  const results = el("div", { id: "results" });
  main.append(form, results);

  // Drop-downs from the API.
  try {
    const { services } = await api("/api/v1/services");
    for (const s of services) service.append(el("option", { value: s.name }, s.name));
    service.value = params.get("service") || "";
    await fillOperations(service.value, operation, params.get("operation") || "");
  } catch (e) {
    results.append(errorBox(e));
  }
  service.addEventListener("change", () => fillOperations(service.value, operation, ""));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (service.value) q.set("service", service.value);
    if (operation.value) q.set("operation", operation.value);
    for (const line of attrs.value.split("\n").map((l) => l.trim()).filter(Boolean)) q.append("attr", line);
    if (status.value) q.set("status", status.value);
    if (minDuration.value.trim()) q.set("minDuration", minDuration.value.trim());
    if (maxDuration.value.trim()) q.set("maxDuration", maxDuration.value.trim());
    if (lookback.value === "custom") {
      if (start.value) q.set("start", new Date(start.value).toISOString());
      if (end.value) q.set("end", new Date(end.value).toISOString());
    } else {
      q.set("lookback", lookback.value);
    }
    q.set("limit", limit.value || "20");
    navigate(`/search?${q}`);
  });

  if (params.toString()) await runSearch(params, results);
  else results.append(el("div", { class: "empty" }, "Choose a service, an attribute or a duration and press Find traces (or just press it: all recent traces)."));
}

function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

async function fillOperations(service, select, chosen) {
  select.replaceChildren(el("option", { value: "" }, "All operations"));
  if (!service) return;
  const { operations } = await api(`/api/v1/services/${encodeURIComponent(service)}/operations`);
  const names = [...new Set(operations.map((o) => o.name))];
  for (const name of names) {
    const kinds = operations.filter((o) => o.name === name).map((o) => o.spanKind.toLowerCase()).join(", ");
    select.append(el("option", { value: name }, `${name} (${kinds})`));
  }
  select.value = chosen;
}

async function runSearch(params, results) {
  results.replaceChildren(el("div", { class: "muted" }, "Searching…"));
  const traces = [];
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams(params);
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/api/v1/search?${q}`);
    traces.push(...page.traces);
    cursor = page.nextCursor || null;
  };
  try {
    await load();
  } catch (e) {
    results.replaceChildren(errorBox(e));
    return;
  }
  const draw = () => {
    if (!traces.length) {
      results.replaceChildren(el("div", { class: "empty", id: "no-results" },
        "No traces match. Widen the time range, or remove a condition."));
      return;
    }
    const more = cursor
      ? el("button", { id: "load-more", onclick: async (e) => {
          e.target.disabled = true;
          try { await load(); draw(); } catch (err) { results.append(errorBox(err)); }
        } }, "Load more")
      : el("span", { class: "muted" }, "All matching traces are shown.");
    results.replaceChildren(
      el("div", { class: "muted" }, `${traces.length} traces${cursor ? " (more available)" : ""}`),
      scatter(traces),
      table(traces),
      more,
    );
  };
  draw();
}

/** Duration over time; a point opens its trace. */
function scatter(traces) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "scatter");
  svg.setAttribute("id", "scatter");
  svg.setAttribute("viewBox", "0 0 1000 180");
  svg.setAttribute("preserveAspectRatio", "none");
  const xs = traces.map((t) => Number(BigInt(t.startTimeUnixNano) / 1000000n));
  const ys = traces.map((t) => t.durationNs);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const y1 = Math.max(...ys) || 1;
  traces.forEach((t, i) => {
    const c = document.createElementNS(NS, "circle");
    const x = x1 === x0 ? 500 : 20 + ((xs[i] - x0) / (x1 - x0)) * 960;
    const y = 170 - (ys[i] / y1) * 150;
    c.setAttribute("cx", x);
    c.setAttribute("cy", y);
    c.setAttribute("r", 5);
    c.setAttribute("fill", t.errorCount ? "var(--error)" : serviceColor(t.rootServiceName));
    c.setAttribute("data-trace", t.traceId);
    const title = document.createElementNS(NS, "title");
    title.textContent = `${t.rootServiceName}: ${t.rootName} — ${fmtDuration(t.durationNs)}`;
    c.append(title);
    c.addEventListener("click", () => navigate(`/trace/${t.traceId}`));
    svg.append(c);
  });
  return svg;
}

function table(traces) {
  // Two traces ticked: compare them.
  const picked = [];
  const compare = el("button", { id: "compare-picked", disabled: true, onclick: () => navigate(`/compare?a=${picked[0]}&b=${picked[1]}`) }, "Compare 2 ticked traces");
  const tick = (id, box) => {
    const at = picked.indexOf(id);
    if (box.checked && at < 0) picked.push(id);
    if (!box.checked && at >= 0) picked.splice(at, 1);
    compare.disabled = picked.length !== 2;
  };
  const rows = traces.map((t) => el("tr", { class: "clickable result", "data-trace": t.traceId, onclick: () => navigate(`/trace/${t.traceId}`) },
    el("td", { onclick: (e) => e.stopPropagation() },
      el("input", { type: "checkbox", class: "pick", title: "tick two traces to compare them", onchange: (e) => tick(t.traceId, e.target) })),
    el("td", {}, el("a", { href: `/trace/${t.traceId}` }, `${t.rootServiceName}: ${t.rootName}`),
      t.rootMissing ? el("span", { class: "marker" }, "root missing") : null),
    el("td", {}, fmtTime(t.startTimeUnixNano)),
    el("td", { class: "mono" }, fmtDuration(t.durationNs)),
    el("td", {}, t.spanCount),
    el("td", {}, t.errorCount ? el("span", { class: "badge-error" }, t.errorCount) : "0"),
    el("td", {}, t.services.map((s) => el("span", { class: "chip", style: { background: serviceColor(s.name) }, title: `${s.spanCount} spans` }, s.name))),
  ));
  return el("div", {}, el("div", { class: "toolbar" }, compare),
    el("table", { class: "grid", id: "results-table" },
      el("thead", {}, el("tr", {}, ...["", "Trace", "Start", "Duration", "Spans", "Errors", "Services"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
}
