// The dashboard's own few lines of script; htmx (from django-htmx) does the rest.
"use strict";

// Playground: stream the persona's answer into the page as it arrives.
// Without this script the form still posts and the browser shows the answer.
function setupPlayground() {
  const form = document.getElementById("playground-form");
  if (!form) return;
  const output = document.getElementById("playground-output");
  const meta = document.getElementById("playground-meta");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    output.textContent = "";
    meta.textContent = "Waiting for the first token…";
    try {
      const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
      const provider = response.headers.get("X-EP-Provider");
      meta.textContent = response.ok ? `Streaming from ${provider}/${response.headers.get("X-EP-Model")}…`
                                     : `The request failed (HTTP ${response.status}).`;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        output.textContent += decoder.decode(value, { stream: true });
      }
      if (response.ok) meta.textContent = `Answered by ${provider}/${response.headers.get("X-EP-Model")} (request ${response.headers.get("X-Request-ID")}).`;
    } catch (error) {
      meta.textContent = `The connection failed: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

// Live feed: the overview's feed fragment reloads (through htmx) on "ep-event".
// With a websocket (data-ws), each gateway event fires it; without one (team
// leads, or while the socket is down) a timer fires it every data-poll-seconds.
// The timer lives here rather than in hx-trigger: a trigger filter needs eval,
// which the page's Content-Security-Policy forbids.
function setupLiveFeed() {
  const feed = document.getElementById("live-feed");
  if (!feed) return;
  const state = document.getElementById("live-state");
  const pollMs = 1000 * Number(feed.dataset.pollSeconds || 5);
  let timer = null;
  function say(text) { if (state) state.textContent = text; }
  function poll(text) {
    feed.dataset.live = "polling";
    say(text);
    if (timer === null) timer = setInterval(() => htmx.trigger(feed, "ep-event"), pollMs);
  }
  function stopPolling() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }
  const every = `Refreshing every ${pollMs / 1000} seconds.`;
  if (!feed.dataset.ws || !window.WebSocket) {
    poll(every);
    return;
  }
  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${feed.dataset.ws}`);
    socket.addEventListener("open", () => {
      delay = 1000;
      stopPolling();
      feed.dataset.live = "ws";
      say("Live: connected.");
      htmx.trigger(feed, "ep-event");  // what happened while the socket was down
    });
    socket.addEventListener("message", () => htmx.trigger(feed, "ep-event"));
    socket.addEventListener("close", () => {
      poll(`Live updates paused; ${every.toLowerCase()}`);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
}

// Provider form: the cloud fields (region, project, API version, credential type)
// show only for the kinds that use them (data-kinds); without the script all show.
function setupProviderKindFields() {
  const kind = document.querySelector("select[name=kind]");
  const fields = document.querySelectorAll("[data-kinds]");
  if (!kind || !fields.length) return;
  function show() {
    fields.forEach((input) => {
      const wrapper = input.closest(".field");
      if (wrapper) wrapper.hidden = !input.dataset.kinds.split(" ").includes(kind.value);
    });
  }
  kind.addEventListener("change", show);
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  setupPlayground();
  setupLiveFeed();
  setupProviderKindFields();
});
