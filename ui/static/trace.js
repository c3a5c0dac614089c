// Trace view: a virtualised waterfall (only visible rows are in the DOM, so
// 10,000-span traces scroll smoothly), collapsible subtrees, service colours,
// time ruler, minimap, the critical path, span details, the per-service and
// per-operation breakdown, and search within the trace.

import { api, el, errorBox, fmtDuration, fmtTime, serviceColor } from "/ui/app.js";

const ROW_H = 24;
const OVERSCAN = 12;

export async function renderTrace(main, traceId) {
  const began = performance.now();
  main.append(el("div", { class: "muted" }, `Loading trace ${traceId}…`));
  let trace;
  try {
    trace = await api(`/api/v1/traces/${encodeURIComponent(traceId)}?layout=columns`);
  } catch (e) {
    main.replaceChildren(e.status === 404
      ? el("div", { class: "empty", id: "trace-not-found" }, `Trace ${traceId} was not found. It may be older than the retention, or not sent yet.`)
      : errorBox(e));
    return;
  }
  const view = new TraceView(main, trace);
  view.mount();
  // Reported to the browser test (and useful in the console).
  const ms = performance.now() - began;
  document.body.dataset.traceRenderMs = ms.toFixed(1);
  console.info(`trace ${traceId}: ${trace.spanCount} spans rendered in ${ms.toFixed(1)} ms`);
}

/**
 * The server's columnar trace (`?layout=columns`, see docs/api.md): span
 * `i`'s fields are `columns.<field>[i]`, strings are indexes into
 * `strings`, each resource and scope is listed once. The waterfall reads
 * the columns; a span's whole record is made only when it is shown.
 */
export class Spans {
  constructor(trace) {
    this.c = trace.columns;
    this.str = trace.strings;
    this.resources = trace.resources;
    this.scopes = trace.scopes;
    this.t0 = BigInt(trace.startTimeUnixNano);
    this.length = this.c.spanId.length;
    this.children = new Int32Array(this.length);
    for (const p of this.c.parent) if (p >= 0) this.children[p]++;
  }

  id(i) { return this.c.spanId[i]; }
  service(i) { return this.str[this.c.service[i]]; }
  name(i) { return this.str[this.c.name[i]]; }
  error(i) { return this.str[this.c.status[i]] === "ERROR"; }
  /** Past 2^53 ns the encoding has a string; the waterfall a number. */
  duration(i) { return Number(this.c.duration[i]); }
  depth(i) { return this.c.depth[i]; }
  skew(i) { return this.c.clockSkew[i]; }
  orphan(i) { return this.c.orphan[i] === 1; }

  /** The stored parent span id of span `i`, or null. */
  parentId(i) {
    const p = this.c.parentSpanId[i];
    return p >= 0 ? this.str[p] : null;
  }

  /** A time of the encoding as nanoseconds from the trace's start. */
  offset(v) { return typeof v === "number" ? v : Number(BigInt(v) - this.t0); }

  /** A time of the encoding as absolute nanoseconds (a string). */
  absolute(v) { return typeof v === "number" ? (this.t0 + BigInt(v)).toString() : v; }

  /** Event `[time, name, attributes, dropped]`s of span `i`. */
  events(i) { return this.c.events[i]; }

  /**
   * A flat `[key, value, …]` attribute list as an object, keys in order
   * (as the span list has them). `__proto__` is a key like any other.
   */
  attributes(flat) {
    const entries = [];
    for (let k = 0; k < flat.length; k += 2) {
      const v = flat[k + 1];
      entries.push([this.str[flat[k]], typeof v === "number" ? this.str[v] : v[0]]);
    }
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const out = {};
    for (const [key, value] of entries) {
      if (key === "__proto__") Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      else out[key] = value;
    }
    return out;
  }

  /** Span `i` as the span-list answer has it. */
  span(i) {
    const c = this.c;
    const str = (v) => this.str[v];
    const [rAttrs, rDropped, rUrl] = this.resources[c.resource[i]];
    const [sName, sVersion, sAttrs, sDropped, sUrl] = this.scopes[c.scope[i]];
    const start = this.absolute(c.start[i]);
    return {
      spanId: c.spanId[i],
      parentSpanId: this.parentId(i),
      traceState: str(c.traceState[i]),
      flags: c.flags[i],
      name: this.name(i),
      kind: str(c.kind[i]),
      serviceName: this.service(i),
      startTimeUnixNano: start,
      endTimeUnixNano: (BigInt(start) + BigInt(c.duration[i])).toString(),
      durationNs: this.duration(i),
      status: { code: str(c.status[i]), message: str(c.statusMessage[i]) },
      attributes: this.attributes(c.attributes[i]),
      droppedAttributesCount: c.droppedAttributesCount[i],
      events: c.events[i].map(([time, name, attrs, dropped]) => ({
        timeUnixNano: this.absolute(time), name: str(name), attributes: this.attributes(attrs), droppedAttributesCount: dropped,
      })),
      droppedEventsCount: c.droppedEventsCount[i],
      links: c.links[i].map(([traceId, spanId, state, flags, attrs, dropped]) => ({
        traceId, spanId, traceState: str(state), flags, attributes: this.attributes(attrs), droppedAttributesCount: dropped,
      })),
      droppedLinksCount: c.droppedLinksCount[i],
      resource: { attributes: this.attributes(rAttrs), droppedAttributesCount: rDropped, schemaUrl: str(rUrl) },
      scope: { name: str(sName), version: str(sVersion), attributes: this.attributes(sAttrs), droppedAttributesCount: sDropped, schemaUrl: str(sUrl) },
      depth: c.depth[i],
      orphan: this.orphan(i),
      childCount: this.children[i],
      clockSkewNs: c.clockSkew[i],
      selfTimeNs: c.selfTime[i],
      criticalPathNs: c.criticalPath[i],
    };
  }
}

class TraceView {
  constructor(main, trace) {
    this.main = main;
    this.trace = trace;
    const spans = (this.spans = new Spans(trace));
    const n = spans.length;
    const t0 = BigInt(trace.startTimeUnixNano);
    this.total = Math.max(trace.durationNs, 1);
    this.offset = new Float64Array(n);
    this.parent = Int32Array.from(spans.c.parent);
    this.end = new Int32Array(n);
    const stack = [];
    for (let i = 0; i < n; i++) {
      this.offset[i] = spans.offset(spans.c.start[i]) + spans.skew(i);
      const depth = spans.depth(i);
      while (stack.length && spans.depth(stack[stack.length - 1]) >= depth) this.end[stack.pop()] = i;
      stack.push(i);
    }
    while (stack.length) this.end[stack.pop()] = n;
    this.critical = new Map();
    for (const sec of trace.criticalPath || []) {
      const list = this.critical.get(sec.spanId) || [];
      list.push([Number(BigInt(sec.startTimeUnixNano) - t0), Number(BigInt(sec.endTimeUnixNano) - t0)]);
      this.critical.set(sec.spanId, list);
    }
    this.collapsed = new Uint8Array(n);
    this.matches = new Set();
    const wanted = new URLSearchParams(location.search).get("span");
    this.selected = wanted ? Math.max(0, spans.c.spanId.indexOf(wanted)) : 0;
    this.computeVisible();
  }

  computeVisible() {
    const out = [];
    const n = this.spans.length;
    for (let i = 0; i < n; i++) {
      out.push(i);
      if (this.collapsed[i]) i = this.end[i] - 1;
    }
    this.visible = out;
  }

  mount() {
    const t = this.trace;
    const spans = this.spans;
    const root = Math.max(0, spans.c.spanId.indexOf(t.mainRootSpanId));
    const services = new Set(spans.c.service);
    let errors = 0;
    for (let i = 0; i < spans.length; i++) if (spans.error(i)) errors++;
    this.search = el("input", { id: "trace-search", placeholder: "Find in trace (name, service, attribute)", size: 36, spellcheck: "false" });
    this.searchCount = el("span", { class: "muted", id: "trace-search-count" });
    this.scroller = el("div", { class: "waterfall", id: "waterfall", tabindex: "0" });
    this.spacer = el("div", { class: "spacer", style: { height: `${this.visible.length * ROW_H}px` } });
    this.scroller.append(this.spacer);
    this.details = el("div", { class: "details", id: "span-details" });
    this.minimap = el("canvas", { class: "minimap", id: "minimap", height: 40 });
    const head = el("div", { class: "trace-head" },
      el("h1", {}, `${spans.service(root)}: ${spans.name(root)}`),
      el("span", { class: "mono muted" }, t.traceId),
      el("span", {}, `${fmtTime(t.startTimeUnixNano)} · ${fmtDuration(t.durationNs)} · ${t.spanCount} spans · ${services.size} services · `,
        errors ? el("span", { class: "badge-error" }, `${errors} errors`) : "no errors"),
    );
    const warnings = (t.warnings || []).length
      ? el("details", { class: "warnings", id: "trace-warnings" },
          el("summary", {}, `${t.warnings.length} warnings (clock skew, orphans)`),
          el("ul", {}, t.warnings.map((w) => el("li", {}, w))))
      : null;
    const toolbar = el("div", { class: "toolbar" },
      this.search, this.searchCount,
      el("button", { id: "collapse-all", onclick: () => this.setAll(true) }, "Collapse all"),
      el("button", { id: "expand-all", onclick: () => this.setAll(false) }, "Expand all"),
      el("span", { class: "muted" }, "↑/↓ move · ←/→ collapse/expand · / open by id"),
    );
    const ruler = el("div", { class: "ruler", id: "ruler", style: { "margin-left": "340px" } },
      ...[0, 0.25, 0.5, 0.75, 1].map((f) => el("span", { style: { left: `${f * 100}%` } }, fmtDuration(f * this.total))));
    this.main.replaceChildren(
      ...[head, warnings].filter(Boolean),
      el("div", { class: "trace-layout" },
        el("div", {}, toolbar, this.minimap, ruler, this.scroller),
        el("div", {}, this.details, this.breakdown()),
      ),
    );
    this.scroller.addEventListener("scroll", () => this.draw());
    window.addEventListener("resize", () => { this.draw(); this.drawMinimap(); });
    this.scroller.addEventListener("keydown", (e) => this.key(e));
    this.search.addEventListener("input", () => this.find());
    this.search.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); this.nextMatch(); } });
    this.minimap.addEventListener("click", (e) => {
      const f = e.offsetY / this.minimap.clientHeight;
      const i = Math.floor(f * this.spans.length);
      this.reveal(i);
      this.scrollTo(i);
    });
    this.draw();
    this.drawMinimap();
    this.select(this.selected, false);
  }

  setAll(collapse) {
    const spans = this.spans;
    for (let i = 0; i < spans.length; i++) this.collapsed[i] = collapse && spans.children[i] > 0 && i !== 0 ? 1 : 0;
    this.refresh();
  }

  refresh() {
    this.computeVisible();
    this.spacer.style.height = `${this.visible.length * ROW_H}px`;
    this.draw();
  }

  toggle(i) {
    if (!this.spans.children[i]) return;
    this.collapsed[i] ^= 1;
    this.refresh();
  }

  draw() {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(this.visible.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const rows = [];
    for (let v = first; v < last; v++) rows.push(this.row(this.visible[v], v));
    this.spacer.replaceChildren(...rows);
    this.drawViewport();
  }

  row(i, v) {
    const spans = this.spans;
    const id = spans.id(i);
    const service = spans.service(i);
    const duration = spans.duration(i);
    const skew = spans.skew(i);
    const pct = (x) => `${Math.max(0, Math.min(100, (x / this.total) * 100))}%`;
    const left = this.offset[i];
    const bar = el("div", {
      class: `bar${spans.error(i) ? " error" : ""}`,
      style: { left: pct(left), width: pct(duration), background: serviceColor(service) },
    });
    const area = el("div", { class: "bar-area" }, bar);
    for (const [a, b] of this.critical.get(id) || []) {
      area.append(el("div", { class: "cp", title: "critical path", style: { left: pct(a), width: pct(b - a) } }));
    }
    for (const [time, name] of spans.events(i)) {
      const at = spans.offset(time) + skew;
      area.append(el("div", { class: "evt", title: spans.str[name], style: { left: pct(at) } }));
    }
    const endFrac = (left + duration) / this.total;
    area.append(el("span", { class: "dur", style: endFrac < 0.85 ? { left: `calc(${pct(left + duration)} + 4px)` } : { right: `calc(${(1 - left / this.total) * 100}% + 4px)` } }, fmtDuration(duration)));
    const hasChildren = spans.children[i] > 0;
    const label = el("div", { class: "label", style: { "padding-left": `${spans.depth(i) * 12}px` } },
      el("span", { class: "toggle", onclick: (e) => { e.stopPropagation(); this.toggle(i); } }, hasChildren ? (this.collapsed[i] ? "▸" : "▾") : ""),
      el("span", { class: "svc", style: { color: serviceColor(service) } }, service),
      el("span", { class: "op" }, spans.name(i)),
      spans.orphan(i) ? el("span", { class: "marker", title: "parent not in the trace" }, "orphan") : null,
      skew ? el("span", { class: "marker", title: `shifted ${fmtDuration(skew)} for clock skew` }, "skew") : null,
      this.collapsed[i] ? el("span", { class: "marker" }, `+${this.end[i] - i - 1}`) : null,
    );
    const classes = ["row"];
    if (i === this.selected) classes.push("selected");
    if (this.matches.has(i)) classes.push("match");
    if (this.critical.has(id)) classes.push("on-critical-path");
    return el("div", {
      class: classes.join(" "), "data-span": id, "data-index": i,
      style: { top: `${v * ROW_H}px` },
      onclick: () => this.select(i, true),
    }, label, area);
  }

  drawMinimap() {
    const c = this.minimap;
    const w = (c.width = c.clientWidth || 600);
    const h = c.height;
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const spans = this.spans;
    const step = Math.max(1, Math.floor(spans.length / 4000));
    for (let i = 0; i < spans.length; i += step) {
      ctx.fillStyle = spans.error(i) ? "#c8322d" : serviceColor(spans.service(i));
      const x = (this.offset[i] / this.total) * w;
      const y = (i / spans.length) * h;
      ctx.fillRect(x, y, Math.max(1, (spans.duration(i) / this.total) * w), Math.max(1, h / spans.length));
    }
  }

  drawViewport() {
    // The rows in view, as a highlight over the minimap.
    if (!this.viewport) {
      this.viewport = el("div", { style: { position: "absolute", pointerEvents: "none", border: "1px solid var(--accent)", left: "0", right: "0" } });
      this.minimap.parentElement.style.position = "relative";
      this.minimap.parentElement.append(this.viewport);
    }
    const n = this.spans.length;
    const first = this.visible[Math.floor(this.scroller.scrollTop / ROW_H)] || 0;
    const count = Math.ceil((this.scroller.clientHeight || 600) / ROW_H);
    const h = this.minimap.clientHeight;
    const top = Math.min(1, first / n) * h;
    this.viewport.style.top = `${this.minimap.offsetTop + top}px`;
    this.viewport.style.height = `${Math.max(2, Math.min(h - top, (count / n) * h))}px`;
  }

  scrollTo(i) {
    const v = this.visible.indexOf(i);
    if (v < 0) return;
    const top = v * ROW_H;
    const { scrollTop, clientHeight } = this.scroller;
    if (top < scrollTop || top + ROW_H > scrollTop + clientHeight) this.scroller.scrollTop = Math.max(0, top - clientHeight / 3);
    this.draw();
  }

  /** Expands the ancestors of span `i`. */
  reveal(i) {
    let changed = false;
    for (let p = this.parent[i]; p >= 0; p = this.parent[p]) {
      if (this.collapsed[p]) { this.collapsed[p] = 0; changed = true; }
    }
    if (changed) this.refresh();
  }

  select(i, updateUrl) {
    this.selected = i;
    const s = this.spans.span(i);
    if (updateUrl) history.replaceState(null, "", `/trace/${this.trace.traceId}?span=${s.spanId}`);
    this.draw();
    this.details.replaceChildren(...this.describe(s, i));
  }

  describe(s, i) {
    const kv = (obj) => el("div", { class: "kv" }, ...Object.entries(obj).flatMap(([k, v]) =>
      [el("div", {}, k), el("div", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v))]));
    const parent = this.parent[i] >= 0 ? { serviceName: this.spans.service(this.parent[i]), name: this.spans.name(this.parent[i]) } : null;
    return [
      el("h2", {}, el("span", { style: { color: serviceColor(s.serviceName) } }, s.serviceName), " ", s.name),
      kv({
        "span id": s.spanId,
        parent: parent ? `${parent.serviceName}: ${parent.name}` : s.parentSpanId ? `${s.parentSpanId} (not in trace)` : "none (root)",
        kind: s.kind,
        status: s.status.message ? `${s.status.code}: ${s.status.message}` : s.status.code,
        start: fmtTime(s.startTimeUnixNano),
        duration: fmtDuration(s.durationNs),
        "self time": fmtDuration(s.selfTimeNs),
        "on critical path": fmtDuration(s.criticalPathNs),
        ...(s.clockSkewNs ? { "clock skew shift": fmtDuration(s.clockSkewNs) } : {}),
        scope: [s.scope.name, s.scope.version].filter(Boolean).join(" ") || "–",
      }),
      el("h3", {}, "Attributes"),
      Object.keys(s.attributes).length ? kv(s.attributes) : el("div", { class: "muted" }, "none"),
      el("h3", {}, "Resource"),
      kv(s.resource.attributes),
      el("h3", {}, `Events (${s.events.length})`),
      ...s.events.map((e) => el("div", {}, el("b", {}, e.name), " at ",
        fmtDuration(Number(BigInt(e.timeUnixNano) - BigInt(s.startTimeUnixNano))),
        Object.keys(e.attributes).length ? kv(e.attributes) : null)),
      el("h3", {}, `Links (${s.links.length})`),
      ...s.links.map((l) => el("div", {}, el("a", { href: `/trace/${l.traceId}?span=${l.spanId}` }, `${l.traceId} / ${l.spanId}`))),
    ];
  }

  breakdown() {
    const b = this.trace.breakdown;
    const table = (title, rows, name) => el("div", {},
      el("h3", {}, title),
      el("table", { class: "grid breakdown" },
        el("thead", {}, el("tr", {}, el("th", {}, name), ...["Total", "Self", "Critical", "Spans", "Errors"].map((h) => el("th", { class: "num" }, h)))),
        el("tbody", {}, rows.map((r) => el("tr", {},
          el("td", {}, r.operation ? `${r.service}: ${r.operation}` : el("span", { class: "svc", style: { color: serviceColor(r.service) } }, r.service)),
          el("td", { class: "num" }, fmtDuration(r.totalNs)),
          el("td", { class: "num" }, fmtDuration(r.selfTimeNs)),
          el("td", { class: "num" }, fmtDuration(r.criticalPathNs)),
          el("td", { class: "num" }, r.spanCount),
          el("td", { class: "num" }, r.errorCount))))));
    return el("div", { class: "details", id: "breakdown", style: { marginTop: "12px" } },
      el("h2", {}, "Where the time went"),
      table("Services", b.services, "Service"),
      table("Operations", b.operations.slice(0, 50), "Operation"));
  }

  find() {
    const q = this.search.value.trim().toLowerCase();
    this.matches = new Set();
    if (q) {
      // What a span is found by, made at the first search.
      const spans = this.spans;
      this.hay ??= Array.from({ length: spans.length }, (_, i) =>
        `${spans.service(i)} ${spans.name(i)} ${spans.id(i)} ${JSON.stringify(spans.attributes(spans.c.attributes[i]))}`.toLowerCase());
      this.hay.forEach((hay, i) => { if (hay.includes(q)) this.matches.add(i); });
    }
    this.searchCount.textContent = q ? `${this.matches.size} matches` : "";
    this.draw();
  }

  nextMatch() {
    if (!this.matches.size) return;
    const sorted = [...this.matches].sort((a, b) => a - b);
    const next = sorted.find((i) => i > this.selected) ?? sorted[0];
    this.reveal(next);
    this.select(next, true);
    this.scrollTo(next);
  }

  key(e) {
    const v = this.visible.indexOf(this.selected);
    const move = (to) => { e.preventDefault(); const i = this.visible[Math.max(0, Math.min(this.visible.length - 1, to))]; this.select(i, true); this.scrollTo(i); };
    if (e.key === "ArrowDown" || e.key === "j") move(v + 1);
    else if (e.key === "ArrowUp" || e.key === "k") move(v - 1);
    else if (e.key === "ArrowLeft" && !this.collapsed[this.selected]) { e.preventDefault(); this.toggle(this.selected); }
    else if (e.key === "ArrowRight" && this.collapsed[this.selected]) { e.preventDefault(); this.toggle(this.selected); }
  }
}
