"""The web app: API answers equal the library's, concurrency on a real server, bad and hostile
input (each a 4xx JSON error, the server stays up, nothing written outside the workspace and the
upload folder), video timelines as jobs, the label flow updating the workspace manifest.

Two clients: FastAPI's TestClient (in-process) and a real uvicorn server on 127.0.0.1 (a free
port, in a thread) spoken to with urllib / http.client.

Nothing here depends on real faces: the model and the pictures are drawn ones (``generated_model``,
tests/conftest.py), so these tests run without ../shared/data. Faces are found by AnimeFace, named
explicitly (the drawn faces are made for it).
"""
from __future__ import annotations

import concurrent.futures as cf
import http.client
import io
import json
import os
import struct
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from animeid.dataset import CollectConfig, Workspace, collect  # noqa: E402
from animeid.predict import Recognizer  # noqa: E402
from animeid.serve import create_app, encode_multipart, serve_in_thread  # noqa: E402
from test_timeline import face_frame, face_video, pick_faces  # noqa: E402

MB = 1024 * 1024
#: drawn characters of ``generated_model`` whose faces it names right, also when ``collect`` crops them again
CHARS = ("akari", "kin", "kuro")
DETECTOR = "animeface"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model(generated_model) -> Path:
    return generated_model.path


@pytest.fixture(scope="module")
def rec(model) -> Recognizer:
    return Recognizer.load(model)


@pytest.fixture(scope="module")
def faces(rec, generated_model) -> dict[str, Path]:
    """A face crop (JPEG) per character that the library names right (as a crop)."""
    return pick_faces(rec, generated_model.faces, CHARS, composite=False, detector=DETECTOR)


@pytest.fixture(scope="module")
def screenshot_faces(rec, generated_model) -> dict[str, Path]:
    return pick_faces(rec, generated_model.faces, CHARS[:2], composite=True, detector=DETECTOR)


@pytest.fixture()
def workspace(generated_model, tmp_path) -> Path:
    """A workspace with about 12 unlabeled faces of two characters, collected from crops the model did not see."""
    files = [f for ch in CHARS[:2] for f in generated_model.held_out(ch)]
    ws = tmp_path / "ws"
    s = collect(files, ws, CollectConfig(workers=1, detector=DETECTOR))
    assert s.faces >= 10, s
    return ws


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    """A real server (no workspace) on 127.0.0.1 with a 2 MB upload limit and a private upload folder."""
    tmp = tmp_path_factory.mktemp("srv-tmp")
    app = create_app(model, max_upload_mb=2, max_video_mb=4, tmp_dir=tmp, detector=DETECTOR)
    with serve_in_thread(app) as url:
        yield url, tmp, app
    assert not list(tmp.iterdir()), "the upload folder is removed at shutdown"


def _test_client():
    """FastAPI's TestClient; it needs httpx2 (pinned in requirements.lock), else the test skips."""
    try:
        import httpx2  # noqa: F401
    except ImportError:
        pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx2 (requirements.lock); "
                                            "the real-server tests run without it")
    from fastapi.testclient import TestClient

    return TestClient


def _request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
             timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post_files(url: str, parts, **query) -> tuple[int, dict]:
    body, ctype = encode_multipart(parts)
    q = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    return _request(url + q, "POST", body, {"Content-Type": ctype})


def _image_part(path: Path, name: str | None = None, field: str = "image"):
    return (field, name or path.name, path.read_bytes(), "image/jpeg")


def _healthy(url: str) -> None:
    status, body = _request(url + "/health")
    assert status == 200 and body["status"] == "ok"


def _png(w: int, h: int, rows: int = 1, mode_byte: int = 0) -> bytes:
    """A PNG whose header says w x h (grey, 8 bit) with only ``rows`` rows of zero data: tiny on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * (rows * (w + 1)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, mode_byte, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _bomb_png() -> bytes:
    """A real decompression bomb: 8000 x 8000 black pixels (64 Mpx) in ~60 KB."""
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


# --------------------------------------------------------------------------- recognition (TestClient)

def test_recognize_a_face_equals_the_library(model, rec, faces):
    from animeid.predict import PredictConfig

    TestClient = _test_client()

    with TestClient(create_app(model, detector=DETECTOR)) as c:
        for ch, f in faces.items():
            r = c.post("/api/v1/recognize", files={"image": (f.name, f.read_bytes(), "image/jpeg")})
            assert r.status_code == 200, r.text
            body = r.json()
            lib = rec.predict(f, PredictConfig(detector=DETECTOR))
            assert body["faces"] == lib["faces"]
            assert body["faces"][0]["candidates"][0]["name"] == ch
            assert len(body["faces"][0]["candidates"]) == 3
            assert (body["filename"], body["width"], body["height"]) == (f.name, 96, 96)
            # one shape for one picture or several: `results` always (the top-level fields stay for old clients)
            assert body["results"] == [{k: v for k, v in body.items() if k != "results"}]
        # options: top, detect
        f = faces[CHARS[0]]
        r = c.post("/api/v1/recognize?top=5&detect=never", files={"image": (f.name, f.read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and len(r.json()["faces"][0]["candidates"]) == 5
        assert r.json()["faces"][0]["box"] == [0, 0, 96, 96]
        # the same options as form fields beside the picture (a form field wins over the query)
        r = c.post("/api/v1/recognize?top=2", data={"top": "4", "detect": "never"},
                   files={"image": (f.name, f.read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and len(r.json()["faces"][0]["candidates"]) == 4
        assert r.json()["faces"][0]["box"] == [0, 0, 96, 96]
        r = c.post("/api/v1/recognize?flip=always", data={"flip": "never"},
                   files={"image": (f.name, f.read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.json()["faces"][0]["candidates"][0]["name"] == CHARS[0]
        for field, bad in (("top", "0"), ("threshold", "5"), ("unknown_threshold", "-0.5"), ("detect", "x"),
                           ("flip", "sometimes")):
            r = c.post("/api/v1/recognize", data={field: bad}, files={"image": (f.name, f.read_bytes(), "image/jpeg")})
            assert r.status_code == 422, (field, r.text)


def test_several_images_give_results_in_order(model, faces):
    TestClient = _test_client()

    names = list(faces)
    with TestClient(create_app(model, detector=DETECTOR)) as c:
        r = c.post("/api/v1/recognize",
                   files=[("image", (faces[n].name, faces[n].read_bytes(), "image/jpeg")) for n in names])
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["faces"][0]["candidates"][0]["name"] for x in results] == names


def test_screenshot_gets_a_box_around_the_face(model, rec, screenshot_faces):
    TestClient = _test_client()

    ch, f = next(iter(screenshot_faces.items()))
    buf = io.BytesIO()
    Image.fromarray(face_frame(f)).save(buf, format="PNG")
    with TestClient(create_app(model, detector=DETECTOR)) as c:
        r = c.post("/api/v1/recognize", files={"image": ("shot.png", buf.getvalue(), "image/png")})
    body = r.json()
    assert (body["width"], body["height"]) == (640, 360) and len(body["faces"]) == 1
    x0, y0, x1, y1 = body["faces"][0]["box"]
    assert 200 <= x0 < x1 <= 440 and 60 <= y0 < y1 <= 300          # inside the pasted 180 px face
    assert body["faces"][0]["candidates"][0]["name"] == ch


def test_pages_docs_characters_health(model, rec):
    TestClient = _test_client()

    with TestClient(create_app(model, detector=DETECTOR)) as c:
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["model"] == model.name and h["model_loaded"] is False  # lazy
        chars = c.get("/api/v1/characters").json()
        assert chars["characters"] == rec.labels and chars["count"] == 8
        assert c.get("/health").json()["model_loaded"] is True
        spec = c.get("/openapi.json").json()
        for route in ("/api/v1/recognize", "/api/v1/enroll", "/api/v1/forget", "/api/v1/characters", "/health",
                      "/api/v1/timeline", "/api/v1/jobs/{job_id}", "/api/v1/workspace/label"):
            assert route in spec["paths"], route
        for page, marker in (("/", "app.js"), ("/label", "label.js"), ("/docs", "docs.js")):
            r = c.get(page)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and marker in r.text
            assert "default-src 'self'" in r.headers["content-security-policy"]
        for name in ("app.js", "label.js", "docs.js", "common.js", "style.css", "icon.svg"):
            assert c.get(f"/static/{name}").status_code == 200
    # everything the pages load is local: no outside URL in the web files (the SVG namespace aside)
    from animeid.serve import WEB_DIR

    for f in WEB_DIR.iterdir():
        text = f.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f


def test_characters_page_and_the_json_it_needs(model, rec, faces, tmp_path):
    """The characters page is served with its form, and GET /api/v1/characters says per character what
    the page lists: trained or enrolled, how many pictures, forgotten ones, where changes go."""
    import shutil

    TestClient = _test_client()
    with TestClient(create_app(model, detector=DETECTOR)) as c:
        r = c.get("/characters")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        for marker in ('id="enroll-form"', 'id="enroll-name"', 'type="file" id="enroll-files"', "multiple",
                       'id="char-table"', "characters.js", 'href="/characters" aria-current="page"'):
            assert marker in r.text, marker
        assert c.get("/static/characters.js").status_code == 200
        for page in ("/", "/label", "/docs"):
            assert 'href="/characters"' in c.get(page).text, page      # in the shared navigation

        chars = c.get("/api/v1/characters").json()
        assert chars["characters"] == rec.labels and chars["can_enroll"] is True and chars["can_forget"] is True
        assert chars["saves_enrollments"] is False and chars["model"] == model.name and chars["forgotten"] == []
        assert [d["name"] for d in chars["details"]] == rec.labels
        assert all(d["trained"] and 0 < d["trained_faces"] <= 16 and d["enrolled_pictures"] == 0
                   for d in chars["details"])

        crop = [("image", (f.name, f.read_bytes(), "image/jpeg")) for f in (faces[CHARS[0]], faces[CHARS[1]])]
        assert c.post("/api/v1/enroll", data={"name": "newcomer"}, files=crop).status_code == 200
        assert c.post("/api/v1/enroll", data={"name": CHARS[1]}, files=crop[:1]).status_code == 200
        assert c.post("/api/v1/forget", data={"name": CHARS[2]}).status_code == 200
        chars = c.get("/api/v1/characters").json()
        by = {d["name"]: d for d in chars["details"]}
        assert [d["name"] for d in chars["details"]] == chars["characters"] and chars["characters"][-1] == "newcomer"
        assert by["newcomer"] == {"name": "newcomer", "trained": False, "trained_faces": None, "enrolled_pictures": 2,
                                  "thumbnail": "/api/v1/characters/newcomer/thumbnail"}
        assert by[CHARS[1]]["trained"] and by[CHARS[1]]["enrolled_pictures"] == 1
        assert CHARS[2] not in by and chars["forgotten"] == [CHARS[2]]
        # forget takes JSON too (as the label route does); a missing name is a 422 naming the field
        r = c.post("/api/v1/forget", json={"name": "newcomer"})
        assert r.status_code == 200 and "newcomer" not in r.json()["characters"]
        r = c.post("/api/v1/forget", json={})
        assert r.status_code == 422 and r.json()["detail"] == "missing JSON field 'name'"
        r = c.post("/api/v1/forget", json={"name": 5})
        assert r.status_code == 422 and r.json()["detail"] == "name: Input should be a valid string"
        assert c.post("/api/v1/forget", data={"nam": "x"}).json()["detail"] == "missing form field 'name'"
        assert c.post("/api/v1/forget", content=b"{nope", headers={"Content-Type": "application/json"}
                      ).status_code == 422
        # the page's error messages come from here: readable, naming the problem
        r = c.post("/api/v1/enroll", data={"name": "unknown"}, files=crop)
        assert r.status_code == 400 and "reserved" in r.json()["detail"]
    mf = tmp_path / "copy.animeid"
    shutil.copy(model, mf)
    with TestClient(create_app(mf, save_enrollments=True, detector=DETECTOR)) as c:
        assert c.get("/api/v1/characters").json()["saves_enrollments"] is True


def test_enroll_answers_501_without_enroll_and_calls_it_when_present(model, faces, monkeypatch):
    TestClient = _test_client()

    monkeypatch.delattr(Recognizer, "enroll", raising=False)
    f = faces[CHARS[0]]
    files = [("image", (f.name, f.read_bytes(), "image/jpeg"))] * 2
    app = create_app(model, detector=DETECTOR)
    with TestClient(app) as c:
        r = c.post("/api/v1/enroll", data={"name": "newcomer"}, files=files)
        assert r.status_code == 501 and "cannot enrol" in r.json()["detail"]
        assert c.get("/api/v1/characters").json()["can_enroll"] is False

        calls = []
        rec = app.state.animeid.recognizer

        def enroll(name, images, cfg=None, face_crops=False):
            calls.append((name, [im.size for im in images]))
            rec.labels.append(name)
            return {"name": name, "n": len(images)}

        monkeypatch.setattr(rec, "enroll", enroll, raising=False)
        r = c.post("/api/v1/enroll", data={"name": "newcomer"}, files=files)
        assert r.status_code == 200, r.text
        assert calls == [("newcomer", [(96, 96), (96, 96)])]
        assert r.json()["result"] == {"name": "newcomer", "n": 2} and "newcomer" in r.json()["characters"]
        assert c.get("/api/v1/characters").json()["can_enroll"] is True
        for bad in ("../x", "/abs", "a\x00b", ".."):
            r = c.post("/api/v1/enroll", data={"name": bad}, files=files)
            assert r.status_code == 400, bad
        assert len(calls) == 1


def test_save_enrollments_writes_the_model_file(model, faces, tmp_path):
    """With save_enrollments, an enrolment and a forget through the API reach the model file."""
    import shutil

    TestClient = _test_client()
    mf = tmp_path / "copy.animeid"
    shutil.copy(model, mf)
    f = faces[CHARS[0]]
    files = [("image", (f.name, f.read_bytes(), "image/jpeg"))] * 2
    with TestClient(create_app(mf, save_enrollments=True, detector=DETECTOR)) as c:
        r = c.post("/api/v1/enroll", data={"name": "滝本ひふみ"}, files=files)
        assert r.status_code == 200, r.text
        assert r.json()["saved"] is True and "滝本ひふみ" in r.json()["characters"]
        assert "滝本ひふみ" in Recognizer.load(mf).labels
        assert not [p for p in tmp_path.iterdir() if p.name != mf.name]      # atomic: no temporary file left
        r = c.post("/api/v1/forget", data={"name": "滝本ひふみ"})
        assert r.status_code == 200, r.text
        assert r.json()["saved"] is True and "滝本ひふみ" not in r.json()["characters"]
        assert "滝本ひふみ" not in Recognizer.load(mf).labels
        r = c.post("/api/v1/forget", data={"name": "nobody"})
        assert r.status_code == 400 and "no character 'nobody'" in r.json()["detail"]


def test_without_save_enrollments_the_model_file_is_untouched(model, faces, tmp_path):
    import shutil

    TestClient = _test_client()
    mf = tmp_path / "copy.animeid"
    shutil.copy(model, mf)
    before = mf.read_bytes()
    f = faces[CHARS[0]]
    with TestClient(create_app(mf, detector=DETECTOR)) as c:
        r = c.post("/api/v1/enroll", data={"name": "newcomer"}, files=[("image", (f.name, f.read_bytes(), "image/jpeg"))])
        assert r.status_code == 200, r.text
        assert r.json()["saved"] is False and "newcomer" in c.get("/api/v1/characters").json()["characters"]
        r = c.post("/api/v1/forget", data={"name": "newcomer"})
        assert r.status_code == 200 and r.json()["saved"] is False
    assert mf.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [mf.name]


# --------------------------------------------------------------------------- a real server

def test_real_server_recognizes_50_concurrent_requests(server, faces, monkeypatch):
    import threading

    url, _, app = server
    rec = app.state.animeid.recognizer
    inner = rec.predict_batch
    active, most = 0, 0
    lock = threading.Lock()

    def counting(*a, **kw):                  # how many requests are inside inference at once
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            return inner(*a, **kw)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(rec, "predict_batch", counting)
    names = list(faces)
    payloads = {n: encode_multipart([_image_part(faces[n])]) for n in names}

    def one(i: int) -> tuple[str, str, float]:
        n = names[i % len(names)]
        body, ctype = payloads[n]
        t0 = time.perf_counter()
        status, res = _request(url + "/api/v1/recognize", "POST", body, {"Content-Type": ctype}, timeout=120)
        assert status == 200, res
        return n, res["faces"][0]["candidates"][0]["name"], time.perf_counter() - t0

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=50) as pool:
        got = list(pool.map(one, range(50)))
    wall = time.perf_counter() - t0
    assert len(got) == 50 and [g[0] for g in got] == [g[1] for g in got]
    assert wall < 120
    assert most > 1, "requests are served one at a time: something holds a lock around inference"
    _healthy(url)


def _bad_inputs(faces) -> list[tuple[str, list, dict, int, str]]:
    face = faces[CHARS[0]]
    jpeg = face.read_bytes()
    png = io.BytesIO()
    Image.open(face).save(png, format="PNG")
    png = png.getvalue()
    return [
        # (case, parts, query, status, words in the message)
        ("text file", [("image", "notes.txt", b"just some text\n" * 10, "text/plain")], {}, 400,
         "notes.txt: not a readable picture"),
        ("empty file", [("image", "empty.png", b"", "image/png")], {}, 400, "empty file"),
        ("truncated JPEG", [("image", "cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")], {}, 400, "truncated"),
        ("truncated PNG", [("image", "cut.png", png[: len(png) // 2], "image/png")], {}, 400, "cut.png"),
        ("huge dimensions", [("image", "wide.png", _png(100_000, 100_000), "image/png")], {}, 400,
         "decompression bomb"),
        ("over the pixel limit", [("image", "big.png", _png(9000, 9000), "image/png")], {}, 400,
         "over the limit"),
        ("decompression bomb", [("image", "bomb.png", _bomb_png(), "image/png")], {}, 400, "over the limit"),
        ("video as picture", [("image", "clip.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, "video/mp4")], {},
         400, "not a readable picture"),
        ("no image field", [("picture", "a.jpg", jpeg, "image/jpeg")], {}, 422, "missing multipart/form-data field"),
        ("text field instead of file", [("image", None, "hello", None)], {}, 422, "image"),
        ("bad option", [_image_part(face)], {"top": "0"}, 422, "top"),
        ("bad detect", [_image_part(face)], {"detect": "sometimes"}, 422, "detect"),
        ("bad flip", [_image_part(face)], {"flip": "sometimes"}, 422, "flip"),
        ("too many pictures", [_image_part(face)] * 17, {}, 413, "limit is 16"),
        ("oversized upload", [("image", "huge.jpg", b"\xff\xd8" + b"\x00" * (3 * MB), "image/jpeg")], {}, 413,
         "larger than the upload limit of 2 MB"),
    ]


def test_bad_and_hostile_pictures_get_clear_4xx_and_the_server_stays_up(server, faces):
    url, tmp, _ = server
    for case, parts, query, status, words in _bad_inputs(faces):
        got, body = _post_files(url + "/api/v1/recognize", parts, **query)
        assert got == status, (case, got, body)
        assert isinstance(body["detail"], str) and words in body["detail"], (case, body)
        _healthy(url)
    assert not list(tmp.iterdir()) or all(not list(d.iterdir()) for d in tmp.iterdir())


def test_path_tricks_in_file_names_are_only_echoed(server, faces, tmp_path):
    url, _, _ = server
    face = faces[CHARS[0]]
    before = set(os.listdir(tmp_path.parent))
    for name in ("../../../../tmp/evil.jpg", "/etc/passwd", "..\\..\\win.ini", "a\x00b.jpg", "~/.bashrc",
                 "名前 with spaces.jpg", "x" * 300):
        status, body = _post_files(url + "/api/v1/recognize", [_image_part(face, name)])
        assert status == 200, (name, body)
        assert "\x00" not in body["filename"] and len(body["filename"]) <= 120
        assert body["faces"][0]["candidates"][0]["name"] == CHARS[0]
    status, body = _post_files(url + "/api/v1/recognize", [_image_part(face, "x" * 5000)])
    assert status == 400 and body["detail"] == "Invalid multipart data."    # python-multipart's header limit
    assert not Path("/tmp/evil.jpg").exists()
    assert set(os.listdir(tmp_path.parent)) == before
    _healthy(url)


def test_oversized_chunked_upload_is_cut_off_while_reading(server):
    url, _, _ = server
    host, port = url.rsplit("//", 1)[1].split(":")
    body, ctype = encode_multipart([("image", "endless.png", b"\x89PNG" + b"\x00" * (8 * MB), "image/png")])
    sent = 0

    def chunks():
        nonlocal sent
        for i in range(0, len(body), 64 * 1024):
            sent += 64 * 1024
            yield body[i:i + 64 * 1024]

    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        try:
            conn.request("POST", "/api/v1/recognize", body=chunks(), headers={"Content-Type": ctype},
                         encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass                                   # the server may stop listening before we stop sending
        r = conn.getresponse()
        detail = json.loads(r.read())["detail"]
    finally:
        conn.close()
    assert r.status == 413 and "larger than the upload limit of 2 MB" in detail and "stopped reading" in detail
    _healthy(url)


def test_wrong_routes_methods_and_ids(server):
    url, _, _ = server
    assert _request(url + "/api/v1/recognize")[0] == 405
    status, body = _request(url + "/api/v1/jobs/0123456789abcdef")
    assert status == 404 and "no job" in body["detail"]
    assert _request(url + "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert _request(url + "/api/v1/nothing")[0] == 404
    # a browser asking for a page that does not exist gets a page; API clients keep getting JSON
    req = urllib.request.Request(url + "/no-such-page", headers={"Accept": "text/html,application/xhtml+xml"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    page = e.value.read().decode()
    assert e.value.code == 404 and e.value.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in page and "/no-such-page" in page and 'href="/"' in page
    api = urllib.request.Request(url + "/api/v1/nothing", headers={"Accept": "text/html"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(api, timeout=30)
    assert e.value.code == 404 and json.loads(e.value.read())["detail"] == "Not Found"
    status, body = _request(url + "/api/v1/workspace")
    assert status == 404 and "--workspace" in body["detail"]
    for path in ("/static/../serve.py", "/static/..%2Fserve.py", "/static/%2e%2e/serve.py", "/static/serve.py",
                 "/static/.hidden"):
        assert _request(url + path)[0] == 404, path
    _healthy(url)


# --------------------------------------------------------------------------- video timelines

def _wait(url: str, job: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        status, job = _request(url + "/api/v1/jobs/" + job["id"])
        assert status == 200
    return job


def test_timeline_job_on_a_real_server(server, screenshot_faces, tmp_path):
    url, tmp, _ = server
    a, h = (screenshot_faces[c] for c in CHARS[:2])
    video = face_video(tmp_path / "ep.mp4", [a] * 6 + [None] * 2 + [h] * 6, fps=2)
    parts = [("video", "第1話 ../ep.mp4", video.read_bytes(), "video/mp4"), ("every", None, "1", None)]
    status, job = _post_files(url + "/api/v1/timeline", parts)
    assert status == 202, job
    assert job["status"] in ("queued", "running") and job["filename"] == "第1話 ../ep.mp4"
    job = _wait(url, job)
    assert job["status"] == "done" and job["progress"] == 1.0, job
    tl = job["result"]
    assert tl["video"] == "第1話 ../ep.mp4" and tl["every"] == 1.0 and len(tl["frames"]) == 7
    assert [(r["start"], r["end"]) for r in tl["characters"][CHARS[0]]] == [(0.0, 2.0)]
    assert [(r["start"], r["end"]) for r in tl["characters"][CHARS[1]]] == [(4.0, 6.0)]
    # the upload was deleted when the job ended
    assert all(not list(d.iterdir()) for d in tmp.iterdir())


def test_bad_videos_are_refused_at_upload(server, tmp_path):
    url, tmp, _ = server
    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, format="PNG")
    cases = [
        ([("video", "notes.mp4", b"not a video at all", "video/mp4")], 400, "notes.mp4: not a readable video"),
        ([("video", "pic.mp4", png.getvalue(), "video/mp4")], 400, "picture"),
        ([("video", "empty.mp4", b"", "video/mp4")], 400, "empty file"),
        ([("video", "v.mp4", b"x", "video/mp4"), ("every", None, "0", None)], 422, "every"),
        ([("video", "v.mp4", b"x", "video/mp4"), ("every", None, "soon", None)], 422, "every"),
        ([("movie", "v.mp4", b"x", "video/mp4")], 422, "missing multipart/form-data field 'video'"),
        ([("video", "big.mp4", b"\x00" * (5 * MB), "video/mp4")], 413, "limit of 4 MB"),
    ]
    for parts, status, words in cases:
        got, body = _post_files(url + "/api/v1/timeline", parts)
        assert got == status and words in body["detail"], (parts[0][1], got, body)
    assert all(not list(d.iterdir()) for d in tmp.iterdir())        # nothing left behind
    _healthy(url)


# --------------------------------------------------------------------------- the label flow

def test_label_flow_updates_the_manifest(model, workspace):
    TestClient = _test_client()

    with TestClient(create_app(model, workspace, detector=DETECTOR)) as c:
        info = c.get("/api/v1/workspace").json()
        n = info["unlabeled"]
        assert info["labeled"] == 0 and n >= 10
        groups = c.get("/api/v1/workspace/groups").json()
        assert groups["unlabeled"] == n and groups["pages"] == 1
        assert sum(len(g["faces"]) for g in groups["groups"]) == n
        g = max(groups["groups"], key=lambda g: len(g["faces"]))
        assert g["suggestion"]["name"] in CHARS[:2]
        # crops are served by id
        crop = c.get(g["faces"][0]["url"])
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(crop.content)).size == (128, 128)

        # name a whole group with its suggestion
        ids = [f["id"] for f in g["faces"]]
        r = c.post("/api/v1/workspace/label", json={"ids": ids, "name": g["suggestion"]["name"]})
        assert r.status_code == 200 and r.json() == {"labelled": len(ids), "name": g["suggestion"]["name"],
                                                      "unlabeled": n - len(ids)}
        with Workspace(workspace) as ws:
            rows = {r["id"]: r for r in ws.faces()}
        for i in ids:
            assert rows[i]["label"] == g["suggestion"]["name"]
            assert rows[i]["file"].startswith(g["suggestion"]["name"] + "/")
            assert (workspace / rows[i]["file"]).is_file()

        # the same as form fields (as /api/v1/forget takes them): ids comma-separated, then repeated
        other = [f["id"] for g2 in groups["groups"] if g2 is not g for f in g2["faces"]][:2]
        r = c.post("/api/v1/workspace/label", data={"ids": ",".join(map(str, other)), "name": "formname"})
        assert r.status_code == 200 and r.json()["labelled"] == len(other) and r.json()["name"] == "formname"
        r = c.post("/api/v1/workspace/label", data={"ids": [str(i) for i in other]})      # name forgotten: refused
        assert r.status_code == 422 and r.json()["detail"] == "missing form field 'name'"
        r = c.post("/api/v1/workspace/label", data={"ids": [str(i) for i in other], "name": ""})   # empty: un-label
        assert r.status_code == 200 and r.json()["name"] is None and r.json()["unlabeled"] == n - len(ids)
        assert c.post("/api/v1/workspace/label", data={"name": "x"}).status_code == 422
        r = c.post("/api/v1/workspace/label", content=b"ids=1", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "JSON or as a form" in r.json()["detail"]
        # a single face, a Unicode name; then back to unlabeled
        rest = [i for i in rows if rows[i]["label"] is None]
        r = c.post("/api/v1/workspace/label", json={"ids": rest[:1], "name": "涼風 青葉"})
        assert r.status_code == 200
        with Workspace(workspace) as ws:
            assert ws.characters() == sorted([g["suggestion"]["name"], "涼風 青葉"])
        assert (workspace / "涼風 青葉").is_dir()
        r = c.post("/api/v1/workspace/label", json={"ids": rest[:1], "name": None})
        assert r.status_code == 200 and r.json()["name"] is None
        with Workspace(workspace) as ws:
            assert ws.conn.execute("SELECT label, file FROM faces WHERE id=?", (rest[0],)).fetchone()[0] is None
        after = c.get("/api/v1/workspace/groups").json()
        assert after["unlabeled"] == n - len(ids)
        assert not {f["id"] for gr in after["groups"] for f in gr["faces"]} & set(ids)
        assert c.get("/api/v1/workspace").json()["characters"] == {g["suggestion"]["name"]: len(ids)}


def test_label_refuses_bad_names_ids_and_paths_outside_the_workspace(model, workspace, tmp_path):
    TestClient = _test_client()

    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    with TestClient(create_app(model, workspace, detector=DETECTOR)) as c:
        fid = c.get("/api/v1/workspace/groups").json()["groups"][0]["faces"][0]["id"]
        for bad in ("../evil", "/etc/evil", "a/b", "a\\b", "a\x00b", "..", ".", "", "   ", "unlabeled", ".hidden",
                    "x" * 300):
            r = c.post("/api/v1/workspace/label", json={"ids": [fid], "name": bad})
            assert r.status_code in (400, 422) and isinstance(r.json()["detail"], str), (bad, r.text)
        r = c.post("/api/v1/workspace/label", json={"ids": [fid, 987654], "name": "ok"})
        assert r.status_code == 404 and "987654" in r.json()["detail"]
        assert c.post("/api/v1/workspace/label", json={"ids": [], "name": "ok"}).status_code == 422
        r = c.post("/api/v1/workspace/label", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
        assert c.get("/api/v1/faces/987654/crop").status_code == 404
        assert c.get("/api/v1/faces/abc/crop").status_code == 422

        # a manifest that points outside the workspace: refused, the file is neither served nor moved
        with Workspace(workspace) as ws, ws.conn:
            ws.conn.execute("UPDATE faces SET file=? WHERE id=?", (os.path.relpath(outside, workspace), fid))
        r = c.get(f"/api/v1/faces/{fid}/crop")
        assert r.status_code == 403 and "outside the workspace" in r.json()["detail"]
        r = c.post("/api/v1/workspace/label", json={"ids": [fid], "name": "ok"})
        assert r.status_code == 403
        assert outside.is_file() and not (workspace / "ok").exists()
        with Workspace(workspace) as ws, ws.conn:
            ws.conn.execute("UPDATE faces SET file=? WHERE id=?", (str(outside), fid))
        assert c.get(f"/api/v1/faces/{fid}/crop").status_code == 403
        assert c.get("/health").status_code == 200
    with Workspace(workspace) as ws:
        assert ws.characters() == []


def test_create_app_checks_its_files(model, tmp_path):
    from animeid.errors import DatasetError, ModelFileError

    with pytest.raises(ModelFileError, match="no such model file"):
        create_app(tmp_path / "missing.animeid")
    with pytest.raises(ModelFileError, match="is a folder, not an animeid model file"):
        create_app(tmp_path)
    with pytest.raises(DatasetError, match="not an animeid workspace"):
        create_app(model, tmp_path)


def test_label_page_groups_with_animeid_cluster_and_shows_faces_left_apart_one_by_one(model, rec, generated_model,
                                                                                     tmp_path, monkeypatch):
    """Groups come from the real ``animeid.cluster.cluster_workspace`` and are cached. The faces it leaves
    apart (here one face each of two more characters) are not one character: each is a group of its
    own, marked ``left_apart``, named one by one. A failing clustering falls back to the model's guesses."""
    import animeid.cluster as cluster

    TestClient = _test_client()
    files = [f for ch in CHARS[:2] for f in generated_model.held_out(ch)] + \
            [generated_model.held_out(ch)[0] for ch in (CHARS[2], "midori")]
    workspace = tmp_path / "ws"
    collect(files, workspace, CollectConfig(workers=1, detector=DETECTOR))
    with Workspace(workspace) as ws:
        who = {r["id"]: Path(r["file"]).name.split("_")[0] for r in ws.faces()}
    real = cluster.cluster_workspace(workspace, rec, store=False)          # what the page must show
    groups = [g.face_ids for g in real if g.id != -1]
    apart = [i for g in real if g.id == -1 for i in g.face_ids]
    assert len(groups) == 2 and {who[i] for i in apart} == {CHARS[2], "midori"}, [(g.id, g.face_ids) for g in real]

    calls = []

    def spy(ws, model=None, **kw):                                          # the real one, counted
        calls.append((Path(ws), model))
        return real_fn(ws, model, **kw)

    real_fn = cluster.cluster_workspace
    monkeypatch.setattr(cluster, "cluster_workspace", spy)
    with TestClient(create_app(model, workspace, detector=DETECTOR)) as c:
        g = c.get("/api/v1/workspace/groups").json()
        assert g["grouping"] == "cluster" and g["unlabeled"] == len(who)
        assert [[f["id"] for f in gr["faces"]] for gr in g["groups"]] == groups + [[i] for i in apart]
        assert [gr["left_apart"] for gr in g["groups"]] == [False] * len(groups) + [True] * len(apart)
        assert calls[0][0] == workspace.resolve() and isinstance(calls[0][1], Recognizer)
        assert all(gr["suggestion"] for gr in g["groups"])
        # no group offered for one name holds faces of two characters
        assert all(len({who[f["id"]] for f in gr["faces"]}) == 1 for gr in g["groups"])
        first = groups[0]
        assert c.post("/api/v1/workspace/label", json={"ids": first[:1], "name": "someone"}).status_code == 200
        g = c.get("/api/v1/workspace/groups").json()
        assert [[f["id"] for f in gr["faces"]] for gr in g["groups"]] == [first[1:]] + groups[1:] + [[i] for i in apart]
        assert len(calls) == 1                                          # cached: faces only went away
        # a face left apart is named on its own
        r = c.post("/api/v1/workspace/label", json={"ids": apart[:1], "name": "another"})
        assert r.status_code == 200 and r.json()["labelled"] == 1
        g = c.get("/api/v1/workspace/groups").json()
        assert [[f["id"] for f in gr["faces"]] for gr in g["groups"]][-1] == apart[1:2] and g["groups"][-1]["left_apart"]

        def broken(ws, model=None, **kw):
            raise RuntimeError("no clusters today")

        monkeypatch.setattr(cluster, "cluster_workspace", broken)
        app = create_app(model, workspace, detector=DETECTOR)
    with TestClient(app) as c:
        g = c.get("/api/v1/workspace/groups").json()
        assert g["grouping"] == "model guess" and g["unlabeled"] == len(who) - 2
        assert not any(gr["left_apart"] for gr in g["groups"])


def test_serve_on_a_port_in_use_says_so_in_one_line(model, capsys):
    import socket

    from animeid.cli import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        assert main(["serve", str(model), "--port", str(port)]) == 1
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert f"animeid serve: error: cannot listen on 127.0.0.1:{port}: the port is in use" in err
    assert "open http" not in err and "Traceback" not in err
