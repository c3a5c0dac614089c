// Trace comparison, as Jaeger's: two traces' span trees merged by path (the
// service and operation of each span and of its ancestors), each node
// marked as only in A, only in B, or in both with the difference of its
// mean duration; then the per-service/operation breakdown of both side by
// side. The URL is /compare?a=<trace id>&b=<trace id>.

import { api, el, errorBox, fmtDuration, navigate, serviceColor } from "/ui/app.js";
import { Spans } from "/ui/trace.js";

/** A trace (columnar, as the trace view reads it) with the span fields the
 * comparison uses. */
async function load(id) {
  const trace = await api(`/api/v1/traces/${encodeURIComponent(id)}?layout=columns`);
  const s = new Spans(trace);
  trace.spans = Array.from({ length: s.length }, (_, i) => ({
    spanId: s.id(i), parentSpanId: s.parentId(i), serviceName: s.service(i), name: s.name(i), durationNs: s.duration(i),
  }));
  return trace;
}

export async function renderCompare(main) {
  const params = new URLSearchParams(location.search);
  const a = params.get("a") || "", b = params.get("b") || "";
  const input = (id, value, label) => el("label", { class: "muted" }, label,
    el("input", { id, value, size: 34, spellcheck: "false", style: { marginLeft: "4px" }, placeholder: "trace id" }));
  const form = el("form", { class: "toolbar", id: "compare-form", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ a: form.querySelector("#compare-a").value.trim(), b: form.querySelector("#compare-b").value.trim() });
    navigate(`/compare?${q}`);
  } },
  el("h1", { style: { fontSize: "18px", margin: 0 } }, "Compare traces"),
  input("compare-a", a, "A"), input("compare-b", b, "B"), el("button", { type: "submit" }, "Compare"));
  const body = el("div", {});
  main.append(form, body);
  if (!a || !b) {
    body.append(el("div", { class: "empty" }, "Give two trace ids, or pick two traces in the search results."));
    return;
  }
  body.append(el("div", { class: "muted" }, "Loading…"));
  let ta, tb;
  try {
    [ta, tb] = await Promise.all([a, b].map(load));
  } catch (e) {
    body.replaceChildren(errorBox(e));
    return;
  }
  body.replaceChildren(
    summary(ta, tb),
    el("h2", {}, "Span trees, merged"),
    el("div", { class: "muted" }, "Spans only in A are red, only in B green; in both, the difference of the mean duration (B − A)."),
    mergedTree(ta, tb),
    el("h2", {}, "By service and operation"),
    breakdownTable(ta, tb));
}

function summary(ta, tb) {
  const line = (label, t) => el("div", {},
    el("strong", {}, `${label}: `),
    el("a", { href: `/trace/${t.traceId}` }, t.traceId),
    ` — ${t.spanCount} spans, ${fmtDuration(t.durationNs)}`);
  return el("div", { class: "details", id: "compare-summary" }, line("A", ta), line("B", tb),
    el("div", {}, `Duration B − A: `, delta(tb.durationNs - ta.durationNs)));
}

/** A signed duration, red when B is slower. */
function delta(ns) {
  const sign = ns > 0 ? "+" : ns < 0 ? "−" : "±";
  return el("span", { class: ns > 0 ? "slower" : ns < 0 ? "faster" : "" }, `${sign}${fmtDuration(Math.abs(ns))}`);
}

/** Each span's path key: its ancestors' and its own service and name. */
function paths(trace) {
  const byId = new Map(trace.spans.map((s) => [s.spanId, s]));
  const keys = new Map();
  const key = (s) => {
    if (keys.has(s.spanId)) return keys.get(s.spanId);
    keys.set(s.spanId, null); // a parent cycle ends here
    const parent = s.parentSpanId && byId.get(s.parentSpanId);
    const up = parent ? key(parent) : null;
    const k = `${up ? `${up}\u0001` : ""}${s.serviceName}\u0000${s.name}`;
    keys.set(s.spanId, k);
    return k;
  };
  for (const s of trace.spans) key(s);
  return keys;
}

function mergedTree(ta, tb) {
  // Nodes by path, in the order met (A's spans, then B's).
  const nodes = new Map();
  const add = (trace, side) => {
    const keys = paths(trace);
    for (const s of trace.spans) {
      const k = keys.get(s.spanId);
      if (k === null) continue;
      const n = nodes.get(k) || nodes.set(k, { key: k, service: s.serviceName, name: s.name, a: [], b: [], children: [] }).get(k);
      n[side].push(s.durationNs);
    }
  };
  add(ta, "a");
  add(tb, "b");
  const roots = [];
  for (const n of nodes.values()) {
    const cut = n.key.lastIndexOf("\u0001");
    const parent = cut < 0 ? null : nodes.get(n.key.slice(0, cut));
    (parent ? parent.children : roots).push(n);
  }
  const mean = (v) => v.reduce((x, y) => x + y, 0) / v.length;
  const rows = [];
  const walk = (n, depth) => {
    const side = n.a.length && n.b.length ? "both" : n.a.length ? "only-a" : "only-b";
    const count = (v) => (v.length ? `${v.length} × ${fmtDuration(mean(v))}` : "–");
    rows.push(el("tr", { class: `compare-node ${side}`, "data-path": n.key.replaceAll("\u0001", " > ").replaceAll("\u0000", ": ") },
      el("td", { style: { paddingLeft: `${8 + depth * 16}px` } },
        el("span", { style: { color: serviceColor(n.service), fontWeight: 600 } }, n.service), `: ${n.name}`),
      el("td", { class: "mono" }, count(n.a)),
      el("td", { class: "mono" }, count(n.b)),
      el("td", { class: "mono" }, side === "both" ? delta(mean(n.b) - mean(n.a)) : side === "only-a" ? "only in A" : "only in B")));
    for (const c of n.children) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  return el("table", { class: "grid", id: "compare-tree" },
    el("thead", {}, el("tr", {}, ...["Span (service: operation)", "A", "B", "B − A"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function breakdownTable(ta, tb) {
  const ops = new Map();
  for (const [side, t] of [["a", ta], ["b", tb]]) {
    for (const o of t.breakdown.operations) {
      const k = `${o.service}\u0000${o.operation}`;
      const row = ops.get(k) || ops.set(k, { service: o.service, operation: o.operation }).get(k);
      row[side] = o;
    }
  }
  const cell = (o, f) => el("td", { class: "mono" }, o ? f(o) : "–");
  const rows = [...ops.values()]
    .sort((x, y) => ((y.b?.selfTimeNs || 0) - (y.a?.selfTimeNs || 0)) - ((x.b?.selfTimeNs || 0) - (x.a?.selfTimeNs || 0)))
    .map((r) => el("tr", { class: "compare-op" },
      el("td", {}, el("span", { style: { color: serviceColor(r.service), fontWeight: 600 } }, r.service), `: ${r.operation}`),
      cell(r.a, (o) => o.spanCount), cell(r.b, (o) => o.spanCount),
      cell(r.a, (o) => fmtDuration(o.selfTimeNs)), cell(r.b, (o) => fmtDuration(o.selfTimeNs)),
      el("td", { class: "mono" }, delta((r.b?.selfTimeNs || 0) - (r.a?.selfTimeNs || 0))),
      cell(r.a, (o) => fmtDuration(o.criticalPathNs)), cell(r.b, (o) => fmtDuration(o.criticalPathNs))));
  return el("table", { class: "grid", id: "compare-breakdown" },
    el("thead", {}, el("tr", {}, ...["Service: operation", "Spans A", "Spans B", "Self time A", "Self time B", "Self B − A", "Critical path A", "Critical path B"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}
