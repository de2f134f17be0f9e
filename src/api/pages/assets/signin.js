// The sign-in form: exchange the API key for a session cookie.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("signin");
  const err = document.getElementById("signin-error");
  const key = document.getElementById("key");
  key.focus();
  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    err.hidden = true;
    let res;
    try {
      res = await window.spotter.call("POST", "/api/v1/session", { key: key.value.trim() });
    } catch (e) {
      res = { ok: false, status: 0, body: { detail: "the device did not answer" } };
    }
    if (res.ok) {
      window.location.assign("/live");
      return;
    }
    err.textContent = res.status === 429
      ? "Too many attempts: " + window.spotter.problem(res)
      : "Sign-in failed: " + window.spotter.problem(res);
    err.hidden = false;
    key.select();
  });
});
