/*
 * orchestrator client helper: fetch and WebSocket opening that ride out an agent's cold
 * start. Served by the orchestrator at /api/client.js on every agent host; no dependencies.
 *
 *   <script src="/api/client.js"></script>
 *   const response = await orchestrator.fetch("/api/chat", {method: "POST", body: ...});
 *   const socket = await orchestrator.openWebSocket("wss://" + location.host + "/ws");
 *
 * On a 503 whose JSON says "starting" (or "sleeping"), it waits on the long-poll
 * GET /api/health?wait=N until the agent is ready, then retries once more, for up to
 * `timeout` seconds in all (default 120). Anything else is returned as it came.
 */
(function (root) {
  "use strict";

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function healthUrl(base, wait) {
    var url = new URL("/api/health", base || root.location.href);
    url.searchParams.set("wait", String(wait));
    return url.toString();
  }

  // Resolves with the health body once the agent is ready; rejects when it is degraded
  // or the deadline passes.
  async function untilReady(base, deadline) {
    while (Date.now() < deadline) {
      var wait = Math.max(1, Math.min(30, Math.floor((deadline - Date.now()) / 1000)));
      var body;
      try {
        var response = await root.fetch(healthUrl(base, wait), {cache: "no-store"});
        body = await response.json();
      } catch (error) {
        await sleep(1000);
        continue;
      }
      if (body.status === "ready") { return body; }
      if (body.status === "degraded") {
        var failure = new Error("agent " + body.agent + " is degraded: " + (body.reason || "unknown reason"));
        failure.health = body;
        throw failure;
      }
      if (body.status === "sleeping") { return body; }  // caller retries, which wakes it
    }
    throw new Error("agent did not become ready in time");
  }

  async function isStarting(response) {
    if (response.status !== 503) { return false; }
    try {
      var body = await response.clone().json();
      return body && (body.status === "starting" || body.status === "sleeping");
    } catch (error) {
      return false;
    }
  }

  async function coldFetch(input, init, options) {
    var timeout = ((options && options.timeout) || 120) * 1000;
    var deadline = Date.now() + timeout;
    var base = typeof input === "string" ? new URL(input, root.location.href).toString() : input.url;
    for (;;) {
      // A body that is a stream can be sent only once; strings, blobs and forms are resent.
      var response = await root.fetch(input, init);
      if (!(await isStarting(response)) || Date.now() >= deadline) { return response; }
      await untilReady(base, deadline);
    }
  }

  function connect(url, protocols) {
    return new Promise(function (resolve, reject) {
      var socket = new root.WebSocket(url, protocols);
      socket.addEventListener("open", function () { resolve(socket); }, {once: true});
      socket.addEventListener("error", function () { reject(new Error("WebSocket failed")); }, {once: true});
    });
  }

  async function openWebSocket(url, protocols, options) {
    var timeout = ((options && options.timeout) || 120) * 1000;
    var deadline = Date.now() + timeout;
    var httpBase = url.replace(/^ws/, "http");
    for (;;) {
      try {
        return await connect(url, protocols);
      } catch (error) {
        // The browser hides the handshake's 503; ask the health endpoint what is going on,
        // and wake the agent with a plain request if it is asleep.
        if (Date.now() >= deadline) { throw error; }
        var health = await untilReady(httpBase, deadline);
        if (health.status === "sleeping") {
          await root.fetch(httpBase, {cache: "no-store"}).catch(function () {});
          await untilReady(httpBase, deadline);
        }
      }
    }
  }

  root.orchestrator = {fetch: coldFetch, openWebSocket: openWebSocket, untilReady: untilReady};
})(typeof window !== "undefined" ? window : globalThis);
