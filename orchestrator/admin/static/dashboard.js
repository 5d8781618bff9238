// The orchestrator's dashboard: the agents from GET /api/agents, kept live by the event
// stream (GET /api/events, read with fetch so the token goes in a header, never in a
// URL), with wake and sleep buttons. No framework, no CDN: this file and the CSS are
// all there is, shipped in the package.
"use strict";

const TOKEN_KEY = "orchestrator.admin-token";
const RECENT_EVENTS = 100;      // in the events panel
const EVENTS_PER_AGENT = 3;     // in an agent's row
const RECONNECT_MS = 2000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  agents: new Map(),      // name -> {view, row, events: []}
  clockOffset: 0,         // server time - local time, seconds
  lastEventId: null,
  refreshing: new Map(),  // name -> timer
  following: false,
};

const $ = (id) => document.getElementById(id);

// The API ----------------------------------------------------------------------------

class Unauthorized extends Error {}

function headers(extra) {
  const h = Object.assign({"Accept": "application/json"}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(method, path) {
  const response = await fetch(path, {method, headers: headers(), cache: "no-store"});
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json();
  if (!response.ok && response.status !== 202) {
    throw new Error(body.error || ("HTTP " + response.status));
  }
  return body;
}

// Signing in -------------------------------------------------------------------------

function askForToken(message) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
  setConnection("connecting", "signed out");
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start(true);
});

async function start(afterLogin) {
  try {
    const listing = await api("GET", "/api/agents");
    $("login").hidden = true;
    $("board").hidden = false;
    load(listing);
    if (!state.following) follow();
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      askForToken(afterLogin ? "The token was refused." : "");
    } else {
      setConnection("reconnecting", "cannot reach the orchestrator");
      setTimeout(() => start(afterLogin), RECONNECT_MS);
    }
  }
}

// The agents -------------------------------------------------------------------------

function load(listing) {
  state.clockOffset = listing.time - Date.now() / 1000;
  state.lastEventId = listing.last_event_id;
  const seen = new Set();
  for (const view of listing.agents) {
    seen.add(view.agent);
    update(view);
  }
  for (const [name, entry] of state.agents) {
    if (!seen.has(name)) { entry.row.remove(); state.agents.delete(name); }
  }
  applyFilter();
  summarize();
}

function entryFor(name) {
  let entry = state.agents.get(name);
  if (entry) return entry;
  const row = $("row-template").content.firstElementChild.cloneNode(true);
  row.dataset.agent = name;
  row.querySelector(".agent-name").textContent = name;
  row.querySelector(".do-wake").addEventListener("click", () => act(name, "wake"));
  row.querySelector(".do-sleep").addEventListener("click", () => act(name, "sleep"));
  entry = {view: null, row, events: []};
  state.agents.set(name, entry);
  // Keep the rows in name order, whatever order they arrive in.
  const rows = $("rows");
  const after = [...rows.children].find((other) => other.dataset.agent > name);
  rows.insertBefore(row, after || null);
  return entry;
}

function update(view) {
  const entry = entryFor(view.agent);
  const changed = entry.view && entry.view.status !== view.status;
  entry.view = view;
  render(entry);
  if (changed) flash(entry.row);
}

function render(entry) {
  const view = entry.view, row = entry.row;
  row.dataset.state = view.status;
  row.querySelector(".policy").textContent =
    view.policy.replace("_", "-") + (view.origin === "registered" ? ", registered" : "");
  const badge = row.querySelector(".badge");
  badge.textContent = view.status;
  badge.dataset.state = view.status;
  let detail = "";
  if (view.status === "starting" && view.phase) detail = view.phase;
  if (view.status === "starting" && view.estimated_wait != null) {
    detail += (detail ? ", " : "") + "about " + seconds(view.estimated_wait) + " left";
  }
  if (view.reason) detail = view.reason;
  row.querySelector(".detail").textContent = detail;
  renderCountdown(entry);
  const awake = row.querySelector(".awake");
  awake.replaceChildren();
  if (view.awake && view.awake.reasons.length) {
    const list = document.createElement("ul");
    for (const reason of view.awake.reasons) {
      const item = document.createElement("li");
      item.textContent = reason;
      list.append(item);
    }
    awake.append(list);
  } else {
    awake.textContent = view.awake ? "nothing: it will sleep" : "-";
  }
  const wake = view.last_wake;
  row.querySelector(".wake").textContent = wake
    ? seconds(wake.seconds) + (wake.succeeded ? "" : " (failed)") + ": " +
      Object.entries(wake.phases).map(([phase, s]) => phase + " " + seconds(s)).join(", ")
    : "-";
  row.querySelector(".recent").textContent =
    entry.events.map((event) => event.event.replace("agent.", "")).join(", ") || "-";
  const onDemand = view.policy === "on_demand";
  row.querySelector(".do-wake").disabled = !onDemand || view.status === "ready" || view.status === "starting";
  row.querySelector(".do-sleep").disabled = !onDemand || view.status === "sleeping";
}

function renderCountdown(entry) {
  const view = entry.view;
  const cell = entry.row.querySelector(".countdown");
  if (view.sleeps_at == null) {
    cell.textContent = view.status === "sleeping" ? "asleep" : "-";
    return;
  }
  const now = Date.now() / 1000 + state.clockOffset;
  cell.textContent = seconds(Math.max(view.sleeps_at - now, 0));
}

function seconds(value) {
  if (value < 10) return value.toFixed(1) + "s";
  const whole = Math.round(value);
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + s + "s";
  return s + "s";
}

function flash(row) {
  row.classList.remove("flash");
  void row.offsetWidth;  // restart the animation
  row.classList.add("flash");
}

function summarize() {
  const counts = {};
  for (const entry of state.agents.values()) {
    counts[entry.view.status] = (counts[entry.view.status] || 0) + 1;
  }
  $("summary").textContent = state.agents.size + (state.agents.size === 1 ? " agent: " : " agents: ") +
    ["ready", "starting", "degraded", "sleeping"].filter((s) => counts[s])
      .map((s) => counts[s] + " " + s).join(", ");
}

function applyFilter() {
  const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const [name, entry] of state.agents) {
    const text = (name + " " + entry.view.status + " " + entry.view.policy).toLowerCase();
    const visible = words.every((word) => text.includes(word));
    entry.row.hidden = !visible;
    if (visible) shown += 1;
  }
  $("shown").textContent = words.length ? shown + " shown" : "";
}

$("filter").addEventListener("input", applyFilter);

// Acting -----------------------------------------------------------------------------

async function act(name, action) {
  const entry = state.agents.get(name);
  entry.row.querySelectorAll("button").forEach((button) => { button.disabled = true; });
  try {
    update(await api("POST", "/api/agents/" + encodeURIComponent(name) + "/" + action));
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken("The token was refused.");
    addEvent({event: "dashboard.error", agent: name, time: Date.now() / 1000,
              error: action + " failed: " + error.message});
    render(entry);
  }
}

function refreshSoon(name) {
  // Several events about one agent in a burst: one look at it.
  if (state.refreshing.has(name)) return;
  state.refreshing.set(name, setTimeout(async () => {
    state.refreshing.delete(name);
    try {
      update(await api("GET", "/api/agents/" + encodeURIComponent(name)));
      summarize();
    } catch (error) {
      // Gone with a reload (the next listing drops it), or the token changed (the
      // next action asks for it).
    }
  }, 100));
}

// The event stream -------------------------------------------------------------------

function setConnection(which, text) {
  const badge = $("connection");
  badge.dataset.state = which;
  badge.textContent = text || which;
}

async function follow() {
  state.following = true;
  try {
    const extra = {"Accept": "text/event-stream"};
    if (state.lastEventId) extra["Last-Event-ID"] = state.lastEventId;
    const response = await fetch("/api/events", {headers: headers(extra), cache: "no-store"});
    if (response.status === 401) { state.following = false; return askForToken("The token was refused."); }
    if (!response.ok) throw new Error("HTTP " + response.status);
    setConnection("live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        message(block);
      }
    }
  } catch (error) {
    // Dropped: go on below.
  }
  setConnection("reconnecting");
  setTimeout(follow, RECONNECT_MS);
}

function message(block) {
  let id = null, name = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "id") id = value;
    else if (field === "event") name = value;
  }
  if (!data.length) return;
  let payload;
  try { payload = JSON.parse(data.join("\n")); } catch (error) { return; }
  if (name === "gap") {
    // Some events were missed: read everything again.
    api("GET", "/api/agents").then(load).catch(() => {});
    return;
  }
  if (name) return;
  if (id) state.lastEventId = id;
  event(payload);
}

function event(payload) {
  addEvent(payload);
  const name = payload.agent;
  if (!name) return;
  const entry = state.agents.get(name);
  if (!entry) {
    // A new agent (a reload): read the whole list again.
    api("GET", "/api/agents").then(load).catch(() => {});
    return;
  }
  entry.events = [payload, ...entry.events].slice(0, EVENTS_PER_AGENT);
  if (payload.state && payload.state !== entry.view.status) {
    // Shown at once from the event; the full view follows.
    entry.view = Object.assign({}, entry.view, {status: payload.state, phase: null,
                                                reason: payload.reason || null});
    render(entry);
    flash(entry.row);
    summarize();
  } else {
    render(entry);
  }
  refreshSoon(name);
}

function addEvent(payload) {
  const list = $("events");
  const item = document.createElement("li");
  const when = new Date((payload.time || Date.now() / 1000) * 1000).toLocaleTimeString();
  const fields = Object.entries(payload)
    .filter(([key]) => !["event", "agent", "time", "id"].includes(key))
    .map(([key, value]) => key + "=" + (typeof value === "object" ? JSON.stringify(value) : value))
    .join(" ");
  item.textContent = when + "  " + payload.event + "  " + (payload.agent || "-") +
    (fields ? "  " + fields : "");
  list.prepend(item);
  while (list.children.length > RECENT_EVENTS) list.lastElementChild.remove();
}

// Every second: the countdowns (from the server's clock, not the browser's).
setInterval(() => {
  for (const entry of state.agents.values()) {
    if (entry.view && entry.view.sleeps_at != null) renderCountdown(entry);
  }
}, 1000);

start(false);
