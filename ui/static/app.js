// tracelake UI: a small router over the views. Every view's state lives in
// its URL, so any view can be shared or reloaded.

import { renderCompare } from "/ui/compare.js";
import { renderMap } from "/ui/map.js";
import { renderSearch } from "/ui/search.js";
import { renderServices } from "/ui/services.js";
import { renderSql } from "/ui/sql.js";
import { renderTrace } from "/ui/trace.js";

const main = document.getElementById("main");

// Signing in (servers with tokens): the token and the chosen tenant live in
// sessionStorage only — gone when the browser session ends, never in a URL —
// and go with every API call as `Authorization: Bearer` and `X-Scope-OrgID`.
const TOKEN = "tracelake.token";
const TENANT = "tracelake.tenant";

/** GET an API path; resolves to JSON or throws an Error with the server's message. */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  // Marks the UI's own calls: a 401 then challenges with Bearer only, so
  // the browser shows no password prompt of its own.
  headers.set("X-Tracelake-UI", "1");
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const tenant = sessionStorage.getItem(TENANT);
  if (tenant) headers.set("X-Scope-OrgID", tenant);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new Error(`cannot reach the server: ${e.message}`);
  }
  if (response.status === 401 && !options.signingIn) {
    signIn(token ? "The token is no longer accepted; sign in again." : "");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const message = (body && (body.error || body.message)) || text || response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/** Creates an element: el("div", {class: "x", onclick: f}, child, "text"). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** A duration in nanoseconds as text: 850ns, 12.3µs, 4.56ms, 1.2s, 3m 5s. */
export function fmtDuration(ns) {
  ns = Number(ns);
  if (!Number.isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a < 1e3) return `${Math.round(ns)}ns`;
  if (a < 1e6) return `${+(ns / 1e3).toPrecision(3)}µs`;
  if (a < 1e9) return `${+(ns / 1e6).toPrecision(3)}ms`;
  if (a < 60e9) return `${+(ns / 1e9).toPrecision(3)}s`;
  const m = Math.floor(ns / 60e9);
  return `${m}m ${Math.round((ns - m * 60e9) / 1e9)}s`;
}

/** A Unix-nanosecond time (string or number) as local date and time. */
export function fmtTime(unixNano) {
  const ms = Number(BigInt(unixNano) / 1000000n);
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

const palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#a0cbe8"];
const colors = new Map();
/** A stable colour per service name. */
export function serviceColor(name) {
  if (!colors.has(name)) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    colors.set(name, palette[h % palette.length]);
  }
  return colors.get(name);
}

export function errorBox(error) {
  return el("div", { class: "error-box", role: "alert" }, error.message || String(error));
}

/** Navigates inside the app without reloading. */
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

/** Who the UI acts as: `/api/v1/whoami`, shown in the header. */
async function whoami() {
  const me = await api("/api/v1/whoami", { signingIn: true });
  const account = document.getElementById("account");
  account.replaceChildren();
  if (!me.auth) return me;
  const tenants = me.tenants || [me.tenant];
  const tenant = tenants.length > 1
    ? el("select", {
        id: "tenant", "aria-label": "Tenant", title: "Tenant",
        onchange: (e) => { sessionStorage.setItem(TENANT, e.target.value); route(); },
      }, tenants.map((t) => el("option", { value: t, selected: t === me.tenant }, t)))
    : el("span", { id: "tenant", title: "Tenant" }, me.tenant);
  account.append(
    el("span", { class: "who", title: `Signed in with token ${me.token}` }, me.token), " · ", tenant,
    el("button", { id: "sign-out", type: "button", onclick: signOut }, "Sign out"),
  );
  return me;
}

/** Shows the sign-in form in place of the view. */
function signIn(message = "") {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(TENANT);
  document.getElementById("account").replaceChildren();
  const input = el("input", {
    id: "token-input", type: "password", name: "token", autocomplete: "off",
    placeholder: "Token", "aria-label": "Token", required: true,
  });
  const error = el("div", { id: "sign-in-error", class: "error-box", role: "alert", hidden: !message }, message);
  const form = el("form", { id: "sign-in", class: "sign-in" },
    el("h2", {}, "Sign in"),
    el("p", {}, "This server needs a token with the query scope."),
    input, el("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN, input.value.trim());
    try {
      await whoami();
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN);
      error.hidden = false;
      error.textContent = e.status === 401 ? "Unknown token." : e.message;
    }
  });
  main.replaceChildren(form);
  input.focus();
}

function signOut() {
  signIn();
}

function route() {
  const path = location.pathname;
  document.querySelectorAll(".top nav a").forEach((a) => {
    a.classList.toggle("active", path.startsWith(a.getAttribute("href")) || (path === "/" && a.dataset.view === "search"));
  });
  main.replaceChildren();
  const trace = path.match(/^\/trace\/([^/]+)$/);
  if (trace) return renderTrace(main, decodeURIComponent(trace[1]));
  if (path === "/" || path === "/search") return renderSearch(main);
  if (path === "/services") return renderServices(main);
  if (path === "/map") return renderMap(main);
  if (path === "/sql") return renderSql(main);
  if (path === "/compare") return renderCompare(main);
  main.append(el("div", { class: "empty" }, `No view at ${path}. `, el("a", { href: "/search" }, "Search traces")));
}

// Internal links navigate without a reload.
document.addEventListener("click", (event) => {
  const a = event.target.closest("a");
  if (!a || a.target || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  const href = a.getAttribute("href");
  if (!href || !href.startsWith("/") || href.startsWith("/api/")) return;
  event.preventDefault();
  navigate(href);
});

// Open a trace by id from anywhere; "/" focuses the box.
const box = document.getElementById("trace-id-box");
document.getElementById("open-trace").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = box.value.trim().toLowerCase();
  if (!/^[0-9a-f]{1,32}$/.test(id)) {
    box.setCustomValidity("a trace id is 1 to 32 hex digits");
    box.reportValidity();
    return;
  }
  box.setCustomValidity("");
  box.value = "";
  navigate(`/trace/${id}`);
});
document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (event.key === "/" && !typing) {
    event.preventDefault();
    box.focus();
  }
});

window.addEventListener("popstate", route);
whoami().then(route, (e) => {
  if (e.status === 401) signIn();
  // The tenant kept from before is no longer the token's.
  else if (e.status === 403) signIn("This token may no longer read the tenant chosen; sign in again.");
  else route();
});
