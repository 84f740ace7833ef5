// The console's little JavaScript: refresh Live snapshots, and prepend new events as they stream (SSE).
// Every page works without it; this only keeps them current.
(function () {
  "use strict";
  const page = document.body.dataset.page;

  function refreshLive() {
    for (const img of document.querySelectorAll("img.snapshot[data-src]")) {
      const next = new Image();
      next.onload = () => { img.src = next.src; };
      next.src = img.dataset.src + "?t=" + Date.now();
    }
  }

  function text(tag, value) { const el = document.createElement(tag); el.textContent = value == null ? "" : value; return el; }

  function when(t) {  // as pages.py's `when`: below 1e9 s an event's time is a file's media time
    if (t == null) return "-";
    if (t >= 0 && t < 1e9) {
      const d = Math.round(t * 10), pad = (n) => String(n).padStart(2, "0");
      return Math.floor(d / 36000) + ":" + pad(Math.floor(d / 600) % 60) + ":" + pad(Math.floor(d / 10) % 60) + "."
        + (d % 10) + " into the video";
    }
    return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function eventRow(e) {
    const row = document.createElement("tr");
    row.className = "new"; row.dataset.testid = "event"; row.dataset.entry = e.entry_id;
    row.setAttribute("data-testid", "event");
    const face = document.createElement("td");
    if (e.has_crop) {
      const img = document.createElement("img");
      img.className = "thumb"; img.alt = "face"; img.src = "/api/v1/events/" + encodeURIComponent(e.entry_id) + "/crop";
      face.appendChild(img);
    }
    const time = document.createElement("td");
    const link = text("a", when(e.time)); link.href = "/events/" + encodeURIComponent(e.entry_id); time.appendChild(link);
    const who = document.createElement("td");
    if (e.identity) { const a = text("a", e.identity); a.href = "/people/" + encodeURIComponent(e.identity); who.appendChild(a); }
    else if (e.unknown_id) { const a = text("a", e.unknown_id); a.href = "/unknowns/" + encodeURIComponent(e.unknown_id); who.appendChild(a); }
    else { who.appendChild(text("span", e.anon_id || "")); }
    row.append(face, time, text("td", e.type), text("td", e.camera), who,
               text("td", e.similarity == null ? "" : Number(e.similarity).toFixed(3)));
    return row;
  }

  function streamEvents() {
    const table = document.getElementById("events");
    const toggle = document.getElementById("live-updates");
    if (!table || !window.EventSource || new URLSearchParams(location.search).has("before")) return;
    const filters = JSON.parse(table.dataset.filters || "{}");
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
    const source = new EventSource("/api/v1/events/stream?" + query.toString());
    const body = document.getElementById("event-rows");
    const onEvent = (message) => {
      if (toggle && !toggle.checked) return;
      const empty = document.getElementById("no-events");
      if (empty) empty.remove();
      body.prepend(eventRow(JSON.parse(message.data)));
    };
    for (const type of ["identity_confirmed", "track_started", "track_ended", "unknown_merged", "message"]) {
      source.addEventListener(type, onEvent);
    }
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
  }
  if (page === "live") { setInterval(refreshLive, 1000); setTimeout(() => location.reload(), 60000); }
  if (page === "events") streamEvents();
})();
