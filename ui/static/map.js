// Service map: the dependency graph, laid out in columns by call depth,
// with call counts, error rates and p99 latency on the edges. Services only
// seen as `peer.service` (not instrumented) are dashed.

import { api, el, errorBox, fmtDuration, navigate, serviceColor } from "/ui/app.js";

export async function renderMap(main) {
  const params = new URLSearchParams(location.search);
  const lookback = params.get("lookback") || "1h";
  const range = el("select", { id: "map-lookback", onchange: (e) => navigate(`/map?lookback=${e.target.value}`) },
    ...["15m", "1h", "6h", "24h", "7d"].map((l) => el("option", { value: l }, `last ${l}`)));
  range.value = lookback;
  const body = el("div", {}, el("div", { class: "muted" }, "Loading…"));
  main.append(el("div", { class: "toolbar" }, el("h1", { style: { fontSize: "18px", margin: 0 } }, "Service map"), range), body);
  let edges;
  try {
    ({ edges } = await api(`/api/v1/dependencies?lookback=${encodeURIComponent(lookback)}`));
  } catch (e) {
    body.replaceChildren(errorBox(e));
    return;
  }
  if (!edges.length) {
    body.replaceChildren(el("div", { class: "empty" }, "No calls between services in this time range."));
    return;
  }
  body.replaceChildren(graph(edges));
}

function graph(edges) {
  const NS = "http://www.w3.org/2000/svg";
  const nodes = new Map();
  const node = (name) => nodes.get(name) || nodes.set(name, { name, out: [], in: [], uninstrumented: true }).get(name);
  for (const e of edges) {
    node(e.parent).uninstrumented = false;
    const child = node(e.child);
    if (!e.uninstrumented) child.uninstrumented = false;
    node(e.parent).out.push(e);
    child.in.push(e);
  }
  // Depth: longest path from a node without callers (cycles are cut).
  const depth = new Map();
  const visit = (n, d, seen) => {
    if (seen.has(n.name) || (depth.get(n.name) ?? -1) >= d) return;
    depth.set(n.name, d);
    seen.add(n.name);
    for (const e of n.out) visit(nodes.get(e.child), d + 1, seen);
    seen.delete(n.name);
  };
  const roots = [...nodes.values()].filter((n) => !n.in.length);
  for (const r of roots.length ? roots : [nodes.values().next().value]) visit(r, 0, new Set());
  for (const n of nodes.values()) if (!depth.has(n.name)) depth.set(n.name, 0);
  const columns = [];
  for (const n of [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const d = depth.get(n.name);
    (columns[d] ||= []).push(n);
  }
  const W = 180, H = 48, GX = 280, GY = 56;
  const pos = new Map();
  columns.forEach((col, c) => col.forEach((n, r) => pos.set(n.name, { x: 20 + c * (W + GX), y: 20 + r * (H + GY) })));
  const width = 40 + columns.length * (W + GX);
  const height = 40 + Math.max(...columns.map((c) => c.length)) * (H + GY);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("id", "service-map");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const defs = mk("defs", {});
  const marker = mk("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" });
  marker.append(mk("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "var(--muted)" }));
  defs.append(marker);
  svg.append(defs);
  for (const e of edges) {
    const a = pos.get(e.parent), b = pos.get(e.child);
    const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x, b.y + H / 2];
    const back = x2 <= x1;
    const d = back
      ? `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${a.y + H + 60}, ${b.x + W / 2} ${b.y + H + 60}, ${b.x + W / 2} ${b.y + H}`
      : `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}`;
    const errRate = e.callCount ? e.errorCount / e.callCount : 0;
    const g = mk("g", { class: "edge", "data-edge": `${e.parent}->${e.child}` });
    g.append(mk("path", { d, fill: "none", stroke: errRate > 0.05 ? "var(--error)" : "var(--muted)", "stroke-width": String(1 + Math.min(4, Math.log10(1 + e.callCount))), "marker-end": "url(#arrow)", "stroke-dasharray": e.uninstrumented ? "5 4" : "none" }));
    const lx = back ? (a.x + b.x + W) / 2 : (x1 + x2) / 2, ly = back ? Math.max(a.y, b.y) + H + 50 : (y1 + y2) / 2 - 6;
    g.append(mk("text", { x: lx, y: ly, "text-anchor": "middle", "font-size": "11", fill: "var(--fg)", stroke: "var(--bg)", "stroke-width": "4", "paint-order": "stroke" },
      `${e.callCount} calls · ${(errRate * 100).toFixed(1)}% err · p99 ${fmtDuration(e.p99Ns)}`));
    svg.append(g);
  }
  for (const n of nodes.values()) {
    const p = pos.get(n.name);
    const g = mk("g", { class: "node", "data-service": n.name });
    g.append(mk("rect", { x: p.x, y: p.y, width: W, height: H, rx: 8, fill: "var(--panel)", stroke: serviceColor(n.name), "stroke-width": 2, "stroke-dasharray": n.uninstrumented ? "5 4" : "none" }));
    g.append(mk("text", { x: p.x + W / 2, y: p.y + H / 2 + 4, "text-anchor": "middle", "font-size": "13", "font-weight": "600", fill: "var(--fg)" }, n.name));
    if (!n.uninstrumented) {
      const link = mk("a", { href: `/services?service=${encodeURIComponent(n.name)}` });
      link.append(g);
      svg.append(link);
    } else {
      g.append(mk("title", {}, "not instrumented: seen as peer.service of its callers"));
      svg.append(g);
    }
  }
  return el("div", { style: { overflow: "auto" } }, svg);
}
