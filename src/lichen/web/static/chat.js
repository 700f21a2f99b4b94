// Chat page: streams an answer from /v1/chat/completions (SSE over fetch) into the
// transcript, with a stop button that aborts the fetch (the gateway then cancels the job).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const modelSelect = $("model");
  const privacySelect = $("privacy-class");
  const privacyHelp = $("privacy-class-help");
  const publishBox = $("publish");
  const transcript = $("transcript");
  const emptyNote = $("transcript-empty");
  const composer = $("composer");
  const prompt = $("prompt");
  const sendButton = $("send");
  const stopButton = $("stop");
  const status = $("chat-status");
  const template = $("message-template");
  const autoModel = modelSelect.dataset.auto || "auto";

  let history = [];
  let controller = null;
  const nodeNames = new Map();

  class ApiError extends Error {}

  function setStatus(text) {
    status.textContent = text;
  }

  function formatMs(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  async function refreshModels() {
    try {
      const response = await fetch("/v1/models", { headers: { accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      const chosen = modelSelect.value;
      const options = [new Option("auto (best available)", autoModel)];
      for (const model of body.data || []) {
        const nodes = model.nodes;
        const label = nodes === undefined
          ? model.id
          : `${model.id} · ${nodes} node${nodes === 1 ? "" : "s"}`;
        options.push(new Option(label, model.id));
      }
      modelSelect.replaceChildren(...options);
      modelSelect.value = options.some((o) => o.value === chosen) ? chosen : autoModel;
    } catch (err) {
      // The server-rendered list stays; the next page load tries again.
    }
  }

  async function refreshNodeNames() {
    try {
      const response = await fetch("/ui/api/network", { headers: { accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      for (const node of body.nodes || []) nodeNames.set(node.peer_id, node.name);
    } catch (err) {
      // Names are a nicety: the peer id is shown instead.
    }
  }

  function addMessage(role, text) {
    const article = template.content.firstElementChild.cloneNode(true);
    article.classList.add(`message-${role}`);
    article.dataset.role = role;
    article.querySelector(".message-role").textContent = role === "user" ? "You" : "Assistant";
    const body = article.querySelector(".message-text");
    body.textContent = text;
    if (emptyNote) emptyNote.hidden = true;
    transcript.append(article);
    article.scrollIntoView({ block: "end" });
    return { article, body, meta: article.querySelector(".message-meta") };
  }

  async function errorMessage(response) {
    return (await Lichen.errorOf(response)).message;
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    stopButton.disabled = !busy;
    composer.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function describe(result) {
    const parts = [];
    if (result.node) {
      const name = nodeNames.get(result.node);
      const short = result.node.slice(0, 12);
      parts.push(name ? `served by ${name} (${short})` : `served by ${short}`);
    }
    if (result.ttft !== null) parts.push(`first token ${formatMs(result.ttft)}`);
    parts.push(`total ${formatMs(result.latency)}`);
    if (result.usage) {
      const tokens = result.usage.completion_tokens;
      const seconds = result.ttft === null ? 0 : (result.latency - result.ttft) / 1000;
      parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
      if (seconds > 0 && tokens > 1) parts.push(`${(tokens / seconds).toFixed(0)} tokens/s`);
    }
    if (result.outcome === "stopped") parts.push("stopped");
    return parts.join(" · ");
  }

  async function readStream(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }

  async function send(text) {
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const answer = addMessage("assistant", "");
    answer.article.setAttribute("aria-busy", "true");
    answer.article.dataset.state = "streaming";
    controller = new AbortController();
    setBusy(true);
    setStatus("Waiting for a node…");

    const request = {
      model: modelSelect.value,
      messages: history,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (privacySelect && privacySelect.value) request.lichen_privacy_class = privacySelect.value;
    if (publishBox) request.lichen_public = publishBox.checked;
    const started = performance.now();
    const result = { node: null, ttft: null, latency: 0, usage: null, outcome: "done" };
    let content = "";
    try {
      const response = await Lichen.request("/v1/chat/completions", {
        method: "POST",
        json: request,
        accept: "text/event-stream",
        signal: controller.signal,
      });
      result.node = response.headers.get("x-lichen-node");
      result.deletionToken = response.headers.get("x-lichen-deletion-token");
      result.requestId = response.headers.get("x-lichen-request-id");
      if (!response.ok) throw new ApiError(await errorMessage(response));
      if (result.node && !nodeNames.has(result.node)) refreshNodeNames();
      setStatus("Answering…");
      await readStream(response, (chunk) => {
        if (chunk.error) throw new ApiError(chunk.error.message || "the answer failed");
        if (chunk.usage) result.usage = chunk.usage;
        const choice = (chunk.choices || [])[0];
        const delta = choice && choice.delta && choice.delta.content;
        if (delta) {
          if (result.ttft === null) result.ttft = performance.now() - started;
          content += delta;
          // The transcript grows with the page: keep the answer's end in view while the
          // reader is following it (not when they scrolled up to read something else).
          const bottom = answer.article.getBoundingClientRect().bottom;
          const following = bottom <= window.innerHeight + 48;
          answer.body.append(delta);
          if (following) status.scrollIntoView({ block: "end" });
        }
      });
    } catch (err) {
      if (err.name === "AbortError") {
        result.outcome = "stopped";
      } else {
        result.outcome = "error";
        const line = document.createElement("p");
        line.className = "message-error";
        line.textContent = err instanceof ApiError ? err.message : `Network error: ${err.message}`;
        answer.body.after(line);
      }
    } finally {
      controller = null;
      result.latency = performance.now() - started;
      answer.article.removeAttribute("aria-busy");
      answer.article.dataset.state = result.outcome;
      if (result.node) answer.article.dataset.node = result.node;
      answer.meta.textContent = describe(result);
      if (publishBox && publishBox.checked && result.deletionToken && result.outcome === "done") {
        const note = document.createElement("p");
        note.className = "message-meta";
        note.textContent =
          `Published on the public feed. To delete it, send DELETE /feed/${result.requestId} ` +
          `with the header x-lichen-deletion-token: ${result.deletionToken}`;
        answer.meta.after(note);
      }
      setBusy(false);
    }
    if (content) {
      history.push({ role: "assistant", content });
    } else if (result.outcome === "error") {
      history.pop(); // let the user retry without a dangling question
    }
    const done = { done: "Answer complete.", stopped: "Stopped.", error: "The request failed." };
    setStatus(done[result.outcome]);
    prompt.focus();
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    prompt.value = "";
    send(text);
  });

  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    } else if (event.key === "Escape" && controller) {
      controller.abort();
    }
  });

  stopButton.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  $("new-chat").addEventListener("click", () => {
    if (controller) controller.abort();
    history = [];
    transcript.querySelectorAll(".message").forEach((node) => node.remove());
    if (emptyNote) emptyNote.hidden = false;
    setStatus("New chat.");
    prompt.focus();
  });

  if (privacySelect && privacyHelp) {
    privacySelect.addEventListener("change", () => {
      const option = privacySelect.selectedOptions[0];
      privacyHelp.textContent = (option && option.dataset.description) || "";
    });
  }

  refreshModels();
  refreshNodeNames();
})();
