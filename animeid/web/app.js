// The main page: recognise a picture (boxes + top-3 names) or draw a video's timeline.
"use strict";

const VIDEO_EXT = /\.(mp4|m4v|mkv|webm|avi|mov|flv|f4v|wmv|asf|ts|m2ts|mts|mpg|mpeg|vob|ogv|3gp|3g2)$/i;
let busy = false;
let lastUrl = null;
let limits = null;   // from /health: refuse a too large file before uploading it

// The verdict: the face's "name" (a character, or "unknown"); servers before the verdict put an
// "unknown" pseudo-candidate first, which is read as the verdict and left out of the candidates.
function isUnknown(face) {
  const top = (face.candidates || [])[0];
  return !top || face.unknown === true || face.name === "unknown" || top.unknown || top.name === null ||
    top.name === "unknown";
}

function namedCandidates(face) {
  return (face.candidates || []).filter((c) => !(c.name === null || c.name === "unknown" || c.unknown));
}

// "yuki 96%" or "unknown (closest: yuki 62%, aoba 20%)"
function verdictText(face) {
  const named = namedCandidates(face).map((c) => `${c.name} ${pct(c.p)}`).join(", ");
  if (!isUnknown(face)) return named;
  return named ? `unknown (closest: ${named})` : "unknown";
}

function handleFiles(files) {
  const file = files && files[0];
  if (!file || busy) return;
  const video = (file.type || "").startsWith("video/") || VIDEO_EXT.test(file.name || "");
  const mb = limits ? (video ? limits.video_mb : limits.upload_mb) : Infinity;
  if (file.size > mb * 1024 * 1024) {
    setStatus(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the server's limit of ${mb} MB`, "error");
    return;
  }
  if (video) runVideo(file);
  else recognise(file);
}

function showProgress(fraction) {
  const bar = document.getElementById("progress");
  if (fraction === null) { bar.hidden = true; return; }
  bar.hidden = false;
  bar.firstElementChild.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + "%";
}

async function recognise(file) {
  busy = true;
  const result = document.getElementById("result");
  result.replaceChildren();
  setStatus("Looking for faces in " + (file.name || "the pasted picture") + " ...");
  const form = new FormData();
  form.append("image", file, file.name || "pasted.png");
  try {
    const res = await api("/api/v1/recognize", { method: "POST", body: form });
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = URL.createObjectURL(file);
    renderPicture(lastUrl, res);
    const n = res.faces.length;
    setStatus(n ? `${n} face${n > 1 ? "s" : ""} in ${res.filename} (${res.width}x${res.height})`
                : `No face found in ${res.filename}.`, n ? "ok" : "");
  } catch (e) {
    setStatus(e.message, "error");
  } finally {
    busy = false;
  }
}

function renderPicture(url, res) {
  const result = document.getElementById("result");
  const stage = el("div", { class: "stage" });
  const img = el("img", { src: url, alt: res.filename, class: "picture" });
  stage.append(img);
  const list = el("ol", { class: "faces" });
  res.faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const [x0, y0, x1, y1] = face.box;
    const box = el("div", { class: "box", "data-face": i + 1 });
    box.style.left = (100 * x0 / res.width) + "%";
    box.style.top = (100 * y0 / res.height) + "%";
    box.style.width = (100 * (x1 - x0) / res.width) + "%";
    box.style.height = (100 * (y1 - y0) / res.height) + "%";
    box.style.borderColor = color;
    const unknownFace = isUnknown(face);
    const named = namedCandidates(face);
    const top = named[0];
    const tag = el("span", { class: "tag" + (y0 < 0.08 * res.height ? " inside" : ""),
                             text: `${i + 1}. ${unknownFace || !top ? "unknown" : `${top.name} ${pct(top.p)}`}` });
    tag.style.background = color;
    box.append(tag);
    stage.append(box);

    const badge = el("span", { class: "badge", text: String(i + 1) });
    badge.style.background = color;
    const cands = el("ul", { class: "cands" + (unknownFace ? " closest" : "") });
    named.forEach((c, k) => {
      const bar = el("span", { class: "pbar" });
      const fill = el("span", { class: "pfill" });
      fill.style.width = Math.round(c.p * 100) + "%";
      fill.style.background = k === 0 && !unknownFace ? color : "#adb5bd";
      bar.append(fill);
      cands.append(el("li", {},
        el("span", { class: "name", text: c.name }), bar, el("span", { class: "p", text: pct(c.p) })));
    });
    // an unknown face: the verdict first, then the characters it is closest to
    const verdict = unknownFace
      ? el("p", { class: "verdict unknown", text: "Unknown: like none of the model's characters." +
                  (named.length ? " Closest:" : "") })
      : null;
    list.append(el("li", { class: "face-card" + (unknownFace ? " is-unknown" : "") },
      el("div", { class: "face-head" }, badge, el("span", { text: `box ${x0}, ${y0} - ${x1}, ${y1}` })),
      ...(verdict ? [verdict] : []), cands));
  });
  const side = el("div", { class: "side" });
  if (!res.faces.length) {
    side.append(el("p", { class: "hint", text: "No face found." }));
    const whole = res.whole_picture;
    if (whole && whole.candidates && whole.candidates.length) {
      side.append(el("p", { class: "hint whole-guess",
        text: `If the whole picture is a face crop, it reads as: ${verdictText(whole)}.` }));
    }
  }
  side.append(list);
  result.replaceChildren(el("div", { class: "split" }, stage, side));
}

// ------------------------------------------------------------------ videos

async function runVideo(file) {
  busy = true;
  const result = document.getElementById("result");
  result.replaceChildren();
  const every = parseFloat(document.getElementById("every").value) || 2;
  const form = new FormData();
  form.append("video", file, file.name || "video");
  form.append("every", String(every));
  try {
    setStatus("Uploading " + file.name + " ...");
    showProgress(0);
    let job = await upload("/api/v1/timeline", form, (f) => { showProgress(f * 0.1); });
    while (job.status === "queued" || job.status === "running") {
      const done = job.duration ? ` ${fmtTime(job.done_s)} of ${fmtTime(job.duration)},` : "";
      setStatus(job.status === "queued" ? "Waiting for the video reader ..."
                                        : `Reading ${job.filename}:${done} ${job.frames} frames ...`);
      showProgress(0.1 + 0.9 * job.progress);
      await new Promise((r) => setTimeout(r, 500));
      job = await api("/api/v1/jobs/" + encodeURIComponent(job.id));
    }
    showProgress(null);
    if (job.status !== "done") throw new Error(job.error || "the video could not be read");
    renderTimeline(job.result);
    const names = Object.keys(job.result.characters);
    let note = `${job.result.frames.length} frames of ${job.filename}: ` +
      (names.length ? `${names.length} character${names.length > 1 ? "s" : ""}` : "nobody seen") + ".";
    if (job.result.partial) note += " Partly read: " + job.result.error + ".";
    if (job.result.truncated) note += " Only the first frames were read (frame limit).";
    setStatus(note, job.result.partial ? "error" : "ok");
  } catch (e) {
    showProgress(null);
    setStatus(e.message, "error");
  } finally {
    busy = false;
  }
}

function niceStep(span) {
  for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (span / s <= 10) return s;
  return 3600 * Math.ceil(span / 36000);
}

function renderTimeline(tl) {
  const result = document.getElementById("result");
  const chars = tl.characters || {};
  const names = Object.keys(chars).sort((a, b) =>
    (a === "unknown") - (b === "unknown") || chars[a][0].start - chars[b][0].start || a.localeCompare(b));
  const every = tl.every || 1;
  let end = tl.duration || 0;
  for (const n of names) for (const r of chars[n]) end = Math.max(end, r.end + every / 2);
  end = Math.max(end, 1);
  const W = 1000, LEFT = 190, RIGHT = 16, ROW = 30, TOP = 10, AXIS = 30;
  const H = TOP + Math.max(1, names.length) * ROW + AXIS;
  const x = (t) => LEFT + (W - LEFT - RIGHT) * Math.max(0, Math.min(end, t)) / end;
  const svg = svgEl("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img",
                             "aria-label": "who appears when" });
  const step = niceStep(end);
  for (let t = 0; t <= end + 1e-9; t += step) {
    svg.append(svgEl("line", { x1: x(t), x2: x(t), y1: TOP, y2: H - AXIS + 4, class: "grid" }));
    svg.append(svgEl("text", { x: x(t), y: H - AXIS + 18, class: "tick", "text-anchor": "middle" }, fmtTime(t)));
  }
  names.forEach((name, row) => {
    const y = TOP + row * ROW;
    const color = name === "unknown" ? "#adb5bd" : COLORS[row % COLORS.length];
    const n = chars[name].reduce((a, r) => a + r.n, 0);
    const face = (tl.thumbnails || {})[name];
    svg.append(svgEl("text", { x: LEFT - (face ? 36 : 8), y: y + ROW / 2 + 5, class: "row-name", "text-anchor": "end" },
      `${name} (${n})`));
    if (face) svg.append(svgEl("image", { href: face, x: LEFT - 31, y: y + 2, width: ROW - 4, height: ROW - 4 }));
    for (const r of chars[name]) {
      const a = x(r.start - every / 2), b = x(r.end + every / 2);
      const rect = svgEl("rect", { x: a, y: y + 4, width: Math.max(2, b - a), height: ROW - 8, rx: 3,
                                   fill: color, class: "range" });
      rect.append(svgEl("title", {}, `${name}: ${fmtTime(r.start)} - ${fmtTime(r.end)}, ${r.n} frame(s), ` +
                                      `mean p ${pct(r.mean_p)}`));
      svg.append(rect);
    }
  });
  if (!names.length) svg.append(svgEl("text", { x: W / 2, y: TOP + ROW / 2 + 5, "text-anchor": "middle", class: "tick" },
                                      "no character seen"));
  const table = el("table", { class: "ranges" },
    el("thead", {}, el("tr", {}, el("th", { text: "character" }), el("th", { text: "on screen" }),
                    el("th", { text: "frames" }), el("th", { text: "mean p" }))),
    el("tbody", {}, names.map((name) => {
      const rs = chars[name];
      const n = rs.reduce((a, r) => a + r.n, 0);
      const p = rs.reduce((a, r) => a + r.mean_p * r.n, 0) / Math.max(1, n);
      const face = (tl.thumbnails || {})[name];
      return el("tr", {}, el("td", {}, face ? el("img", { class: "face-thumb", src: face, alt: `face of ${name}`, width: 40, height: 40 }) : null,
                                       el("span", { text: name })),
        el("td", { text: rs.map((r) => r.start === r.end ? fmtTime(r.start) : `${fmtTime(r.start)}-${fmtTime(r.end)}`).join(", ") }),
        el("td", { text: String(n) }), el("td", { text: pct(p) }));
    })));
  result.replaceChildren(el("h2", { text: tl.video }), el("div", { class: "timeline-scroll" }, svg), table);
}

// ------------------------------------------------------------------ input: drop, paste, choose

function setup() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  input.addEventListener("change", () => { handleFiles(input.files); input.value = ""; });
  acceptDroppedFiles(drop, handleFiles);
  loadHealth().then((h) => { limits = h.limits || null; }).catch((e) => setStatus(e.message, "error"));
}

setup();
