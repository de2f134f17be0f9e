// The Live page: per source the latest frame (fetched at most once a
// second, waiting out the server's Retry-After), the current labels and
// boxes drawn over it from the event stream (and the source's zones, from
// the page's data-zones attribute), the focus figure and its peak, and the
// device's rates and readiness from /api/v1/status.
"use strict";
(function () {
  const FRAME_EVERY_MS = 1000;
  const STATUS_EVERY_MS = 2000;
  const sections = Array.from(document.querySelectorAll("section.source"));
  const byName = {};
  sections.forEach(function (s) {
    byName[s.dataset.source] = s;
    try { s.zones = JSON.parse(s.dataset.zones || "[]"); } catch (e) { s.zones = []; }
  });

  function sectionFor(name) {
    if (name && byName[name]) return byName[name];
    return sections.length === 1 ? sections[0] : null;
  }

  // --- Frames ---
  function frameLoop(sec) {
    const img = sec.querySelector(".frame-img");
    const focus = sec.querySelector(".focus");
    const peak = sec.querySelector(".focus-peak");
    let best = null;
    let url = null;
    async function next() {
      let wait = FRAME_EVERY_MS;
      try {
        const r = await fetch("/api/v1/sources/" + encodeURIComponent(sec.dataset.source) + "/frame",
          { credentials: "same-origin", cache: "no-store" });
        if (r.status === 401) { window.location.assign("/"); return; }
        if (r.ok) {
          const blob = await r.blob();
          if (url) URL.revokeObjectURL(url);
          url = URL.createObjectURL(blob);
          img.src = url;
          const f = parseFloat(r.headers.get("x-spotter-focus"));
          if (!isNaN(f)) {
            focus.textContent = f.toFixed(1);
            if (best === null || f > best) best = f;
            peak.textContent = best.toFixed(1);
          }
        } else {
          const ra = parseInt(r.headers.get("retry-after") || "", 10);
          if (!isNaN(ra)) wait = Math.max(wait, ra * 1000);
        }
      } catch (e) {
        wait = 3000;
      }
      setTimeout(next, wait);
    }
    img.addEventListener("load", function () {
      const c = sec.querySelector(".overlay");
      if (img.naturalWidth) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
      draw(sec);
    });
    next();
  }

  // --- Results (SSE) ---
  function draw(sec) {
    const r = sec.lastResult;
    const c = sec.querySelector(".overlay");
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    drawZones(sec, ctx, c);
    if (!r || !r.detections) return;
    const w = r.image_width || c.width, h = r.image_height || c.height;
    ctx.lineWidth = Math.max(2, c.width / 200);
    ctx.font = Math.max(12, Math.round(c.width / 40)) + "px system-ui, sans-serif";
    r.detections.forEach(function (d) {
      // Boxes are in the source image's pixels; the canvas has the frame's.
      const sx = c.width / w, sy = c.height / h;
      const x = d.x * sx, y = d.y * sy, bw = d.width * sx, bh = d.height * sy;
      ctx.strokeStyle = "#f5a623";
      ctx.strokeRect(x, y, bw, bh);
      const text = d.label + " " + d.score.toFixed(2);
      const tw = ctx.measureText(text).width + 6;
      ctx.fillStyle = "#f5a623";
      ctx.fillRect(x, Math.max(0, y - 18), tw, 18);
      ctx.fillStyle = "#000";
      ctx.fillText(text, x + 3, Math.max(14, y - 4));
    });
  }

  // Zones are in normalized coordinates (0–1 of the frame).
  function drawZones(sec, ctx, c) {
    ctx.lineWidth = Math.max(2, c.width / 300);
    ctx.font = Math.max(12, Math.round(c.width / 45)) + "px system-ui, sans-serif";
    (sec.zones || []).forEach(function (z) {
      if (!z.polygon || z.polygon.length < 3) return;
      ctx.beginPath();
      z.polygon.forEach(function (p, i) {
        const x = p[0] * c.width, y = p[1] * c.height;
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.closePath();
      ctx.fillStyle = "rgba(74, 144, 226, 0.15)";
      ctx.fill();
      ctx.strokeStyle = "#4a90e2";
      ctx.stroke();
      ctx.fillStyle = "#4a90e2";
      ctx.fillText(z.name, z.polygon[0][0] * c.width + 4, z.polygon[0][1] * c.height + 16);
    });
  }

  function showResult(r) {
    const sec = sectionFor(r.source_name);
    if (!sec) return;
    sec.lastResult = r;
    const parts = [];
    (r.detections || []).slice(0, 5).forEach(function (d) { parts.push(d.label + " " + d.score.toFixed(2)); });
    if (parts.length === 0) {
      (r.classes || []).slice(0, 3).forEach(function (c) { parts.push(c.label + " " + c.score.toFixed(2)); });
    }
    sec.querySelector(".labels").textContent = parts.length ? parts.join(" · ") : "nothing detected";
    draw(sec);
  }

  function events() {
    const es = new EventSource("/api/v1/events");
    es.addEventListener("result", function (ev) {
      try { showResult(JSON.parse(ev.data)); } catch (e) { /* a malformed event is skipped */ }
    });
    es.addEventListener("error", function () {
      if (es.readyState === EventSource.CLOSED) setTimeout(events, 3000);
    });
  }

  // --- Status ---
  let prev = null;
  async function status() {
    try {
      const res = await window.spotter.call("GET", "/api/v1/status");
      if (res.status === 401) { window.location.assign("/"); return; }
      if (res.ok && res.body) {
        const s = res.body, now = Date.now(), c = s.counters || {};
        if (prev) {
          const dt = (now - prev.t) / 1000;
          document.getElementById("fps").textContent =
            ((c.inferences - prev.c.inferences) / dt).toFixed(1) + " inferred, " +
            ((c.frames_captured - prev.c.frames_captured) / dt).toFixed(1) + " captured";
        }
        prev = { t: now, c: c };
        document.getElementById("drops").textContent = String(c.frames_dropped);
        const lr = s.last_result;
        if (lr && lr.latency) {
          document.getElementById("infer").textContent = (lr.latency.invoke_us / 1000).toFixed(1) + " ms";
        }
        const rd = s.readiness || {};
        const checks = rd.checks || {};
        const reasons = [];
        ["source", "model", "store"].forEach(function (k) {
          if (checks[k] && !checks[k].ok) reasons.push(k + ": " + checks[k].detail);
        });
        document.getElementById("readiness").textContent =
          rd.ready ? "Ready" : "Not ready — " + (reasons.join("; ") || "starting");
        (checks.sources || []).forEach(function (sc) {
          const sec = sectionFor(sc.name);
          if (sec) sec.querySelector(".source-state").textContent = (sc.ok ? "up" : "down") + (sc.detail ? " — " + sc.detail : "");
        });
      }
    } catch (e) { /* the next poll tries again */ }
    setTimeout(status, STATUS_EVERY_MS);
  }

  sections.forEach(frameLoop);
  events();
  status();
})();
