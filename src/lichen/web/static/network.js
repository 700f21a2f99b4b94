// Network dashboard: polls /ui/api/network every 2 s and redraws nodes, models and rates.
"use strict";

(() => {
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const percent = (value) => `${Math.round(value * 100)}%`;

  // The node's audit record (issue 11): counts, quarantine, the latest failure's findings.
  function auditCell(a) {
    const parts = [];
    if (a === null || a === undefined) {
      parts.push("not audited yet");
    } else {
      if (a.quarantined) {
        parts.push(el("span", { className: "badge audit-quarantined" }, "quarantined"), " ");
      }
      parts.push(a.failed ? `${a.failed} of ${a.audits} failed` : `${a.audits} passed`);
      if (a.last_failure) {
        const found = a.last_failure.findings.map((f) => `${f.kind}: ${f.detail}`).join("; ");
        parts.push(el("span", { className: "sub audit-evidence" }, ` · last failure: ${found}`));
      }
    }
    return el("td", { "data-label": "Audits", className: "audit" }, el("span", {}, ...parts));
  }

  function nodeRow(n, auditsOn) {
    const meter = el("meter", { min: "0", max: "1", low: "0.5", high: "0.9", optimum: "0" });
    meter.value = n.load;
    meter.textContent = percent(n.load);
    const queued = n.queue_depth ? ` +${n.queue_depth} queued` : "";
    const failed = n.failures ? `, ${n.failures} failed` : "";
    const cell = (label, className, ...children) =>
      el("td", { "data-label": label, className: className || "" }, el("span", {}, ...children));
    const hardware = cell("Hardware", "", n.hardware_text);
    hardware.title = n.hardware.cpu;
    return el(
      "tr",
      { "data-peer": n.peer_id },
      el(
        "th",
        { scope: "row", "data-label": "Node" },
        el("span", { className: "node-name" }, n.name),
        el("br"),
        el("code", { className: "peer" }, n.peer_id.slice(0, 12)),
      ),
      hardware,
      cell("Models", "", n.model_names.join(", ")),
      el("td", { "data-label": "State" }, el("span", { className: `badge state-${n.state}` }, n.state)),
      cell("Load", "", meter, " ", el("span", { className: "load-text" }, `${n.inflight}/${n.slots_total}${queued}`)),
      cell("Tokens/s", "num", String(n.tokens_per_s)),
      cell(
        "Reputation",
        "num",
        percent(n.reputation),
        el("span", { className: "sub" }, ` · ${n.served} served${failed} since it connected`),
      ),
      auditsOn ? auditCell(n.audit) : null,
    );
  }

  function drawBars(history) {
    const bars = $("rate-bars");
    const peak = Math.max(1, ...history);
    const spans = history.map((count) => {
      const bar = el("span", { className: "bar", "data-count": String(count), title: `${count}` });
      bar.style.height = `${Math.max(2, (count / peak) * 100)}%`;
      return bar;
    });
    bars.replaceChildren(...spans);
    bars.setAttribute(
      "aria-label",
      `Requests per minute over the last ${history.length} minutes: ${history.join(", ")}`,
    );
    $("rate-peak").textContent = String(Math.max(0, ...history));
  }

  function draw(data) {
    $("stat-nodes").textContent = String(data.nodes.length);
    $("stat-models").textContent = String(data.models.length);
    $("stat-rpm").textContent = String(data.requests.per_minute);
    $("stat-tps").textContent = String(data.tokens_per_s);
    $("nodes-body").replaceChildren(...data.nodes.map((n) => nodeRow(n, data.audits_on)));
    $("nodes-empty").hidden = data.nodes.length > 0;
    $("models-body").replaceChildren(
      ...data.models.map((m) =>
        el("tr", {}, el("th", { scope: "row" }, m.name), el("td", { className: "num" }, String(m.nodes))),
      ),
    );
    $("models-empty").hidden = data.models.length > 0;
    drawBars(data.requests.history);
    const time = new Date(data.generated_ms).toLocaleTimeString();
    $("network-updated").textContent = `Live: updated ${time}.`;
  }

  async function poll() {
    if (document.visibilityState === "visible") {
      try {
        const response = await fetch("/ui/api/network", { headers: { accept: "application/json" } });
        if (response.ok) draw(await response.json());
        else $("network-updated").textContent = `Could not update (HTTP ${response.status}).`;
      } catch (err) {
        $("network-updated").textContent = "Could not reach the gateway; retrying.";
      }
    }
    setTimeout(poll, POLL_MS);
  }

  const initial = Array.from($("rate-bars").children).map((b) => Number(b.dataset.count));
  drawBars(initial);
  setTimeout(poll, POLL_MS);
})();
