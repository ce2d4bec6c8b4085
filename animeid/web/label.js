// The label page: unlabeled faces of the workspace in groups; name a group (or some of its faces) with Enter.
"use strict";

let page = 0;
let pages = 0;
const known = new Set();

function addNames(names) {
  const list = document.getElementById("names");
  for (const n of names) {
    if (!n || n === "unknown" || known.has(n)) continue;
    known.add(n);
    list.append(el("option", { value: n }));
  }
}

async function loadInfo() {
  const ws = await api("/api/v1/workspace");
  document.getElementById("ws-info").textContent =
    `workspace ${ws.name}: ${ws.unlabeled} unlabeled, ${ws.labeled} labelled, ${Object.keys(ws.characters).length} characters`;
  addNames(Object.keys(ws.characters));
  return ws;
}

function cards() {
  return Array.from(document.querySelectorAll(".group:not(.done):not(.skipped)"));
}

function focusNext(card) {
  const all = cards();
  const next = all.find((c) => c !== card && (card.compareDocumentPosition(c) & Node.DOCUMENT_POSITION_FOLLOWING)) || all.find((c) => c !== card);
  if (next) {
    const input = next.querySelector("input.name");
    input.focus();
    input.select();
    next.scrollIntoView({ block: "nearest" });
  }
}

function selectedIds(card) {
  return Array.from(card.querySelectorAll(".thumb[aria-pressed='true']")).map((b) => Number(b.dataset.id));
}

function updateCount(card) {
  const n = selectedIds(card).length;
  const total = card.querySelectorAll(".thumb").length;
  card.querySelector(".apply").textContent = n === total ? `Name all ${total}` : `Name ${n} of ${total}`;
  card.querySelector(".apply").disabled = n === 0;
}

async function applyName(card) {
  const input = card.querySelector("input.name");
  const name = input.value.trim();
  if (!name) { setStatus("Type a character name first.", "error"); input.focus(); return; }
  const ids = selectedIds(card);
  if (!ids.length) { setStatus("Select at least one face (click it).", "error"); return; }
  try {
    const res = await api("/api/v1/workspace/label", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids, name }) });
    for (const id of ids) card.querySelector(`.thumb[data-id='${id}']`).remove();
    addNames([res.name]);
    setStatus(`${res.labelled} face${res.labelled > 1 ? "s" : ""} named ${res.name}; ${res.unlabeled} unlabeled left.`, "ok");
    if (!card.querySelector(".thumb")) {
      card.classList.add("done");
      card.querySelector("form").replaceWith(el("p", { class: "named", text: `✓ named ${res.name}` }));
      focusNext(card);
    } else {
      const left = card.querySelectorAll(".thumb").length;
      card.querySelector(".count").textContent = ` · ${left} face${left > 1 ? "s" : ""} left`;
      card.querySelectorAll(".thumb").forEach((b) => b.setAttribute("aria-pressed", "true"));
      updateCount(card);
      input.select();
    }
    loadInfo().catch(() => {});
  } catch (e) {
    document.getElementById("pager").hidden = true;
    setStatus(e.message, "error");
  }
}

function renderGroup(g, k) {
  // a face the clustering left apart is like no other face: a group of its own, named on its own
  const card = el("article", { class: g.left_apart ? "group left-apart" : "group", "data-key": g.key });
  const s = g.suggestion;
  const title = g.left_apart ? `Face ${g.faces[0].id}, left apart` : `Group ${k + 1}`;
  card.append(el("h3", {}, title, el("span", { class: "count", text: ` · ${g.faces.length} face${g.faces.length > 1 ? "s" : ""}` }),
    s ? el("span", { class: "suggest", text: ` · probably ${s.name} (${pct(s.p)})` }) : null));
  const thumbs = el("div", { class: "thumbs" });
  for (const f of g.faces) {
    const b = el("button", { type: "button", class: "thumb", "aria-pressed": "true", "data-id": f.id,
                             title: f.guess ? `face ${f.id}: ${f.guess.name} ${pct(f.guess.p)}` : `face ${f.id}` },
      el("img", { src: f.url, alt: `face ${f.id}`, loading: "lazy", width: 96, height: 96 }));
    b.addEventListener("click", () => {
      b.setAttribute("aria-pressed", b.getAttribute("aria-pressed") === "true" ? "false" : "true");
      updateCount(card);
    });
    thumbs.append(b);
  }
  const input = el("input", { class: "name", type: "text", list: "names", placeholder: "character name",
                              value: s && s.name !== "unknown" && s.name !== "?" ? s.name : "", "aria-label": "character name",
                              autocomplete: "off", spellcheck: "false" });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); focusNext(card); }
  });
  const form = el("form", { class: "name-form" }, input,
    el("button", { type: "submit", class: "apply button" }),
    el("button", { type: "button", class: "link", text: "all / none", onclick: () => {
      const on = selectedIds(card).length === 0;
      card.querySelectorAll(".thumb").forEach((b) => b.setAttribute("aria-pressed", on ? "true" : "false"));
      updateCount(card);
    } }),
    el("button", { type: "button", class: "link", text: "skip", onclick: () => { card.classList.add("skipped"); focusNext(card); } }));
  form.addEventListener("submit", (e) => { e.preventDefault(); applyName(card); });
  card.append(thumbs, form);
  updateCount(card);
  return card;
}

async function loadPage() {
  setStatus("Grouping the unlabeled faces ...");
  const box = document.getElementById("groups");
  try {
    const data = await api("/api/v1/workspace/groups?page=" + page);
    pages = data.pages;
    let n = 0;                     // groups are numbered; faces left apart are not a group
    box.replaceChildren(...data.groups.map((g) => renderGroup(g, g.left_apart ? -1 : n++)));
    document.getElementById("page-info").textContent = pages ? `page ${page + 1} of ${pages}` : "";
    document.getElementById("prev").disabled = page <= 0;
    document.getElementById("next").disabled = page + 1 >= pages;
    document.getElementById("pager").hidden = pages <= 1;    // one page (or none): nothing to turn
    for (const g of data.groups) if (g.suggestion) addNames([g.suggestion.name]);
    setStatus(data.unlabeled ? `${data.unlabeled} unlabeled faces (grouped by ${data.grouping}).`
                             : "Every face of the workspace has a name.", "ok");
    const first = box.querySelector("input.name");
    if (first) first.focus();
  } catch (e) {
    setStatus(e.message, "error");
  }
}

function setup() {
  document.getElementById("prev").addEventListener("click", () => { if (page > 0) { page--; loadPage(); } });
  document.getElementById("next").addEventListener("click", () => { if (page + 1 < pages) { page++; loadPage(); } });
  api("/api/v1/characters").then((c) => addNames(c.characters)).catch(() => {});
  loadInfo().then(loadPage).catch((e) => {
    document.getElementById("pager").hidden = true;        // no workspace: no pages
    setStatus(e.message, "error");
  });
}

setup();
