// Iotistic dashboard: vanilla JS, SVG charts, no external code. Talks only to its own server.
"use strict";

const METRICS = [
  ["temperature", "°C"], ["humidity", "%"], ["pressure", "hPa"], ["gas_resistance", "Ω"],
];
const state = { device: null, range: 900, timer: null };
const refreshSeconds = Number(document.body.dataset.refreshSeconds) || 10;
// The only credential the page holds: the short-lived access token from the billing login, kept in
// sessionStorage (gone with the tab), never a password or an API key.
const TOKEN_KEY = "iotistic.accessToken";
const EXPIRY_KEY = "iotistic.accessTokenExpires";

function token() {
  const expires = Number(sessionStorage.getItem(EXPIRY_KEY) || 0);
  if (Date.now() >= expires) return null;
  return sessionStorage.getItem(TOKEN_KEY);
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

class SignedOut extends Error {}

async function getJSON(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json", ...authHeaders() } });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) {
    signOut(token() ? `Please sign in again: ${body.error || "your session ended"}` : "");
    throw new SignedOut(body.error || "signed out");
  }
  if (!resp.ok) throw Object.assign(new Error(body.error || resp.statusText), { status: resp.status });
  return body;
}

function showSignIn(message) {
  document.getElementById("content").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("upgrade").hidden = true;
  document.getElementById("signin").hidden = false;
  const error = document.getElementById("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  document.body.dataset.signedIn = "false";
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EXPIRY_KEY);
  clearInterval(state.timer);
  state.timer = null;
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const submit = document.getElementById("signin-submit");
  submit.disabled = true;
  try {
    const resp = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        email: document.getElementById("email").value,
        password: document.getElementById("password").value,
      }),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok || !body.access_token) throw new Error(body.error || resp.statusText);
    sessionStorage.setItem(TOKEN_KEY, body.access_token);
    sessionStorage.setItem(EXPIRY_KEY, String(Date.now() + (Number(body.expires_in) || 900) * 1000));
    document.getElementById("password").value = "";
    start();
  } catch (e) {
    showSignIn(e.message);
  } finally {
    submit.disabled = false;
  }
}

function start() {
  if (!token()) {
    showSignIn("");
    return;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("content").hidden = false;
  document.getElementById("signout").hidden = false;
  document.body.dataset.signedIn = "true";
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, refreshSeconds * 1000);
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== "") node.textContent = text;
  return node;
}

function fmt(value, unit) {
  if (value === null || value === undefined) return "–";
  const digits = Math.abs(value) >= 1000 ? 0 : 1;
  return `${Number(value).toLocaleString(undefined, { maximumFractionDigits: digits })} ${unit}`;
}

function emptyRow(body, cols, text) {
  const tr = el("tr");
  tr.append(el("td", { colspan: cols, class: "muted" }, text));
  body.replaceChildren(tr);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

async function loadLicense() {
  const lic = await getJSON("/api/license");
  document.getElementById("plan").textContent = lic.plan ? `${lic.plan}${lic.trial ? " trial" : ""}` : lic.state;
  const expiry = document.getElementById("license-expiry");
  const trial = document.getElementById("trial-days");
  const banner = document.getElementById("banner");
  expiry.textContent = lic.expires_at ? `License expires ${new Date(lic.expires_at).toLocaleDateString()}` : "";
  trial.textContent = lic.trial ? `${Math.ceil(lic.days_left)} trial days left` : "";
  banner.hidden = lic.state === "valid";
  if (lic.state === "expired") {
    banner.textContent = "Your license has expired: new readings are not being stored. Upgrade to resume ingestion.";
  } else if (lic.state !== "valid") {
    banner.textContent = `License ${lic.state}: ${lic.error || ""}`;
  }
  const upgrade = document.getElementById("upgrade");
  upgrade.hidden = document.body.dataset.billing !== "yes" || (lic.plan === "enterprise" && !lic.trial);
  return lic;
}

async function loadDevices() {
  const [{ devices }, { readings }] = await Promise.all([getJSON("/api/devices"), getJSON("/api/readings/latest")]);
  const latest = Object.fromEntries(readings.map((r) => [r.device_id, r]));
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  if (!devices.length) {
    emptyRow(body, 6, "No devices registered yet.");
    return;
  }
  if (!state.device || !devices.some((d) => d.id === state.device)) {
    // Start with the device that reported most recently.
    const seen = devices.filter((d) => d.last_seen).sort((a, b) => b.last_seen.localeCompare(a.last_seen));
    state.device = (seen[0] || devices[0]).id;
  }
  for (const d of devices) {
    const r = latest[d.id] || {};
    const tr = el("tr", { class: `selectable${d.id === state.device ? " selected" : ""}`, "data-device": d.id });
    tr.append(el("td", {}, d.name ? `${d.id} (${d.name})` : d.id), el("td", {}, when(d.last_seen)));
    for (const [m, unit] of METRICS) tr.append(el("td", { "data-metric": m }, fmt(r[m], unit)));
    tr.addEventListener("click", () => { state.device = d.id; refresh(); });
    body.append(tr);
  }
}

function drawChart(figure, points, metric, unit) {
  figure.querySelector("svg")?.remove();
  const W = 400, H = 160, L = 48, B = 18, T = 8, R = 8;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const data = points.filter((p) => p[metric] !== null && p[metric] !== undefined)
    .map((p) => [new Date(p.timestamp).getTime(), Number(p[metric])]);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  add("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
  add("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B });
  if (!data.length) {
    add("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data in this range");
  } else {
    const xs = data.map((d) => d[0]), ys = data.map((d) => d[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
    const path = data.map((d, i) => `${i ? "L" : "M"}${sx(d[0]).toFixed(1)},${sy(d[1]).toFixed(1)}`).join(" ");
    add("path", { class: "line", d: path, "data-points": data.length });
    add("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(y1, "").trim());
    add("text", { x: L - 4, y: H - B, "text-anchor": "end" }, fmt(y0, "").trim());
    add("text", { x: L, y: H - 4 }, new Date(x0).toLocaleTimeString());
    add("text", { x: W - R, y: H - 4, "text-anchor": "end" }, new Date(x1).toLocaleTimeString());
  }
  figure.append(svg);
}

async function loadCharts() {
  document.getElementById("chart-device").textContent = state.device ? `· ${state.device}` : "";
  const note = document.getElementById("chart-note");
  const figures = document.querySelectorAll(".chart");
  if (!state.device) {
    figures.forEach((f) => drawChart(f, [], f.dataset.metric, f.dataset.unit));
    return;
  }
  const to = new Date();
  const from = new Date(to.getTime() - state.range * 1000);
  const q = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&max_points=300`;
  try {
    const res = await getJSON(`/api/devices/${encodeURIComponent(state.device)}/readings?${q}`);
    note.textContent = res.bucket_seconds ? `Averages over ${res.bucket_seconds} s buckets` : `${res.readings.length} readings`;
    figures.forEach((f) => drawChart(f, res.readings, f.dataset.metric, f.dataset.unit));
  } catch (e) {
    if (e instanceof SignedOut) throw e;
    note.textContent = e.message;
  }
}

async function loadAlerts() {
  const body = document.querySelector("#alerts tbody");
  try {
    const { alerts } = await getJSON("/api/alerts?limit=20");
    body.replaceChildren();
    if (!alerts.length) emptyRow(body, 4, "No alerts.");
    const units = Object.fromEntries(METRICS);
    for (const a of alerts) {
      const tr = el("tr");
      tr.append(el("td", {}, when(a.reading_time)), el("td", {}, a.device_id),
        el("td", {}, `${a.rule_name} (${a.metric} ${a.operator} ${a.threshold})`), el("td", {}, fmt(a.value, units[a.metric])));
      body.append(tr);
    }
  } catch (e) {
    if (e instanceof SignedOut) throw e;
    emptyRow(body, 4, e.status === 403 ? `Alerts: ${e.message}` : e.message);
  }
}

async function refresh() {
  try {
    await loadLicense();
    await loadDevices();
    await Promise.all([loadCharts(), loadAlerts()]);
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof SignedOut) return;
    const banner = document.getElementById("banner");
    banner.hidden = false;
    banner.textContent = `Could not load data: ${e.message}`;
  }
}

async function upgrade() {
  const button = document.getElementById("upgrade");
  button.disabled = true;
  try {
    const resp = await fetch("/upgrade", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ plan: "professional" }),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok || !body.checkoutUrl) throw new Error(body.error || resp.statusText);
    window.location.assign(body.checkoutUrl);
  } catch (e) {
    const banner = document.getElementById("banner");
    banner.hidden = false;
    banner.textContent = e.message;
    button.disabled = false;
  }
}

document.getElementById("upgrade").addEventListener("click", upgrade);
document.getElementById("signin-form").addEventListener("submit", signIn);
document.getElementById("signout").addEventListener("click", () => signOut(""));
document.querySelectorAll("#ranges button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("#ranges button").forEach((x) => x.classList.toggle("active", x === b));
  state.range = Number(b.dataset.range);
  loadCharts();
}));
start();
