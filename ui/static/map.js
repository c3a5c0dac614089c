// Service map: the dependency graph, laid out in columns by call depth and
// ordered within columns to keep edge crossings low (barycenter sweeps).
// Readable with tens of services: edge labels (calls, error rate, p99) show
// on hover and for the focused service only; clicking a service focuses it
// (its callers and callees stay, the rest fades) and lists its edges;
// filters hide edges under a number of calls or an error rate. Services
// only seen as `peer.service` (not instrumented) are dashed.

import { api, el, errorBox, fmtDuration, navigate, serviceColor } from "/ui/app.js";

export async function renderMap(main) {
  const params = new URLSearchParams(location.search);
  const lookback = params.get("lookback") || "1h";
  const focus = params.get("focus") || "";
  const minCalls = Number(params.get("minCalls") || 0);
  const minErr = Number(params.get("minErr") || 0);
  const go = (changes) => {
    const q = new URLSearchParams({ lookback, focus, minCalls: String(minCalls), minErr: String(minErr), ...changes });
    for (const [k, v] of [...q]) if (!v || v === "0") q.delete(k);
    navigate(`/map?${q}`);
  };
  const range = el("select", { id: "map-lookback", onchange: (e) => go({ lookback: e.target.value }) },
    ...["15m", "1h", "6h", "24h", "7d"].map((l) => el("option", { value: l }, `last ${l}`)));
  range.value = lookback;
  const number = (id, value, label, key) => el("label", { class: "muted" }, label,
    el("input", { id, type: "number", min: "0", value: String(value), style: { width: "70px", marginLeft: "4px" },
      onchange: (e) => go({ [key]: e.target.value }) }));
  const body = el("div", {}, el("div", { class: "muted" }, "Loading…"));
  main.append(el("div", { class: "toolbar" },
    el("h1", { style: { fontSize: "18px", margin: 0 } }, "Service map"), range,
    number("map-min-calls", minCalls, "min calls", "minCalls"),
    number("map-min-errors", minErr, "min error %", "minErr"),
    focus ? el("button", { id: "map-unfocus", onclick: () => go({ focus: "" }) }, `× ${focus}`) : ""), body);
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
  const errRate = (e) => (e.callCount ? e.errorCount / e.callCount : 0);
  const shown = edges.filter((e) => e.callCount >= minCalls && errRate(e) * 100 >= minErr);
  const parts = [graph(edges, shown, focus, (name) => go({ focus: name }))];
  if (focus) parts.unshift(focusPanel(focus, shown, errRate));
  body.replaceChildren(...parts);
}

/** The focused service's callers and callees, with their edges' figures. */
function focusPanel(focus, edges, errRate) {
  const row = (e, other) => el("tr", {},
    el("td", {}, el("a", { href: `/map?focus=${encodeURIComponent(other)}`, style: { color: serviceColor(other), fontWeight: 600 } }, other)),
    el("td", { class: "num" }, String(e.callCount)),
    el("td", { class: "num" }, `${(errRate(e) * 100).toFixed(1)}%`),
    el("td", { class: "num" }, fmtDuration(e.p99Ns)));
  const table = (title, list, other) => el("div", {}, el("h2", {}, title),
    list.length
      ? el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...["Service", "Calls", "Errors", "p99"].map((h) => el("th", {}, h)))),
        el("tbody", {}, list.map((e) => row(e, other(e)))))
      : el("div", { class: "muted" }, "none"));
  return el("div", { class: "details", id: "map-focus", style: { display: "flex", gap: "32px", marginBottom: "12px" } },
    el("div", {}, el("h2", {}, focus), el("a", { href: `/services?service=${encodeURIComponent(focus)}` }, "RED and operations →")),
    table("Callers", edges.filter((e) => e.child === focus), (e) => e.parent),
    table("Callees", edges.filter((e) => e.parent === focus), (e) => e.child));
}

/** Edge crossings between adjacent columns of a layout (straight lines). */
export function crossings(order, edges, depth) {
  const index = new Map();
  for (const col of order) col.forEach((name, i) => index.set(name, i));
  const spans = edges
    .filter((e) => depth.get(e.child) === depth.get(e.parent) + 1)
    .map((e) => [depth.get(e.parent), index.get(e.parent), index.get(e.child)]);
  let n = 0;
  for (let i = 0; i < spans.length; i++) {
    for (let j = i + 1; j < spans.length; j++) {
      const [c1, a1, b1] = spans[i], [c2, a2, b2] = spans[j];
      if (c1 === c2 && (a1 - a2) * (b1 - b2) < 0) n++;
    }
  }
  return n;
}

/**
 * Swaps neighbours within each column while that removes crossings with the
 * columns on either side (Sugiyama's transposition step).
 */
function transpose(order, nodes, depth) {
  const index = new Map();
  const reindex = () => { for (const col of order) col.forEach((name, i) => index.set(name, i)); };
  reindex();
  const near = (name, side) => {
    const n = nodes.get(name), d = depth.get(name) + side;
    const list = side < 0 ? n.in.map((e) => e.parent) : n.out.map((e) => e.child);
    return list.filter((m) => depth.get(m) === d).map((m) => index.get(m));
  };
  // Crossings between the edges of u (above) and v (below).
  const cross = (u, v) => {
    let n = 0;
    for (const side of [-1, 1]) {
      const a = near(u, side), b = near(v, side);
      for (const x of a) for (const y of b) if (x > y) n++;
    }
    return n;
  };
  for (let pass = 0; pass < 20; pass++) {
    let improved = false;
    for (const col of order) {
      for (let i = 0; i + 1 < col.length; i++) {
        if (cross(col[i + 1], col[i]) < cross(col[i], col[i + 1])) {
          [col[i], col[i + 1]] = [col[i + 1], col[i]];
          index.set(col[i], i);
          index.set(col[i + 1], i + 1);
          improved = true;
        }
      }
    }
    if (!improved) break;
  }
}

function graph(allEdges, edges, focus, onFocus) {
  const NS = "http://www.w3.org/2000/svg";
  const nodes = new Map();
  const node = (name) => nodes.get(name) || nodes.set(name, { name, out: [], in: [], uninstrumented: true }).get(name);
  // Every service of the range keeps its place whatever the filters.
  for (const e of allEdges) {
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
  const order = [];
  for (const n of [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    (order[depth.get(n.name)] ||= []).push(n.name);
  }
  for (let c = 0; c < order.length; c++) order[c] ||= [];
  const before = crossings(order, allEdges, depth);
  // Barycenter sweeps, down then up: each column ordered by the mean
  // position of its neighbours in the column before (after); the best
  // order seen is kept.
  const position = () => {
    const p = new Map();
    for (const col of order) col.forEach((name, i) => p.set(name, i / Math.max(1, col.length - 1)));
    return p;
  };
  let best = order.map((c) => [...c]), bestCount = before;
  for (let sweep = 0; sweep < 8; sweep++) {
    const down = sweep % 2 === 0;
    const cols = down ? [...order.keys()].slice(1) : [...order.keys()].reverse().slice(1);
    for (const c of cols) {
      const p = position();
      const bary = new Map(order[c].map((name, i) => {
        const n = nodes.get(name);
        const near = down
          ? n.in.map((e) => e.parent).filter((m) => depth.get(m) === c - 1)
          : n.out.map((e) => e.child).filter((m) => depth.get(m) === c + 1);
        const mean = near.length ? near.reduce((s, m) => s + p.get(m), 0) / near.length : p.get(name);
        return [name, mean + i * 1e-6];
      }));
      order[c].sort((a, b) => bary.get(a) - bary.get(b));
    }
    transpose(order, nodes, depth);
    const count = crossings(order, allEdges, depth);
    if (count < bestCount) {
      best = order.map((col) => [...col]);
      bestCount = count;
    }
  }
  const W = 170, H = 40, GX = 150, GY = 26;
  const tallest = Math.max(...best.map((c) => c.length));
  const pos = new Map();
  best.forEach((col, c) => {
    // Columns centred vertically against the tallest.
    const offset = ((tallest - col.length) * (H + GY)) / 2;
    col.forEach((name, r) => pos.set(name, { x: 20 + c * (W + GX), y: 20 + offset + r * (H + GY) }));
  });
  const width = 40 + best.length * (W + GX);
  const height = 40 + tallest * (H + GY) + 60;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("id", "service-map");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.dataset.crossingsBefore = String(before);
  svg.dataset.crossings = String(bestCount);
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const defs = mk("defs", {});
  const marker = mk("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
  marker.append(mk("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "var(--muted)" }));
  defs.append(marker);
  svg.append(defs);
  const near = new Set(focus ? [focus] : []);
  for (const e of edges) {
    if (e.parent === focus) near.add(e.child);
    if (e.child === focus) near.add(e.parent);
  }
  const edgeGroups = new Map();
  const labels = mk("g", { class: "labels" });
  for (const e of edges) {
    const a = pos.get(e.parent), b = pos.get(e.child);
    const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x, b.y + H / 2];
    const back = x2 <= x1;
    const curve = back
      ? [[a.x + W / 2, a.y + H], [a.x + W / 2, a.y + H + 50], [b.x + W / 2, b.y + H + 50], [b.x + W / 2, b.y + H]]
      : [[x1, y1], [x1 + GX / 2, y1], [x2 - GX / 2, y2], [x2, y2]];
    const d = `M ${curve[0].join(" ")} C ${curve.slice(1).map((p) => p.join(" ")).join(", ")}`;
    const errRate = e.callCount ? e.errorCount / e.callCount : 0;
    const incident = focus && (e.parent === focus || e.child === focus);
    const cls = ["edge", incident ? "selected" : "", focus && !incident ? "faded" : ""].filter(Boolean).join(" ");
    const g = mk("g", { class: cls, "data-edge": `${e.parent}->${e.child}` });
    g.append(mk("path", { d, fill: "none", stroke: errRate > 0.05 ? "var(--error)" : "var(--muted)", "stroke-width": String(1 + Math.min(4, Math.log10(1 + e.callCount))), "marker-end": "url(#arrow)", "stroke-dasharray": e.uninstrumented ? "5 4" : "none" }));
    // A wide invisible stroke makes the edge easy to hover.
    g.append(mk("path", { d, fill: "none", stroke: "transparent", "stroke-width": "12" }));
    // The label sits on the curve: near the other end when a service is
    // focused (its neighbours are on different rows, so their labels do
    // not overlap), else half-way.
    const t = e.parent === focus ? 0.78 : e.child === focus ? 0.22 : 0.5;
    const at = (i) => (1 - t) ** 3 * curve[0][i] + 3 * (1 - t) ** 2 * t * curve[1][i] + 3 * (1 - t) * t ** 2 * curve[2][i] + t ** 3 * curve[3][i];
    const lx = at(0), ly = at(1) - 6;
    const label = mk("text", { class: "edge-label", x: lx, y: ly, "text-anchor": "middle", "font-size": "11", fill: "var(--fg)", stroke: "var(--bg)", "stroke-width": "4", "paint-order": "stroke", "data-edge": `${e.parent}->${e.child}` },
      `${e.callCount} calls · ${(errRate * 100).toFixed(1)}% err · p99 ${fmtDuration(e.p99Ns)}`);
    if (incident) label.classList.add("shown");
    labels.append(label);
    g.addEventListener("mouseenter", () => label.classList.add("hover"));
    g.addEventListener("mouseleave", () => label.classList.remove("hover"));
    (edgeGroups.get(e.parent) || edgeGroups.set(e.parent, []).get(e.parent)).push(label);
    (edgeGroups.get(e.child) || edgeGroups.set(e.child, []).get(e.child)).push(label);
    svg.append(g);
  }
  for (const n of nodes.values()) {
    const p = pos.get(n.name);
    const cls = ["node", n.name === focus ? "focused" : "", focus && !near.has(n.name) ? "faded" : ""].filter(Boolean).join(" ");
    const g = mk("g", { class: cls, "data-service": n.name, tabindex: "0" });
    g.append(mk("rect", { x: p.x, y: p.y, width: W, height: H, rx: 8, fill: "var(--panel)", stroke: serviceColor(n.name), "stroke-width": n.name === focus ? 4 : 2, "stroke-dasharray": n.uninstrumented ? "5 4" : "none" }));
    const name = n.name.length > 24 ? `${n.name.slice(0, 23)}…` : n.name;
    g.append(mk("text", { x: p.x + W / 2, y: p.y + H / 2 + 4, "text-anchor": "middle", "font-size": "13", "font-weight": "600", fill: "var(--fg)" }, name));
    g.append(mk("title", {}, n.uninstrumented ? `${n.name}: not instrumented, seen as peer.service of its callers` : `${n.name}: click to focus`));
    g.addEventListener("click", () => onFocus(n.name === focus ? "" : n.name));
    g.addEventListener("mouseenter", () => (edgeGroups.get(n.name) || []).forEach((l) => l.classList.add("hover")));
    g.addEventListener("mouseleave", () => (edgeGroups.get(n.name) || []).forEach((l) => l.classList.remove("hover")));
    svg.append(g);
  }
  // Labels above everything.
  svg.append(labels);
  return el("div", { style: { overflow: "auto" } }, svg);
}
