// Shared by every page: sign-out, and a fetch helper that reads the API's
// problem details. Requests carry the session cookie (same origin).
"use strict";
window.spotter = {
  // fetch JSON; resolves to {ok, status, body, retryAfter}.
  call: async function (method, path, body) {
    const init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    const text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
    return { ok: r.ok, status: r.status, body: data, retryAfter: r.headers.get("retry-after") };
  },
  // A problem detail as one line of text.
  problem: function (res) {
    const b = res.body || {};
    let msg = b.detail || b.title || ("HTTP " + res.status);
    if (res.retryAfter) msg += " (retry in " + res.retryAfter + " s)";
    return msg;
  },
};
document.addEventListener("DOMContentLoaded", function () {
  const out = document.getElementById("signout");
  if (out) {
    out.addEventListener("click", async function () {
      await window.spotter.call("DELETE", "/api/v1/session");
      window.location.assign("/");
    });
  }
});
