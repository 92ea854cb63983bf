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

// Live feed: the overview's feed fragment reloads (through htmx) whenever the
// gateway publishes an event on /ws/v1/events; the server renders the rows.
// If the socket cannot open, the feed falls back to polling (hx-trigger).
function setupLiveFeed() {
  const feed = document.getElementById("live-feed");
  if (!feed || !feed.dataset.ws || !window.WebSocket) return;
  const state = document.getElementById("live-state");
  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${feed.dataset.ws}`);
    socket.addEventListener("open", () => {
      delay = 1000;
      feed.dataset.live = "ws";
      if (state) state.textContent = "Live: connected.";
    });
    socket.addEventListener("message", () => htmx.trigger(feed, "ep-event"));
    socket.addEventListener("close", () => {
      feed.dataset.live = "polling";
      if (state) state.textContent = "Live updates paused; refreshing every few seconds.";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  setupPlayground();
  setupLiveFeed();
});
