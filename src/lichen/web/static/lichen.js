// Shared by every page: the CSRF token, and fetch with one silent session refresh.
"use strict";

window.Lichen = (() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  async function errorOf(response) {
    try {
      const body = await response.clone().json();
      if (body && body.error) return body.error;
    } catch (err) {
      // not JSON
    }
    return { message: `HTTP ${response.status} ${response.statusText}`, code: "" };
  }

  async function refresh() {
    const response = await fetch("/v1/auth/refresh", {
      method: "POST",
      headers: { "x-csrf-token": csrf, accept: "application/json" },
      credentials: "same-origin",
    });
    return response.ok;
  }

  // fetch() with the CSRF header and JSON body; an expired browser session is
  // refreshed once (POST /v1/auth/refresh) and the request retried.
  async function request(url, options = {}) {
    const headers = { "x-csrf-token": csrf, accept: options.accept || "application/json" };
    let body = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const init = {
      method: options.method || "GET",
      headers,
      body,
      signal: options.signal,
      credentials: "same-origin",
    };
    let response = await fetch(url, init);
    if (response.status === 401 && !url.startsWith("/v1/auth/")) {
      const error = await errorOf(response);
      if (error.code === "invalid_credentials" && (await refresh())) {
        response = await fetch(url, init);
      }
    }
    return response;
  }

  // Whether this browser signed in here: only then is a silent refresh worth trying
  // (refresh attempts count against the per-address sign-in limit).
  const SESSION_FLAG = "lichen.session";

  function rememberSession(on) {
    try {
      if (on) window.localStorage.setItem(SESSION_FLAG, "1");
      else window.localStorage.removeItem(SESSION_FLAG);
    } catch (err) {
      // storage disabled: no silent refresh
    }
  }

  function hadSession() {
    try {
      return window.localStorage.getItem(SESSION_FLAG) === "1";
    } catch (err) {
      return false;
    }
  }

  // The short-lived access cookie expired but the browser signed in before: refresh
  // once and reload, so the page shows the account instead of "Log in".
  const body = document.body;
  const lastTry = Number(window.sessionStorage.getItem("lichen.refreshed") || 0);
  const quiet = Date.now() - lastTry > 10000; // never loop on reloads
  if (body.dataset.accounts === "1" && body.dataset.signedIn === "0" && hadSession() && quiet) {
    window.sessionStorage.setItem("lichen.refreshed", String(Date.now()));
    refresh().then((ok) => {
      if (ok) window.location.reload();
      else rememberSession(false);
    });
  } else if (body.dataset.signedIn === "1") {
    rememberSession(true);
  }

  return { csrf, request, refresh, errorOf, rememberSession };
})();
