"""The front-desk check-in page: one HTML document, its styles and a little vanilla JavaScript.

No build step and no data in the page itself: the staff's access token lives in the tab's
sessionStorage (never a cookie, so no cross-site request can use it) and goes to the check-in
API as ``Authorization: Bearer``. Texts from the server are inserted as text, never as HTML.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Clinic check-in — HealthMesh</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1d2733; }
  header { background: #0b5394; color: #fff; padding: 10px 20px; display: flex; gap: 16px;
           align-items: center; }
  header h1 { font-size: 20px; margin: 0; flex: 1; }
  main { max-width: 1100px; margin: 0 auto; padding: 16px; }
  section { background: #fff; border-radius: 8px; padding: 14px 18px; margin-bottom: 14px;
            box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  h2 { font-size: 16px; margin: 0 0 8px; }
  h3 { font-size: 14px; margin: 6px 0 4px; color: #0b5394; }
  .row { display: flex; gap: 12px; flex-wrap: wrap; align-items: center; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 12px; }
  .card { border: 1px solid #d5dde5; border-radius: 6px; padding: 8px 12px; }
  .insurance { background: linear-gradient(135deg, #e8f1fb, #fff); }
  ul { margin: 0; padding-left: 18px; }
  .muted { color: #5c6b7a; font-size: 13px; }
  .msg { padding: 10px 14px; border-radius: 6px; margin-bottom: 14px; }
  .msg.error { background: #fde8e8; border: 1px solid #e0a0a0; }
  .msg.warning { background: #fff6e0; border: 1px solid #e5c77a; }
  .msg.ok { background: #e6f6ea; border: 1px solid #93c9a2; }
  button { font: inherit; padding: 6px 14px; border-radius: 5px; border: 1px solid #0b5394;
           background: #0b5394; color: #fff; cursor: pointer; }
  button.secondary { background: #fff; color: #0b5394; }
  button:disabled { opacity: .5; cursor: default; }
  input[type=text], input[type=password], textarea { font: inherit; padding: 5px 8px;
           border: 1px solid #b8c4d0; border-radius: 5px; }
  textarea { width: 100%; box-sizing: border-box; }
  video { max-width: 320px; border-radius: 6px; background: #000; }
  .candidate { display: block; padding: 6px 8px; border: 1px solid #d5dde5; border-radius: 5px;
               margin: 4px 0; }
  .grade { font-size: 12px; padding: 1px 6px; border-radius: 8px; background: #e3e8ee; }
  .grade.certain { background: #cdebd5; } .grade.probable { background: #fbeac0; }
  [hidden] { display: none !important; }
  pre { background: #f0f3f6; padding: 8px; overflow: auto; max-height: 300px; }
</style>
</head>
<body>
<header><h1>Clinic check-in</h1><span id="who" class="muted" style="color:#dfe9f5"></span></header>
<main>
<section id="signin">
  <h2>Front-desk sign-in</h2>
  <p class="muted">Paste your staff access token (from your administrator; on the server:
  <code>healthmesh token --client front-desk --scope "user/*.crs"</code>). It stays in this
  browser tab only and lasts at most an hour.</p>
  <div class="row">
    <input id="token" type="password" size="60" placeholder="access token" autocomplete="off">
    <button id="use-token">Sign in</button>
    <button id="sign-out" class="secondary" hidden>Sign out</button>
  </div>
</section>

<div id="message" class="msg" role="alert" hidden></div>

<section id="scan" hidden>
  <h2>1. Scan the patient's QR code</h2>
  <div class="grid">
    <div class="card">
      <h3>Photo</h3>
      <input id="photo" type="file" accept="image/png,image/jpeg" capture="environment">
      <p class="muted">A photo of the QR code on the patient's phone or on paper.</p>
    </div>
    <div class="card">
      <h3>Camera</h3>
      <div class="row"><button id="camera-start" class="secondary">Start camera</button>
      <button id="camera-capture" hidden>Capture</button></div>
      <video id="video" autoplay playsinline muted hidden></video>
      <canvas id="canvas" hidden></canvas>
    </div>
    <div class="card">
      <h3>Link</h3>
      <textarea id="link" rows="3" placeholder="shlink:/… or https://…#shlink:/… or shc:/…"></textarea>
      <button id="open-link">Open link</button>
    </div>
  </div>
  <div id="passcode-box" class="row" style="margin-top:10px" hidden>
    <label for="passcode">Passcode (ask the patient):</label>
    <input id="passcode" type="password" size="12" autocomplete="off">
    <button id="send-passcode">Continue</button>
  </div>
</section>

<section id="summary" hidden>
  <h2>2. Check-in summary</h2>
  <div id="warnings"></div>
  <div class="grid">
    <div class="card" id="identity"></div>
    <div class="card insurance" id="insurance"></div>
  </div>
  <div class="grid" style="margin-top:12px">
    <div class="card"><h3>Problems</h3><ul id="problems"></ul></div>
    <div class="card"><h3>Medications</h3><ul id="medications"></ul></div>
    <div class="card"><h3>Allergies</h3><ul id="allergies"></ul></div>
    <div class="card"><h3>Immunizations</h3><ul id="immunizations"></ul></div>
    <div class="card"><h3>Patient-provided documents</h3><ul id="documents"></ul></div>
  </div>
  <p class="muted" id="source"></p>
</section>

<section id="match" hidden>
  <h2>3. Who is this in our records?</h2>
  <p id="match-hint" class="muted"></p>
  <div id="candidates"></div>
  <label class="candidate"><input type="radio" name="patient" value="new"
    data-testid="new-patient"> <b>New patient</b> — create a record from the shared identity</label>
  <div class="row" style="margin-top:10px">
    <button id="import" disabled>Import into our records</button>
    <span class="muted">Problems, medications, allergies, immunizations and documents,
    marked as patient-provided.</span>
  </div>
</section>

<section id="result" hidden>
  <h2>4. Imported</h2>
  <p id="result-text"></p>
  <ul id="result-links"></ul>
  <pre id="resource" hidden></pre>
  <button id="next" class="secondary">Next patient</button>
</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const state = { text: null, passcode: null, digest: null, image: null };
const TITLES = {
  "link-expired": "Link expired",
  "link-inactive": "Link no longer active",
  "passcode-required": "Passcode needed",
  "wrong-passcode": "Wrong passcode",
  "unreadable-photo": "Photo could not be read",
  "unknown-issuer": "Unknown health card issuer",
  "invalid-card": "Health card not valid",
  "sender-unreachable": "Sharing server not reachable",
  "address-refused": "Link refused",
  "throttled": "Please wait",
  "invalid-bundle": "Shared data not usable",
  "no-data": "Nothing received",
  "content-changed": "Shared data changed",
};

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function show(id, on) { $(id).hidden = !on; }
function message(kind, title, text, reason) {
  const box = $("message");
  box.className = "msg " + kind;
  box.replaceChildren(el("b", title + ": "), el("span", text));
  box.dataset.reason = reason || "";
  box.hidden = false;
}
function clearMessage() { $("message").hidden = true; }
function token() { return sessionStorage.getItem("checkin-token"); }

function signedIn() {
  const on = !!token();
  show("scan", on); show("sign-out", on); show("use-token", !on); $("token").hidden = on;
  $("who").textContent = on ? "signed in" : "";
}
$("use-token").onclick = () => {
  const value = $("token").value.trim();
  if (value) { sessionStorage.setItem("checkin-token", value); $("token").value = ""; }
  clearMessage(); signedIn();
};
$("sign-out").onclick = () => { sessionStorage.removeItem("checkin-token"); reset(); signedIn(); };

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token() },
    body: JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.ok) return data;
  const issue = (data && data.issue && data.issue[0]) || {};
  const coding = (issue.details && issue.details.coding && issue.details.coding[0]) || {};
  const remaining = (issue.extension || []).find((x) => x.url.endsWith("remaining-attempts"));
  const error = new Error((issue.details && issue.details.text) || issue.diagnostics ||
                          ("HTTP " + response.status));
  error.reason = coding.code || (response.status === 401 ? "signin" : "http-" + response.status);
  error.status = response.status;
  error.remaining = remaining ? remaining.valueInteger : null;
  throw error;
}

function failed(error) {
  if (error.status === 401) {
    sessionStorage.removeItem("checkin-token"); signedIn();
    message("error", "Please sign in again", error.message, "signin");
    return;
  }
  const passcode = error.reason === "passcode-required" || error.reason === "wrong-passcode";
  show("passcode-box", passcode && error.remaining !== 0);
  if (passcode) { $("passcode").value = ""; $("passcode").focus(); }
  message("error", TITLES[error.reason] || "Could not continue", error.message, error.reason);
}

async function scan(body) {
  clearMessage(); show("summary", false); show("match", false); show("result", false);
  try {
    const preview = await api("/checkin/api/scan", body);
    state.text = preview.text; state.digest = preview.digest;
    show("passcode-box", false);
    render(preview);
  } catch (error) { failed(error); }
}

function readPhoto(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
$("photo").onchange = async () => {
  const file = $("photo").files[0];
  if (!file) return;
  state.image = await readPhoto(file); state.text = null; state.passcode = null;
  await scan({ image: state.image });
};
$("open-link").onclick = () => {
  state.image = null; state.text = $("link").value.trim(); state.passcode = null;
  scan({ text: state.text });
};
$("send-passcode").onclick = () => {
  state.passcode = $("passcode").value;
  const body = state.text ? { text: state.text } : { image: state.image };
  scan({ ...body, passcode: state.passcode });
};
let stream = null;
$("camera-start").onclick = async () => {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    $("video").srcObject = stream; show("video", true); show("camera-capture", true);
  } catch (e) { message("error", "Camera not available", "Use a photo or paste the link.", "camera"); }
};
$("camera-capture").onclick = async () => {
  const video = $("video"), canvas = $("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  state.image = canvas.toDataURL("image/png"); state.text = null; state.passcode = null;
  await scan({ image: state.image });
};

function item(list, text, extra) {
  const li = el("li", text);
  if (extra) li.append(el("span", " " + extra, { class: "muted" }));
  $(list).append(li);
}
function render(preview) {
  const s = preview.summary;
  for (const id of ["problems", "medications", "allergies", "immunizations", "documents",
                    "warnings", "candidates"]) $(id).replaceChildren();
  const p = s.patient || {};
  $("identity").replaceChildren(
    el("h3", "Identity"), el("div", p.name || "(no name)", { "data-testid": "patient-name" }),
    el("div", [p.birthDate, p.gender].filter(Boolean).join(" · ")),
    el("div", p.address || "", { class: "muted" }),
    el("div", (p.telecom || []).join(", "), { class: "muted" }));
  const insurance = [el("h3", "Insurance card")];
  if (!s.coverage.length) insurance.push(el("div", "No insurance card shared.", { class: "muted" }));
  for (const c of s.coverage) {
    insurance.push(el("div", c.payor || "(payer not named)", { "data-testid": "payor" }));
    insurance.push(el("div", "Member ID: " + (c.memberId || "—")));
    if (c.group) insurance.push(el("div", "Group: " + c.group));
    if (c.plan) insurance.push(el("div", "Plan: " + c.plan));
    if (c.period) insurance.push(el("div", c.period, { class: "muted" }));
  }
  $("insurance").replaceChildren(...insurance);
  for (const x of s.problems) item("problems", x.name, [x.status, x.onset].filter(Boolean).join(", "));
  for (const x of s.medications) item("medications", x.name, [x.status, x.dosage].filter(Boolean).join(", "));
  for (const x of s.allergies) item("allergies", x.name,
    [x.criticality && "criticality " + x.criticality, ...(x.reactions || [])].filter(Boolean).join(", "));
  for (const x of s.immunizations) item("immunizations", x.name, [x.date, x.status].filter(Boolean).join(", "));
  for (const d of s.documents) {
    const li = el("li", d.title + " ");
    if (d.data) {
      const bytes = Uint8Array.from(atob(d.data), (ch) => ch.charCodeAt(0));
      const url = URL.createObjectURL(new Blob([bytes], { type: d.contentType || "application/pdf" }));
      li.append(el("a", "view", { href: url, target: "_blank", rel: "noopener" }), " · ",
                el("a", "download", { href: url, download: (d.title || "document") + ".pdf" }));
    }
    $("documents").append(li);
  }
  for (const list of ["problems", "medications", "allergies", "immunizations", "documents"])
    if (!$(list).children.length) $(list).append(el("li", "none shared", { class: "muted" }));
  for (const w of preview.warnings) $("warnings").append(el("div", "Partial data: " + w, { class: "msg warning" }));
  for (const c of preview.cards) $("warnings").append(el("div",
    "Verified SMART Health Card from " + c.iss, { class: "msg ok" }));
  const src = preview.source;
  $("source").textContent = (src.kind === "shl" ? "SMART Health Link" : "SMART Health Card") +
    (src.label ? " “" + src.label + "”" : "") +
    (src.exp ? " · expires " + new Date(src.exp * 1000).toLocaleString() : "");
  for (const c of preview.candidates) {
    const label = el("label", null, { class: "candidate" });
    const radio = el("input", null, { type: "radio", name: "patient", value: c.id,
                                      "data-testid": "candidate" });
    if (preview.suggested === c.id) radio.checked = true;
    label.append(radio, " ", el("b", c.name || c.id), " " + [c.birthDate, c.gender].join(" · ") + " ",
                 el("span", c.grade, { class: "grade " + c.grade }), el("span", " " + c.why, { class: "muted" }));
    $("candidates").append(label);
  }
  document.querySelector("input[value=new]").checked = !preview.candidates.length;
  $("match-hint").textContent = preview.suggested ? "One of our patients matches for certain; check and import." :
    preview.candidates.length ? "Possible matches below: choose the right person, or New patient." :
    "No one in our records matches: a new patient record will be created.";
  $("import").disabled = !document.querySelector("input[name=patient]:checked");
  show("summary", true); show("match", true);
}
document.addEventListener("change", (e) => {
  if (e.target.name === "patient") $("import").disabled = false;
});
$("import").onclick = async () => {
  const chosen = document.querySelector("input[name=patient]:checked");
  if (!chosen) return;
  $("import").disabled = true; clearMessage();
  try {
    const result = await api("/checkin/api/import", {
      text: state.text, passcode: state.passcode, patient: chosen.value, reviewed: state.digest });
    const made = result.created.length, had = result.existing.length;
    $("result-text").textContent = made ? `Imported ${made} record(s)` +
      (had ? `; ${had} were already in our records.` : ".") :
      "Everything in this share was already imported; nothing new was written.";
    $("result-links").replaceChildren();
    for (const ref of new Set([result.patient, ...result.created, ...result.existing])) {
      const a = el("a", ref, { href: "/fhir/" + ref, "data-ref": ref });
      a.onclick = async (e) => {
        e.preventDefault();
        const r = await fetch("/fhir/" + ref, { headers: { Authorization: "Bearer " + token(),
                                                           Accept: "application/fhir+json" } });
        $("resource").textContent = JSON.stringify(await r.json(), null, 2); show("resource", true);
      };
      const li = el("li"); li.append(a); $("result-links").append(li);
    }
    message("ok", "Done", "The patient's data is in our records, marked as patient-provided.", "imported");
    show("match", false); show("result", true);
  } catch (error) { $("import").disabled = false; failed(error); }
};
function reset() {
  Object.assign(state, { text: null, passcode: null, digest: null, image: null });
  for (const id of ["summary", "match", "result", "passcode-box", "resource"]) show(id, false);
  $("link").value = ""; $("photo").value = ""; clearMessage();
}
$("next").onclick = reset;
signedIn();
</script>
</body>
</html>
"""
