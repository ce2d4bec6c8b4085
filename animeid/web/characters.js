// The characters page: the model's characters (trained and enrolled); enrol one from a few pictures, forget one.
"use strict";

let info = null;      // the last GET /api/v1/characters answer
let limits = null;    // from /health: refuse too many or too large pictures before uploading them
let chosen = [];      // [{ file, url }] pictures waiting to be enrolled
let busy = false;

function q(name) { return "\u201c" + name + "\u201d"; }

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// the server's reason, led by what failed ("Cannot enrol 'x': ..." already says it)
function failure(verb, name, e) {
  const msg = e.message || String(e);
  if (msg.startsWith(`cannot ${verb} `)) return msg.charAt(0).toUpperCase() + msg.slice(1);
  return `${q(name)} was not ${verb === "enroll" ? "enrolled" : "forgotten"}: ${msg}`;
}

function savedNote(res) {
  if (res.saved) return { text: `Saved to ${info ? info.model : "the model file"}.`, kind: "ok" };
  if (res.save_error) return { text: `Not saved to the model file (${res.save_error}); the change holds until the server stops.`, kind: "error" };
  return { text: "Kept in the server's memory only: it is lost when the server stops " +
                 "(start it with --save-enrollments to write changes to the model file).", kind: "ok" };
}

// ------------------------------------------------------------------ the list

// refreshes the list; false (and a message on the page) when the server cannot be asked
async function loadCharacters(fresh) {
  try {
    info = await api("/api/v1/characters");
  } catch (e) {
    setStatus("Cannot list the model's characters: " + e.message, "error");
    return false;
  }
  renderCharacters(fresh);
  return true;
}

function renderCharacters(fresh) {
  const details = info.details || info.characters.map((name) => ({ name, trained: true, enrolled_pictures: 0 }));
  const nEnrolled = details.filter((d) => d.enrolled_pictures > 0 && !d.trained).length;
  document.getElementById("list-title").textContent =
    `Characters of the model (${details.length}${nEnrolled ? `, ${nEnrolled} enrolled` : ""})`;
  document.getElementById("persist").textContent = info.saves_enrollments
    ? `Enrolments and forgets are written to the model file, ${info.model}.`
    : `Enrolments and forgets are kept in this server's memory until it stops; start it with ` +
      `--save-enrollments to write them to ${info.model}.`;

  const canForget = info.can_forget !== false;
  const rows = details.map((d) => {
    const kind = d.trained
      ? el("span", { class: "kind trained", text: d.enrolled_pictures ? "trained + enrolled" : "trained" })
      : el("span", { class: "kind enrolled", text: "enrolled" });
    const parts = [];
    if (d.trained && d.trained_faces !== null && d.trained_faces !== undefined) parts.push(plural(d.trained_faces, "training face"));
    if (d.enrolled_pictures) parts.push(plural(d.enrolled_pictures, "enrolled picture"));
    const forget = canForget
      ? el("button", { type: "button", class: "forget", "data-name": d.name, "aria-label": `Forget ${d.name}`,
                       text: "Forget", onclick: () => forgetCharacter(d) })
      : null;
    return el("tr", { class: (d.trained ? "" : "is-enrolled") + (d.name === fresh ? " fresh" : ""), "data-name": d.name },
      el("th", { scope: "row", class: "char-name" },
        d.thumbnail ? el("img", { class: "face-thumb", src: d.thumbnail, alt: `face of ${d.name}`, width: 40, height: 40 })
                    : el("span", { class: "face-thumb none", "aria-hidden": "true", text: d.name.charAt(0) }),
        el("span", { text: d.name })), el("td", {}, kind),
      el("td", { class: "count", text: parts.join(" + ") || "\u2013" }), el("td", { class: "act" }, forget));
  });
  document.querySelector("#char-table tbody").replaceChildren(...rows);

  const forgotten = document.getElementById("forgotten");
  const gone = info.forgotten || [];
  forgotten.hidden = !gone.length;
  forgotten.textContent = gone.length
    ? `Forgotten trained characters: ${gone.join(", ")} (enrol pictures under the same name to bring one back).` : "";

  const names = document.getElementById("names");
  names.replaceChildren(...details.map((d) => el("option", { value: d.name })));

  const form = document.getElementById("enroll-form");
  if (info.can_enroll === false) {
    for (const c of form.querySelectorAll("input, button")) c.disabled = true;
    setStatus("This model cannot enrol characters (its animeid has no enrolment); retrain it with `animeid train` " +
              "on a dataset that includes the character.", "error");
  }
}

async function forgetCharacter(d) {
  if (busy) return;
  const what = d.trained
    ? "The model will never answer it again (enrol pictures under the same name to bring it back)."
    : `Its ${plural(d.enrolled_pictures, "enrolled picture")} will be dropped.`;
  if (!window.confirm(`Forget ${q(d.name)}?\n\n${what}`)) return;
  busy = true;
  const form = new FormData();
  form.append("name", d.name);
  setStatus(`Forgetting ${q(d.name)} ...`);
  try {
    const res = await api("/api/v1/forget", { method: "POST", body: form });
    const note = savedNote(res);
    if (await loadCharacters()) setStatus(`Forgot ${q(res.name)}. ${note.text}`, note.kind);
  } catch (e) {
    setStatus(failure("forget", d.name, e), "error");
  } finally {
    busy = false;
  }
}

// ------------------------------------------------------------------ the pictures to enrol

function renderChosen() {
  const list = document.getElementById("chosen");
  list.replaceChildren(...chosen.map((c, i) => el("li", {},
    el("img", { src: c.url, alt: "", width: 64, height: 64 }),
    el("span", { class: "file-name", text: c.file.name || `pasted picture ${i + 1}` }),
    el("span", { class: "hint small", text: (c.file.size / 1024).toFixed(0) + " KB" }),
    el("button", { type: "button", class: "link", "aria-label": `Remove ${c.file.name || "picture " + (i + 1)}`,
                   text: "remove", onclick: () => { URL.revokeObjectURL(c.url); chosen.splice(i, 1); renderChosen(); } }))));
  document.getElementById("enroll-clear").hidden = !chosen.length;
  document.getElementById("files-hint").textContent = chosen.length
    ? `${plural(chosen.length, "picture")} chosen; drop or choose more to add them.`
    : "3 to 5 pictures of the face work well.";
}

function addFiles(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  chosen.push(...list.map((file) => ({ file, url: URL.createObjectURL(file) })));
  renderChosen();
  setStatus("");
}

function clearChosen() {
  for (const c of chosen) URL.revokeObjectURL(c.url);
  chosen = [];
  renderChosen();
}

async function enroll(ev) {
  ev.preventDefault();
  if (busy) return;
  const nameInput = document.getElementById("enroll-name");
  const name = nameInput.value.trim();
  if (!name) { setStatus("Type the character's name first.", "error"); nameInput.focus(); return; }
  if (!chosen.length) { setStatus("Choose or drop at least one picture of the character's face.", "error"); return; }
  if (limits && chosen.length > limits.max_images) {
    setStatus(`${chosen.length} pictures chosen; the server takes at most ${limits.max_images} at a time.`, "error");
    return;
  }
  const bytes = chosen.reduce((a, c) => a + c.file.size, 0);
  if (limits && bytes > limits.upload_mb * 1048576) {
    setStatus(`The pictures come to ${(bytes / 1048576).toFixed(1)} MB, over the server's limit of ${limits.upload_mb} MB.`, "error");
    return;
  }
  const form = new FormData();
  form.append("name", name);
  chosen.forEach((c, i) => form.append("image", c.file, c.file.name || `pasted-${i + 1}.png`));
  const button = document.getElementById("enroll-submit");
  busy = true;
  button.disabled = true;
  setStatus(`Enrolling ${q(name)} from ${plural(chosen.length, "picture")} ...`);
  try {
    const res = await api("/api/v1/enroll", { method: "POST", body: form });
    const r = res.result || {};
    const used = r.added !== undefined ? r.added : res.images;
    const text = r.new === false
      ? `Added ${plural(used, "picture")} to ${q(res.name)}, a character the model already knew` +
        (r.faces !== undefined ? ` (${plural(r.faces, "enrolled picture")} now).` : ".")
      : `Enrolled ${q(res.name)}, a new character, from ${plural(used, "picture")}.`;
    const note = savedNote(res);
    clearChosen();
    nameInput.value = "";
    if (await loadCharacters(res.name)) setStatus(text + " " + note.text, note.kind);
  } catch (e) {
    setStatus(failure("enroll", name, e), "error");
  } finally {
    busy = false;
    button.disabled = info ? info.can_enroll === false : false;
  }
}

// ------------------------------------------------------------------ set up

function setup() {
  const drop = document.getElementById("enroll-drop");
  const input = document.getElementById("enroll-files");
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  document.getElementById("enroll-form").addEventListener("submit", enroll);
  document.getElementById("enroll-clear").addEventListener("click", clearChosen);
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  // a picture dropped anywhere on the page joins the pictures to enrol
  acceptDroppedFiles(drop, addFiles);
  loadHealth().then((h) => { limits = h.limits || null; }).catch((e) => setStatus(e.message, "error"));
  loadCharacters();
}

setup();
