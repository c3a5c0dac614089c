// Services page: RED metrics per service and operation (rate, error rate,
// p50/p95/p99) with small time-series charts, and the cross-trace latency
// breakdown for a chosen service and operation. State in the URL.

import { api, el, errorBox, fmtDuration, navigate, serviceColor } from "/ui/app.js";

const LOOKBACKS = ["15m", "1h", "6h", "24h", "7d"];

export async function renderServices(main) {
  const params = new URLSearchParams(location.search);
  const lookback = params.get("lookback") || "1h";
  const chosen = params.get("service") || "";
  const chosenOp = params.get("operation") || "";
  const range = el("select", { id: "services-lookback", onchange: (e) => go({ lookback: e.target.value }) },
    ...LOOKBACKS.map((l) => el("option", { value: l }, `last ${l}`)));
  range.value = lookback;
  const go = (changes) => {
    const q = new URLSearchParams({ lookback, ...(chosen ? { service: chosen } : {}), ...(chosenOp ? { operation: chosenOp } : {}) });
    for (const [k, v] of Object.entries(changes)) (v ? q.set(k, v) : q.delete(k));
    navigate(`/services?${q}`);
  };
  const body = el("div", {}, el("div", { class: "muted" }, "Loading…"));
  main.append(el("div", { class: "toolbar" }, el("h1", { style: { fontSize: "18px", margin: 0 } }, "Services"), range,
    el("span", { class: "muted" }, "server and consumer spans; click a service for its operations, an operation for its latency breakdown")), body);
  let red;
  try {
    red = await api(`/api/v1/metrics/red?lookback=${encodeURIComponent(lookback)}`);
  } catch (e) {
    body.replaceChildren(errorBox(e));
    return;
  }
  if (!red.services.length) {
    body.replaceChildren(el("div", { class: "empty" }, "No server or consumer spans in this time range."));
    return;
  }
  const head = el("thead", {}, el("tr", {}, ...["Service / operation", "Requests", "Rate", "Errors", "p50", "p95", "p99", "Requests over time", "p99 over time"].map((h) => el("th", {}, h))));
  const rows = [];
  for (const s of red.services) {
    rows.push(line(s, el("a", { href: `/services?lookback=${lookback}&service=${encodeURIComponent(s.name)}`, style: { color: serviceColor(s.name), fontWeight: 600 } }, s.name), red.stepNs, "service"));
    if (s.name === chosen) {
      for (const op of s.operations) {
        rows.push(line(op, el("a", { style: { paddingLeft: "16px" }, href: `/services?lookback=${lookback}&service=${encodeURIComponent(s.name)}&operation=${encodeURIComponent(op.name)}` }, op.name), red.stepNs, "operation"));
      }
    }
  }
  body.replaceChildren(el("table", { class: "grid", id: "red-table" }, head, el("tbody", {}, rows)));
  if (chosen) body.append(await breakdown(chosen, chosenOp, lookback));
}

function line(m, label, stepNs, kind) {
  return el("tr", { class: kind, "data-name": m.name },
    el("td", {}, label),
    el("td", {}, m.requests),
    el("td", {}, `${m.rate.toPrecision(3)}/s`),
    el("td", {}, m.errors ? el("span", { class: "badge-error" }, `${(m.errorRate * 100).toFixed(1)}%`) : "0%"),
    el("td", { class: "mono" }, fmtDuration(m.p50Ns)),
    el("td", { class: "mono" }, fmtDuration(m.p95Ns)),
    el("td", { class: "mono" }, fmtDuration(m.p99Ns)),
    el("td", {}, spark(m.series, (p) => p.requests, stepNs)),
    el("td", {}, spark(m.series, (p) => p.p99Ns, stepNs)),
  );
}

/** A small line chart of `value` over the buckets (missing buckets are 0; one bucket is a dot). */
function spark(series, value, stepNs) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", "160");
  svg.setAttribute("height", "28");
  svg.setAttribute("viewBox", "0 0 160 28");
  if (!series.length) return svg;
  const t = series.map((p) => Number(BigInt(p.startTimeUnixNano) / BigInt(stepNs)));
  const [t0, t1] = [t[0], t[t.length - 1]];
  const max = Math.max(...series.map(value), 1);
  const pts = [];
  for (let k = t0; k <= t1; k++) {
    const i = t.indexOf(k);
    const v = i < 0 ? 0 : value(series[i]);
    const x = t1 === t0 ? 80 : ((k - t0) / (t1 - t0)) * 156 + 2;
    pts.push(`${x.toFixed(1)},${(26 - (v / max) * 24).toFixed(1)}`);
  }
  if (pts.length === 1) {
    // One bucket: a point (a line needs two).
    const [x, y] = pts[0].split(",");
    const dot = document.createElementNS(NS, "circle");
    dot.setAttribute("cx", x);
    dot.setAttribute("cy", y);
    dot.setAttribute("r", "3");
    svg.append(dot);
    return svg;
  }
  const poly = document.createElementNS(NS, "polyline");
  poly.setAttribute("points", pts.join(" "));
  poly.setAttribute("fill", "none");
  poly.setAttribute("stroke", "var(--accent)");
  poly.setAttribute("stroke-width", "1.5");
  svg.append(poly);
  return svg;
}

async function breakdown(service, operation, lookback) {
  const box = el("div", { class: "details", id: "cross-breakdown", style: { marginTop: "12px" } });
  const q = new URLSearchParams({ service, lookback });
  if (operation) q.set("operation", operation);
  try {
    const b = await api(`/api/v1/breakdown?${q}`);
    box.append(
      el("h2", {}, `Where the latency of ${service}${operation ? `: ${operation}` : ""} goes`),
      el("div", { class: "muted" }, `${b.requestCount} requests in ${b.tracesAnalysed} traces${b.truncated ? " (the newest; more matched)" : ""}; request duration p50 ${fmtDuration(b.durationNs.p50)}, p95 ${fmtDuration(b.durationNs.p95)}, p99 ${fmtDuration(b.durationNs.p99)}. Share of each request's critical path:`),
      el("table", { class: "grid breakdown" },
        el("thead", {}, el("tr", {}, ...["Service: operation", "On path in", "Average share", "p50", "p95", "p99", "p99 time"].map((h) => el("th", {}, h)))),
        el("tbody", {}, b.parts.map((p) => el("tr", {},
          el("td", {}, el("span", { style: { color: serviceColor(p.service), fontWeight: 600 } }, p.service), `: ${p.operation}`),
          el("td", {}, `${p.requestCount}/${b.requestCount}`),
          el("td", {}, shareBar(p.share.avg)),
          el("td", {}, pct(p.share.p50)), el("td", {}, pct(p.share.p95)), el("td", {}, pct(p.share.p99)),
          el("td", { class: "mono" }, fmtDuration(p.criticalPathNs.p99)),
        )))));
  } catch (e) {
    box.append(errorBox(e));
  }
  return box;
}

const pct = (x) => `${(x * 100).toFixed(1)}%`;

function shareBar(x) {
  return el("div", { style: { display: "flex", alignItems: "center", gap: "6px" } },
    el("div", { style: { width: "120px", height: "8px", background: "var(--line)", borderRadius: "4px" } },
      el("div", { style: { width: `${Math.min(100, x * 100)}%`, height: "8px", background: "var(--critical)", borderRadius: "4px" } })),
    pct(x));
}
