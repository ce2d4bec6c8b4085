"""The pages in a real headless browser (Debian's chromium driven by Playwright, no browser download):
upload, drop and paste a real face picture and see a box and a name; a video's timeline; a bad file's
message; name a group of faces on the label page and find the names in the workspace manifest; enrol
and forget a character on the characters page.

The model and the pictures are drawn ones (``generated_model``, tests/conftest.py): nothing here
depends on real faces, so these run without ../shared/data. Faces are found by AnimeFace, named
explicitly (the drawn faces are made for it).

Screenshots go to ``.cache/e2e-screenshots/`` (or ``$ANIMEID_SCREENSHOTS``). Skipped when Playwright
or chromium is missing (``./setup.sh`` installs both where it runs as root with apt-get).
"""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright is not installed (pip install playwright)")

from animeid.dataset import CollectConfig, Workspace, collect  # noqa: E402
from animeid.predict import Recognizer  # noqa: E402
from animeid.serve import create_app, serve_in_thread  # noqa: E402
from test_timeline import face_frame, face_video, pick_faces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("ANIMEID_SCREENSHOTS", ROOT / ".cache" / "e2e-screenshots"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
#: drawn characters of ``generated_model`` whose faces it names right, also when ``collect`` crops them again
CHARS = ("akari", "kin")
DETECTOR = "animeface"


def _chromium() -> str | None:
    for name in (os.environ.get("ANIMEID_CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if name and (found := shutil.which(name)):
            return found
    return None


@pytest.fixture(scope="module")
def model(generated_model) -> Path:
    return generated_model.path


@pytest.fixture(scope="module")
def faces(model, generated_model) -> dict[str, Path]:
    rec = Recognizer.load(model)
    return {"crop": pick_faces(rec, generated_model.faces, CHARS[:1], composite=False, detector=DETECTOR)[CHARS[0]],
            **pick_faces(rec, generated_model.faces, CHARS[:2], composite=True, detector=DETECTOR)}


@pytest.fixture(scope="module")
def workspace(generated_model, tmp_path_factory) -> Path:
    """Six faces each of two characters, and one each of two more (the clustering leaves those apart)."""
    files = [f for ch in CHARS[:2] for f in generated_model.held_out(ch)] + \
            [generated_model.held_out(ch)[0] for ch in ("kuro", "midori")]
    ws = tmp_path_factory.mktemp("e2e-ws") / "ws"
    collect(files, ws, CollectConfig(workers=1, detector=DETECTOR))
    return ws


@pytest.fixture(scope="module")
def url(model, workspace):
    with serve_in_thread(create_app(model, workspace, detector=DETECTOR)) as base:
        yield base


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium found (apt-get install chromium; ./setup.sh does it when run as root)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=exe, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1200, "height": 820})
        ctx.set_default_timeout(TIMEOUT_MS)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture()
def page(browser_context):
    pg = browser_context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    yield pg, problems
    pg.close()


def _no_console_errors(problems: list[str], allowed: tuple[str, ...] = ()) -> None:
    left = [p for p in problems if not any(a in p for a in allowed)]
    assert not left, left                    # CSP violations and script errors show up here


def _shot(pg, name: str) -> Path:
    path = SHOTS / name
    pg.screenshot(path=str(path), full_page=True)
    return path


def test_upload_a_face_crop_shows_a_box_and_the_name(url, page, faces):
    pg, problems = page
    pg.goto(url + "/")
    pg.set_input_files("#file", str(faces["crop"]))
    tag = pg.wait_for_selector(".box .tag")
    assert tag.inner_text().startswith(f"1. {CHARS[0]} ")
    assert pg.inner_text(".face-card .cands li:first-child .name") == CHARS[0]
    assert pg.locator(".face-card .cands li").count() == 3
    assert "1 face in" in pg.inner_text("#status")
    _shot(pg, "recognise-face-crop.png")
    _no_console_errors(problems)


def test_dropped_screenshot_gets_a_box_on_the_face_only(url, page, faces):
    from io import BytesIO

    from PIL import Image

    pg, problems = page
    buf = BytesIO()
    Image.fromarray(face_frame(faces[CHARS[1]])).save(buf, format="PNG")
    pg.goto(url + "/")
    pg.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "screenshot.png", { type: "image/png" }));
        document.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", base64.b64encode(buf.getvalue()).decode())
    pg.wait_for_selector(".box .tag")
    assert CHARS[1] in pg.inner_text(".box .tag")
    img = pg.locator(".stage .picture").bounding_box()
    box = pg.locator(".box").bounding_box()
    assert box["width"] < 0.5 * img["width"] and box["height"] < 0.7 * img["height"]
    assert img["x"] < box["x"] and box["x"] + box["width"] < img["x"] + img["width"]
    _shot(pg, "recognise-screenshot.png")
    _no_console_errors(problems)


def test_pasted_picture_is_recognised(url, page, faces):
    pg, problems = page
    pg.goto(url + "/")
    pg.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "", { type: "image/jpeg" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    }""", base64.b64encode(faces["crop"].read_bytes()).decode())
    pg.wait_for_selector(".box .tag")
    assert pg.inner_text(".face-card .cands li:first-child .name") == CHARS[0]
    _no_console_errors(problems)


def test_a_file_that_is_no_picture_shows_the_servers_message(url, page, tmp_path):
    pg, problems = page
    bad = tmp_path / "holiday.png"
    bad.write_text("this is not a picture")
    pg.goto(url + "/")
    pg.set_input_files("#file", str(bad))
    pg.wait_for_selector("#status.error")
    assert "holiday.png: not a readable picture" in pg.inner_text("#status")
    _shot(pg, "error-not-a-picture.png")
    _no_console_errors(problems, allowed=("400",))      # the failed request itself is logged by the browser


def test_video_gives_a_timeline_with_progress(url, page, faces, tmp_path):
    pg, problems = page
    a, h = faces[CHARS[0]], faces[CHARS[1]]
    video = face_video(tmp_path / "episode.mp4", [a] * 8 + [None] * 4 + [h] * 8 + [None] * 2 + [a] * 4, fps=2)
    pg.goto(url + "/")
    pg.fill("#every", "1")
    pg.set_input_files("#file", str(video))
    pg.wait_for_selector("svg.timeline rect.range", timeout=120_000)
    rows = pg.locator("svg.timeline .row-name").all_text_contents()
    assert [r.split(" (")[0] for r in rows] == [CHARS[0], CHARS[1]]
    assert pg.locator("svg.timeline rect.range").count() == 3        # a twice, h once
    assert "13 frames of episode.mp4: 2 characters" in pg.inner_text("#status")
    assert pg.locator("table.ranges tbody tr").count() == 2
    # a face per character, cut from the video, beside its row and in the table (and loaded: CSP allows it)
    assert pg.locator("svg.timeline image").count() == 2
    assert pg.evaluate("[...document.querySelectorAll('table.ranges img.face-thumb')]"
                       ".map(i => i.complete && i.naturalWidth)") == [64, 64]
    _shot(pg, "video-timeline.png")
    _no_console_errors(problems)


def test_docs_page_renders_the_openapi_document_offline(url, page):
    pg, problems = page
    pg.goto(url + "/docs")
    pg.wait_for_selector(".op")
    paths = pg.locator(".op h3 code").all_text_contents()
    for route in ("/api/v1/recognize", "/api/v1/enroll", "/api/v1/timeline", "/api/v1/jobs/{job_id}", "/health"):
        assert route in paths
    _shot(pg, "docs.png")
    _no_console_errors(problems)


def test_label_page_names_a_group_and_single_faces(url, page, workspace):
    pg, problems = page
    with Workspace(workspace) as ws:
        n = len(ws.faces(labeled=False))
    pg.goto(url + "/label")
    pg.wait_for_selector(".group .thumb img")
    pg.wait_for_function("() => Array.from(document.querySelectorAll('.thumb img'))"
                         ".every((i) => i.complete && i.naturalWidth > 0)")          # every crop was served
    assert f"{n} unlabeled faces" in pg.inner_text("#status")
    # the faces left apart are two characters: each is a card of its own, not a nameable group
    apart = pg.locator(".group.left-apart")
    assert apart.count() == 2
    for k in range(2):
        assert apart.nth(k).locator(".thumb").count() == 1 and "left apart" in apart.nth(k).locator("h3").inner_text()
    _shot(pg, "label-before.png")

    # the first group: keep the suggestion, press Enter
    first = pg.locator(".group").first
    size = first.locator(".thumb").count()
    suggestion = first.locator("input.name").input_value()
    assert suggestion in CHARS[:2]
    first.locator("input.name").press("Enter")
    pg.wait_for_selector(".group.done .named")
    assert f"{size} face" in pg.inner_text("#status")

    # the second group: leave one face out, type a new name
    second = pg.locator(".group:not(.done)").first
    size2 = second.locator(".thumb").count()
    left_out = int(second.locator(".thumb").first.get_attribute("data-id"))
    second.locator(".thumb").first.click()
    assert "Name" in second.locator(".apply").inner_text() and "of" in second.locator(".apply").inner_text()
    second.locator("input.name").fill("Hifumi (test)")
    second.locator("input.name").press("Enter")
    pg.wait_for_function("() => /named Hifumi/.test(document.getElementById('status').textContent)")
    assert second.locator(".thumb").count() == 1                      # the face left out stays
    _shot(pg, "label-after.png")

    with Workspace(workspace) as ws:
        rows = ws.faces()
    by_label: dict = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    assert len(by_label[suggestion]) == size
    assert len(by_label["Hifumi (test)"]) == size2 - 1
    assert all(r["file"].startswith("Hifumi (test)/") for r in by_label["Hifumi (test)"])
    assert left_out in [r["id"] for r in by_label[None]] and len(by_label[None]) == n - size - (size2 - 1)
    assert (workspace / "Hifumi (test)").is_dir()
    _no_console_errors(problems)


def test_characters_page_enrols_and_forgets_a_character(model, generated_model, page, tmp_path):
    """Enrol a character from 3 face pictures on the characters page (a bad name first: its message
    shows), see it listed and saved to the model file, forget it (after the confirm), see it gone."""
    pg, problems = page
    name = "Sakura Nene (test)"
    pictures = [str(f) for f in generated_model.held_out(generated_model.strangers[0])[-3:]]  # not in the model
    mf = tmp_path / "copy.animeid"
    shutil.copy(model, mf)
    with serve_in_thread(create_app(mf, save_enrollments=True, detector=DETECTOR)) as base:
        pg.goto(base + "/characters")
        pg.wait_for_selector("#char-table tbody tr")
        before = pg.locator("#char-table tbody th").all_text_contents()
        assert before == Recognizer.load(mf).labels and name not in before
        assert "written to the model file, copy.animeid" in pg.inner_text("#persist")

        pg.click("#enroll-submit")                               # nothing typed: said on the page, nothing sent
        assert pg.inner_text("#status.error") == "Type the character's name first."
        bad = tmp_path / "holiday.png"
        bad.write_text("this is not a picture")
        pg.set_input_files("#enroll-files", str(bad))
        pg.fill("#enroll-name", name)
        pg.click("#enroll-submit")
        pg.wait_for_function("() => /holiday/.test(document.getElementById('status').textContent)")
        assert "holiday.png: not a readable picture" in pg.inner_text("#status.error")
        pg.click("#chosen li button[aria-label='Remove holiday.png']")
        pg.set_input_files("#enroll-files", pictures)
        assert pg.locator("#chosen li").count() == 3
        pg.fill("#enroll-name", "unknown")                       # reserved: the server's reason shows
        pg.click("#enroll-submit")
        pg.wait_for_selector("#status.error")
        assert pg.inner_text("#status") == "\u201cunknown\u201d was not enrolled: character name 'unknown' is reserved"
        assert pg.locator("#chosen li").count() == 3             # the pictures stay for the next try
        _shot(pg, "characters-refused.png")

        pg.fill("#enroll-name", name)
        pg.click("#enroll-submit")
        pg.wait_for_function("() => /Enrolled/.test(document.getElementById('status').textContent)")
        status = pg.inner_text("#status")
        assert f"Enrolled \u201c{name}\u201d, a new character, from 3 pictures." in status
        assert "Saved to copy.animeid." in status
        row = pg.locator(f"#char-table tbody tr[data-name='{name}']")
        assert row.locator(".kind").inner_text() == "enrolled" and "3 enrolled pictures" in row.inner_text()
        assert pg.locator("#chosen li").count() == 0 and pg.input_value("#enroll-name") == ""
        assert name in Recognizer.load(mf).labels
        # every character has its face beside its name, the new one its first enrolled picture
        pg.wait_for_function("() => [...document.querySelectorAll('#char-table img.face-thumb')]"
                             ".every(i => i.complete && i.naturalWidth === 64)")
        assert pg.locator("#char-table img.face-thumb").count() == pg.locator("#char-table tbody tr").count()
        _shot(pg, "characters-page.png")

        asked: list[str] = []

        def accept(dialog):
            asked.append(dialog.message)
            dialog.accept()

        pg.once("dialog", accept)
        row.locator("button.forget").click()
        pg.wait_for_function("() => /Forgot/.test(document.getElementById('status').textContent)")
        assert asked and name in asked[0]
        assert pg.locator(f"#char-table tbody tr[data-name='{name}']").count() == 0
        assert pg.locator("#char-table tbody th").all_text_contents() == before
        assert name not in Recognizer.load(mf).labels
    _no_console_errors(problems, allowed=("400",))      # the refused enrolment is logged by the browser


@pytest.mark.parametrize("path", ["/", "/characters", "/label", "/docs", "/no-such-page"])
def test_every_page_fits_a_phone_screen(url, browser_context, path):
    """At 390x844 (a phone) no page is wider than the screen, the header's links and the model name
    stay inside the dark bar, and the label page shows no pager when there is one page."""
    pg = browser_context.new_page()
    try:
        pg.set_viewport_size({"width": 390, "height": 844})
        pg.goto(url + path)
        pg.wait_for_load_state("networkidle")
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        bar = pg.locator("header.bar").bounding_box()
        for sel in ("header.bar nav a", "header.bar .model"):
            for box in [pg.locator(sel).nth(i).bounding_box() for i in range(pg.locator(sel).count())]:
                if box and box["width"]:                  # hidden ones have no box
                    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5
                    assert bar["y"] <= box["y"] and box["y"] + box["height"] <= bar["y"] + bar["height"] + 0.5
        if path == "/label":
            assert pg.locator("#pager").is_hidden()
        if path == "/characters":                 # the table fits too: no column cut off behind a scroll
            pg.wait_for_selector("#char-table tbody tr img.face-thumb")
            assert pg.evaluate("(() => { const t = document.querySelector('#char-table');"
                               " return t.scrollWidth <= t.clientWidth + 1; })()")
        if path == "/no-such-page":
            assert pg.locator("h1").inner_text() == "Not found"
        _shot(pg, f"phone{path.replace('/', '_') or '_index'}.png")
    finally:
        pg.close()
