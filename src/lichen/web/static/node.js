// Node page: saves the telemetry switch as soon as it changes, and refreshes the counters.
"use strict";

(() => {
  const POLL_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const form = $("telemetry-form");
  const box = $("telemetry");
  const status = $("telemetry-status");
  const saveButton = $("telemetry-save");

  const thousands = (n) => Math.round(n).toLocaleString("en").replace(/,/g, "\u202f");

  function duration(total) {
    const d = Math.floor(total / 86400);
    const h = Math.floor((total % 86400) / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = Math.floor(total % 60);
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s} s`;
    return `${s} s`;
  }

  async function save() {
    const token = form.querySelector('input[name="csrf_token"]').value;
    box.disabled = true;
    status.textContent = "Saving…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", "x-csrf-token": token },
        body: JSON.stringify({ telemetry: box.checked }),
        credentials: "same-origin",
      });
      const body = await response.json();
      if (!response.ok) throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
      box.checked = body.telemetry;
      status.textContent = body.telemetry ? "Saved: telemetry is on." : "Saved: telemetry is off.";
    } catch (err) {
      box.checked = !box.checked;
      status.textContent = `Not saved: ${err.message}`;
    } finally {
      box.disabled = false;
    }
  }

  if (form && box && saveButton) {
    saveButton.hidden = true;
    box.addEventListener("change", save);
  }

  async function poll() {
    const stats = $("node-stats");
    if (!stats) return;
    if (document.visibilityState === "visible") {
      try {
        const response = await fetch("/ui/api/node", { headers: { accept: "application/json" } });
        if (response.ok) {
          const n = await response.json();
          $("node-served").textContent = thousands(n.served);
          $("node-served-now").textContent = `all time · ${thousands(n.served_now)} since it connected`;
          $("node-tokens").textContent = thousands(n.tokens);
          $("node-tokens-split").textContent =
            `${thousands(n.prompt_tokens)} in · ${thousands(n.completion_tokens)} out`;
          if (n.credits !== null && n.credits !== undefined) $("node-credits").textContent = `${n.credits} credits`;
          $("node-uptime").textContent = duration(n.uptime_s);
          const state = $("node-state");
          state.textContent = n.state;
          state.className = `badge state-${n.state}`;
        }
      } catch (err) {
        // keep the last values; try again later
      }
    }
    setTimeout(poll, POLL_MS);
  }
  setTimeout(poll, POLL_MS);
})();
