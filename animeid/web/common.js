// Shared helpers of animeid's pages. Everything the server sends is shown with textContent, never as HTML.
"use strict";

const COLORS = ["#e03131", "#2f9e44", "#1c7ed6", "#f08c00", "#9c36b5", "#0c8599", "#d6336c", "#5c940d",
                 "#3b5bdb", "#e8590c"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// fetch + JSON; throws Error(detail) for an error answer
async function api(url, options) {
  let r;
  try {
    r = await fetch(url, options);
  } catch (e) {
    throw new Error("the server cannot be reached (" + e.message + ")");
  }
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : r.status + " " + r.statusText;
    const err = new Error(detail);
    err.status = r.status;
    throw err;
  }
  return body;
}

// POST a FormData with upload progress (fetch has none): resolves to the JSON answer
function upload(url, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new Error("the upload failed (connection closed)"));
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error(body && typeof body.detail === "string" ? body.detail : "HTTP " + xhr.status));
    };
    xhr.send(form);
  });
}

function pct(p) {
  return (p >= 0.995 ? (p * 100).toFixed(0) : (p * 100).toFixed(1)) + " %";
}

function fmtTime(t) {
  t = Math.max(0, t);
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  const ss = Math.abs(s - Math.round(s)) > 0.05 ? s.toFixed(1).padStart(4, "0") : String(Math.round(s)).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

function setStatus(text, kind) {
  const s = document.getElementById("status");
  if (!s) return;
  s.textContent = text || "";
  s.className = "status" + (kind ? " " + kind : "");
}

// Pictures dropped anywhere on the page, or pasted, go to onFiles (a dropped picture never opens in the
// tab); `zone` is marked "over" while something is dragged over the page
function acceptDroppedFiles(zone, onFiles) {
  for (const ev of ["dragenter", "dragover"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const ev of ["dragleave", "dragend"]) document.addEventListener(ev, () => zone.classList.remove("over"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) onFiles(e.dataTransfer.files);
  });
  document.addEventListener("paste", (e) => {
    const files = e.clipboardData ? Array.from(e.clipboardData.files || []) : [];
    if (files.length) { e.preventDefault(); onFiles(files); }
  });
}

// The server's /health, shown in the header (model, workspace; the label page's link when there is one)
async function loadHealth() {
  const h = await api("/health");
  document.getElementById("model-info").textContent = "model: " + h.model + (h.workspace ? " · workspace: " + h.workspace : "");
  if (h.workspace) document.getElementById("nav-label").hidden = false;
  return h;
}
