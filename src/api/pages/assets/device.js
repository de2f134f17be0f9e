// The Device page's admin controls (present only for admin keys; the API
// refuses them to any other): create and revoke API keys, activate a model
// version or roll the model back.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  const api = window.spotter;
  const keyMsg = document.getElementById("key-msg");
  const create = document.getElementById("create-key");
  if (create) {
    create.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const name = document.getElementById("new-key-name").value.trim();
      const scope = document.getElementById("new-key-scope").value;
      const res = await api.call("POST", "/api/v1/keys", { name: name, scope: scope });
      if (res.ok) {
        document.getElementById("secret").textContent = res.body.secret;
        document.getElementById("new-secret").hidden = false;
        keyMsg.textContent = "Created key " + name + " (" + scope + "). Reload the page to see it listed.";
      } else {
        keyMsg.textContent = "Not created: " + api.problem(res);
      }
    });
  }
  document.querySelectorAll("button.revoke").forEach(function (b) {
    b.addEventListener("click", async function () {
      if (!window.confirm("Revoke the key " + b.dataset.name + "? Its sessions end at once.")) return;
      const res = await api.call("DELETE", "/api/v1/keys/" + encodeURIComponent(b.dataset.id));
      if (res.ok) {
        window.location.reload();
      } else {
        keyMsg.textContent = "Not revoked: " + api.problem(res);
      }
    });
  });
  const modelMsg = document.getElementById("model-msg");
  document.querySelectorAll("button.activate").forEach(function (b) {
    b.addEventListener("click", async function () {
      if (!window.confirm("Activate the model version " + b.dataset.name + "?")) return;
      modelMsg.textContent = "Activating… (the new model runs once it passes its canary)";
      const res = await api.call("POST", "/api/v1/model/versions/" + encodeURIComponent(b.dataset.sha) + "/activate");
      modelMsg.textContent = res.ok ? "Activated." : "Not activated: " + api.problem(res);
      if (res.ok) window.location.reload();
    });
  });
  const rb = document.getElementById("rollback");
  if (rb) {
    rb.addEventListener("click", async function () {
      if (!window.confirm("Roll back to the previous model version?")) return;
      const msg = document.getElementById("model-msg");
      msg.textContent = "Rolling back…";
      const res = await api.call("POST", "/api/v1/model/rollback");
      msg.textContent = res.ok ? "Rolled back." : "Not rolled back: " + api.problem(res);
      if (res.ok) window.location.reload();
    });
  }
});
