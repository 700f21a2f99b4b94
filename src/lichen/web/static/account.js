// Sign-up, log-in and account pages: forms talk to /v1/auth and /v1/account (JSON),
// with the session cookie and the CSRF header (see lichen.js).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function showError(element, message) {
    element.textContent = message;
    element.hidden = false;
    element.focus?.();
  }

  async function failure(response) {
    const error = await Lichen.errorOf(response);
    return error.message;
  }

  function safeNext(value) {
    return value && value.startsWith("/") && !value.startsWith("//") ? value : "/account";
  }

  async function submitAuth(form, url, body) {
    const errorBox = $("form-error");
    errorBox.hidden = true;
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const response = await Lichen.request(url, { method: "POST", json: body });
      if (!response.ok) {
        showError(errorBox, await failure(response));
        return;
      }
      Lichen.rememberSession(true);
      const next = safeNext(form.dataset.next);
      window.location.assign(url.endsWith("/signup") ? `${next}?welcome=1` : next);
    } catch (err) {
      showError(errorBox, `Could not reach the gateway: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  const signup = $("signup-form");
  if (signup) {
    signup.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!signup.reportValidity()) return;
      submitAuth(signup, "/v1/auth/signup", {
        username: $("username").value.trim(),
        email: $("email").value.trim(),
        password: $("password").value,
      });
    });
  }

  const login = $("login-form");
  if (login) {
    const credentials = () => ({ login: $("login").value.trim(), password: $("password").value });
    login.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!login.reportValidity()) return;
      submitAuth(login, "/v1/auth/login", credentials());
    });
    $("restore").addEventListener("click", () => {
      if (!login.reportValidity()) return;
      submitAuth(login, "/v1/auth/restore", credentials());
    });
  }

  // The welcome note is for the first view only: a reload should not repeat it.
  if (window.location.search.includes("welcome=1")) {
    window.history.replaceState(null, "", window.location.pathname);
  }

  const logout = $("logout-form");
  if (logout) {
    logout.addEventListener("submit", async (event) => {
      event.preventDefault();
      await Lichen.request("/v1/auth/logout", { method: "POST" });
      Lichen.rememberSession(false);
      window.location.assign("/login?signed_out=1");
    });
  }

  // --- API keys ---

  function cell(tag, text, attrs = {}) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
    if (text !== null) element.textContent = text;
    return element;
  }

  function revokeButton(key) {
    const button = cell("button", "Revoke", {
      type: "button",
      class: "danger revoke",
      "data-key-id": key.id,
      "aria-label": `Revoke key ${key.name}`,
    });
    button.addEventListener("click", () => revoke(button));
    return button;
  }

  function keyRow(key) {
    const row = cell("tr", null, { "data-key-id": key.id });
    const state = cell("td", null);
    state.append(revokeButton(key));
    const code = cell("code", key.prefix);
    const prefix = cell("td", null);
    prefix.append(code);
    row.append(
      cell("th", key.name, { scope: "row" }),
      prefix,
      cell("td", key.scopes.join(", ")),
      cell("td", new Date(key.created_ms).toISOString().slice(0, 16).replace("T", " ") + " UTC"),
      cell("td", "never"),
      state,
    );
    return row;
  }

  async function revoke(button) {
    const errorBox = $("key-error");
    errorBox.hidden = true;
    button.disabled = true;
    const response = await Lichen.request(`/v1/account/keys/${button.dataset.keyId}`, {
      method: "DELETE",
    });
    if (!response.ok) {
      button.disabled = false;
      showError(errorBox, await failure(response));
      return;
    }
    const badge = cell("span", "revoked", { class: "badge state-offline" });
    button.replaceWith(badge);
  }

  document.querySelectorAll("button.revoke").forEach((button) => {
    button.addEventListener("click", () => revoke(button));
  });

  const keyForm = $("key-form");
  if (keyForm) {
    keyForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const errorBox = $("key-error");
      errorBox.hidden = true;
      if (!keyForm.reportValidity()) return;
      const scopes = [...keyForm.querySelectorAll('input[name="scopes"]:checked')].map(
        (box) => box.value,
      );
      const response = await Lichen.request("/v1/account/keys", {
        method: "POST",
        json: { name: $("key-name").value.trim(), scopes },
      });
      if (!response.ok) {
        showError(errorBox, await failure(response));
        return;
      }
      const key = await response.json();
      $("new-key-secret").textContent = key.key;
      $("new-key").hidden = false;
      $("keys-body").prepend(keyRow(key));
      $("keys-empty").hidden = true;
      keyForm.reset();
      $("copy-key").focus();
    });
    $("copy-key").addEventListener("click", async () => {
      const secret = $("new-key-secret").textContent;
      try {
        await navigator.clipboard.writeText(secret);
        $("copy-key").textContent = "Copied";
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents($("new-key-secret"));
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        $("copy-key").textContent = "Selected: press Ctrl+C";
      }
    });
  }

  // --- deletion ---

  const deleteForm = $("delete-form");
  if (deleteForm) {
    deleteForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const errorBox = $("delete-error");
      errorBox.hidden = true;
      if (!deleteForm.reportValidity()) return;
      if (!window.confirm("Delete your account? Every API key stops working now.")) return;
      const response = await Lichen.request("/v1/account", {
        method: "DELETE",
        json: { password: $("delete-password").value },
      });
      if (!response.ok) {
        showError(errorBox, await failure(response));
        return;
      }
      Lichen.rememberSession(false);
      window.location.assign("/login?deleted=1");
    });
  }
})();
