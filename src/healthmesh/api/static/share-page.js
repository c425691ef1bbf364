// The patient's sharing page (api/share_page.py, docs/sharing.md "For the patient").
// A SMART public client: authorization code + PKCE S256; the token is kept in memory only.
// Every value from the server is put in the page with textContent, never as HTML.
"use strict";

(() => {
  const body = document.body;
  const CLIENT = body.dataset.client;
  const FHIR = body.dataset.fhir;
  const SCOPE = body.dataset.scope;
  const REDIRECT = location.origin + "/share";
  const FLOW = "healthmesh-share-flow"; // sessionStorage: {state, verifier} for one redirect

  let token = null; // the access token: memory only
  const links = new Map(); // id -> shlink of the shares made in this tab (the key is not kept)

  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  };

  function say(text, ok) {
    const box = $("message");
    box.textContent = text;
    box.className = ok ? "ok" : "";
    box.hidden = !text;
  }

  // --- signing in: SMART App Launch 2.2 standalone launch, PKCE S256 ---------------------
  const b64url = (bytes) =>
    btoa(String.fromCharCode(...new Uint8Array(bytes)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));

  async function smartConfiguration() {
    const response = await fetch(FHIR + "/.well-known/smart-configuration");
    if (!response.ok) throw new Error("discovery");
    return response.json();
  }

  async function signIn() {
    if (!crypto.subtle) {
      say("Signing in needs a secure connection (https, or this computer's own address).");
      return;
    }
    const config = await smartConfiguration();
    const verifier = random(48);
    const state = random(24);
    const challenge = b64url(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    sessionStorage.setItem(FLOW, JSON.stringify({ state, verifier }));
    const url = new URL(config.authorization_endpoint, location.href);
    const params = {
      response_type: "code", client_id: CLIENT, redirect_uri: REDIRECT, scope: SCOPE,
      state, aud: FHIR, code_challenge: challenge, code_challenge_method: "S256",
    };
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    location.assign(url.toString());
  }

  async function finishSignIn(query) {
    const saved = JSON.parse(sessionStorage.getItem(FLOW) || "null");
    sessionStorage.removeItem(FLOW);
    history.replaceState(null, "", "/share"); // the code leaves the address bar at once
    if (query.get("error")) {
      say(query.get("error") === "access_denied"
        ? "Sign-in was cancelled, so nothing was shared. You can sign in again."
        : "Sign-in did not work (" + query.get("error") + "). Please try again.");
      return false;
    }
    if (!saved || saved.state !== query.get("state")) {
      say("This sign-in did not start on this page, so it was ignored. Please sign in again.");
      return false;
    }
    const config = await smartConfiguration();
    const response = await fetch(config.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code", code: query.get("code"), redirect_uri: REDIRECT,
        client_id: CLIENT, code_verifier: saved.verifier,
      }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok || !answer.access_token) {
      say("Sign-in could not be completed. Please sign in again.");
      return false;
    }
    if (!answer.patient) {
      say("This account is not linked to a health record, so there is nothing to share.");
      return false;
    }
    token = answer.access_token;
    return true;
  }

  // --- the management API ----------------------------------------------------------------
  class Refused extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(method, path, payload, binary) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: Object.assign({ Authorization: "Bearer " + token },
          payload ? { "Content-Type": "application/json" } : {}),
        body: payload ? JSON.stringify(payload) : undefined,
      });
    } catch (e) {
      throw new Refused(0, "");
    }
    if (response.ok) return binary ? response.blob() : response.json();
    const outcome = await response.json().catch(() => ({}));
    const issue = (outcome.issue || [])[0] || {};
    throw new Refused(response.status, issue.diagnostics || outcome.error_description || "");
  }

  function friendly(error) {
    if (!(error instanceof Refused)) return "Something went wrong on this page. Please reload it.";
    switch (error.status) {
      case 0: return "The server could not be reached. Check your connection and try again.";
      case 401:
        token = null;
        show("signin");
        return "Your sign-in has ended. Please sign in again.";
      case 403: return "This sign-in does not allow sharing your record. Sign in again and"
        + " approve access to your health record.";
      case 404: return "That share does not exist any more.";
      case 413: return "The documents are too large to share. Try fewer or smaller PDFs.";
      case 422: return "Your record cannot be shared yet: " + error.message;
      case 400: return "Please check the form: " + error.message;
      default: return "The server could not do that right now. Please try again in a moment.";
    }
  }

  async function attempt(work) {
    try {
      await work();
    } catch (error) {
      say(friendly(error));
    }
  }

  // --- the page --------------------------------------------------------------------------
  function show(...ids) {
    for (const id of ["signin", "create", "shares"]) $(id).hidden = !ids.includes(id);
  }

  async function loadSections() {
    const { sections } = await api("GET", "/share/contents");
    const box = $("sections");
    box.replaceChildren();
    for (const section of sections) {
      const label = el("label", undefined, "choice");
      const input = el("input");
      input.type = "checkbox";
      input.name = "section";
      input.value = section.code;
      input.checked = true;
      label.append(input, " " + section.title);
      box.append(label);
    }
  }

  const when = (seconds) => new Date(seconds * 1000).toLocaleString();
  const STATUS = {
    active: "Active", paused: "Paused", revoked: "Revoked", expired: "Expired",
    exhausted: "Locked (too many wrong passcodes)", used: "Used (one-time)",
  };
  const OUTCOME = {
    ok: "Opened", wrong_passcode: "Wrong passcode", inactive: "Refused (share not active)",
    expired: "Refused (link expired)", rate_limited: "Refused (too frequent)",
  };

  async function refresh() {
    const { links: owned } = await api("GET", "/share/links");
    const list = $("share-list");
    list.replaceChildren();
    $("no-shares").hidden = owned.length > 0;
    for (const link of owned) list.append(shareItem(link));
  }

  function shareItem(link) {
    const item = el("li", undefined, "share");
    item.dataset.id = link.id;
    item.append(el("h3", link.label || "Untitled share"));
    const facts = el("p", undefined, "facts");
    const status = el("span", STATUS[link.status] || link.status, "status status-" + link.status);
    const kind = link.singleUse ? "one-time" : link.flag.includes("L") ? "long-term" : "reusable";
    const parts = [
      kind, link.flag.includes("P") ? "passcode" : "no passcode",
      link.exp ? "until " + when(link.exp) : "no expiry",
      "opened " + link.accessCount + (link.accessCount === 1 ? " time" : " times"),
    ];
    facts.append(status, " · " + parts.join(" · "));
    item.append(facts);
    const actions = el("div", undefined, "actions");
    const button = (text, cls, onClick) => {
      const b = el("button", text, cls);
      b.type = "button";
      b.addEventListener("click", () => attempt(onClick));
      actions.append(b);
      return b;
    };
    if (links.has(link.id) && link.status === "active") {
      button("Show QR code", "primary", () => showQr(link));
    }
    button("Who opened it", "", () => accesses(link.id));
    if (link.status === "active") {
      button("Pause", "", () => act(link.id, "pause", "Paused: nobody can open it until you resume it."));
    } else if (link.status === "paused") {
      button("Resume", "", () => act(link.id, "resume", "Resumed: the share works again."));
    }
    if (link.status !== "revoked") {
      button("Revoke", "danger", async () => {
        if (!confirm("Revoke this share for good? Nobody will be able to open it again.")) return;
        await act(link.id, "revoke", "Revoked: this share will never open again.");
      });
    }
    item.append(actions);
    return item;
  }

  async function act(id, action, done) {
    await api("POST", "/share/links/" + encodeURIComponent(id) + "/" + action);
    if (action === "revoke") links.delete(id);
    await refresh();
    say(done, true);
  }

  async function accesses(id) {
    const { accesses: seen } = await api("GET", "/share/links/" + encodeURIComponent(id) + "/accesses");
    await refresh(); // the counts and statuses of the list, as of now
    const item = [...$("share-list").children].find((li) => li.dataset.id === id);
    if (!item) return;
    if (seen.length === 0) {
      item.append(el("p", "Nobody has opened this share yet.", "none"));
      return;
    }
    const table = el("table", undefined, "accesses");
    const head = el("tr");
    for (const title of ["When", "Who (as they named themselves)", "What happened"]) {
      head.append(el("th", title));
    }
    table.append(head);
    for (const access of seen) {
      const row = el("tr");
      row.append(el("td", new Date(access.time).toLocaleString()), el("td", access.recipient),
        el("td", (OUTCOME[access.outcome] || access.outcome)
          + (access.kind === "file" ? " (downloaded the file)" : "")));
      table.append(row);
    }
    item.append(table);
  }

  async function showQr(link) {
    const image = await api("POST", "/share/qr", { shlink: links.get(link.id), format: "svg" }, true);
    const img = $("qr-image");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(image);
    $("qr-label").textContent = link.label || "My health record";
    $("qr-expiry").textContent = link.exp ? "Works until " + when(link.exp) : "No expiry date";
    $("qr-passcode").hidden = !link.flag.includes("P");
    const screen = $("qr-screen");
    screen.hidden = false;
    // The real full screen where the browser allows it; the overlay covers the page anyway.
    screen.requestFullscreen?.().catch(() => {});
    $("qr-close").focus();
  }

  function closeQr() {
    $("qr-screen").hidden = true;
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  }

  const readPdf = (file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });

  async function create(event) {
    event.preventDefault();
    say("");
    const form = event.target;
    const passcode = form.passcode.value.trim();
    const once = form.kind.value === "once";
    const documents = [];
    for (const file of form.documents.files) {
      if (file.type && file.type !== "application/pdf") {
        say("Only PDF documents can be added: " + file.name + " is not one.");
        return;
      }
      documents.push({ title: file.name.replace(/\.pdf$/i, ""), contentType: "application/pdf",
        data: await readPdf(file) });
    }
    const sections = [...form.querySelectorAll("input[name=section]:checked")].map((i) => i.value);
    const request = {
      flag: (once ? "" : "L") + (passcode ? "P" : once ? "U" : ""),
      exp: Math.floor(Date.now() / 1000) + Number(form.expiry.value),
      label: form.label.value.trim() || undefined,
      singleUse: once,
      contents: { sections, insurance: form.insurance.checked, rendering: form.rendering.checked,
        documents },
    };
    if (passcode) request.passcode = passcode;
    const created = await api("POST", "/share/links", request);
    links.set(created.link.id, created.shlink);
    await refresh();
    say("Your share is ready. Show the QR code at the front desk.", true);
    await showQr(created.link);
  }

  async function start() {
    $("signin-button").addEventListener("click", () => attempt(signIn));
    $("create-form").addEventListener("submit", (event) => attempt(() => create(event)));
    $("qr-close").addEventListener("click", closeQr);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeQr(); });
    const query = new URLSearchParams(location.search);
    if ((query.get("code") || query.get("error")) && !(await finishSignIn(query))) {
      show("signin");
      return;
    }
    if (!token) {
      show("signin");
      return;
    }
    show("create", "shares");
    await loadSections();
    await refresh();
  }

  attempt(start);
})();
