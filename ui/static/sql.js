// SQL console: an editor with example queries, Ctrl+Enter to run, results
// with column types, errors inline, CSV download. The query is in the URL.

import { api, el, errorBox, navigate } from "/ui/app.js";

const EXAMPLES = {
  "Spans per service (last hour)": "SELECT service_name, count(*) AS spans, sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors\nFROM spans\nWHERE start_time > now() - INTERVAL '1 hour'\nGROUP BY service_name\nORDER BY spans DESC",
  "p99 latency per operation": "SELECT service_name, name, count(*) AS n,\n  percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p99_ms\nFROM spans\nWHERE kind = 'SERVER'\nGROUP BY service_name, name\nORDER BY p99_ms DESC\nLIMIT 20",
  "Slowest spans with an HTTP route": "SELECT encode(trace_id, 'hex') AS trace, service_name, span_attributes['http.route'] AS route, duration_ns / 1e6 AS ms\nFROM spans\nWHERE span_attributes['http.route'] IS NOT NULL\nORDER BY duration_ns DESC\nLIMIT 20",
  "Error messages": "SELECT service_name, status_message, count(*) AS n\nFROM spans WHERE status_code = 'ERROR'\nGROUP BY 1, 2 ORDER BY n DESC LIMIT 20",
};

export function renderSql(main) {
  const params = new URLSearchParams(location.search);
  const editor = el("textarea", { id: "sql-editor", spellcheck: "false", class: "mono", style: { width: "100%", height: "160px" } });
  editor.value = params.get("q") || Object.values(EXAMPLES)[0];
  const examples = el("select", { id: "sql-examples", onchange: (e) => { if (e.target.value) editor.value = EXAMPLES[e.target.value]; editor.focus(); } },
    el("option", { value: "" }, "Examples…"), ...Object.keys(EXAMPLES).map((k) => el("option", { value: k }, k)));
  const output = el("div", { id: "sql-output" });
  const run = () => navigate(`/sql?q=${encodeURIComponent(editor.value)}`, { replace: !!params.get("q") && params.get("q") === editor.value });
  editor.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); run(); }
  });
  main.append(
    el("div", { class: "toolbar" }, el("h1", { style: { fontSize: "18px", margin: 0 } }, "SQL"), examples,
      el("button", { class: "primary", id: "sql-run", onclick: run }, "Run (Ctrl+Enter)"),
      el("span", { class: "muted" }, "read-only; the table is ", el("code", {}, "spans"), " (see docs/api.md)")),
    editor, output);
  if (params.get("q")) execute(params.get("q"), output);
}

async function execute(sql, output) {
  output.replaceChildren(el("div", { class: "muted" }, "Running…"));
  const began = performance.now();
  let result;
  try {
    result = await api("/api/v1/sql", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql }) });
  } catch (e) {
    output.replaceChildren(errorBox(e));
    return;
  }
  const ms = performance.now() - began;
  const cols = result.columns;
  const numeric = (type) => /^(U?Int|Float|Decimal)/.test(type);
  const text = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const csv = [cols.map((c) => c.name), ...result.rows.map((r) => cols.map((c) => text(r[c.name])))]
    .map((line) => line.map((f) => (/[",\n]/.test(f) ? `"${f.replace(/"/g, '""')}"` : f)).join(",")).join("\n");
  const download = el("a", { id: "sql-csv", download: "tracelake.csv", href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })) }, "Download CSV");
  output.replaceChildren(
    el("div", { class: "muted", style: { margin: "6px 0" } }, `${result.rowCount} rows in ${ms.toFixed(0)} ms · `, download),
    el("table", { class: "grid", id: "sql-results" },
      el("thead", {}, el("tr", {}, cols.map((c) => el("th", { class: numeric(c.type) ? "num" : "" }, c.name, el("div", { class: "muted mono", style: { fontWeight: 400 } }, c.type))))),
      el("tbody", {}, result.rows.map((r) => el("tr", {}, cols.map((c) => el("td", { class: numeric(c.type) ? "mono num" : "mono" }, text(r[c.name]))))))),
  );
}
