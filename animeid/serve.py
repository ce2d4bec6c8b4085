"""The web app: a page and a JSON API over the library (``animeid serve MODEL [--workspace WS]``).

    >>> app = create_app("characters.animeid", "ws")          # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP

Structure
---------
* :func:`create_app` builds a FastAPI app; nothing is global, so tests and benchmarks make as many
  as they like. The model is loaded once, lazily and thread-safely (:class:`_State`); the
  workspace is opened per request (an SQLite connection belongs to one thread).
* Routes are plain ``def`` functions: FastAPI runs them in its thread pool, so requests are
  served concurrently. No lock is held around inference (ONNX Runtime sessions are thread-safe;
  the face detector serialises its own C calls).
* ``POST /api/v1/timeline`` stores the upload in a private temporary folder and queues a job
  (:class:`_Jobs`, one worker thread): ``GET /api/v1/jobs/{id}`` reports progress and the result;
  the file is deleted when the job ends, the folder when the app shuts down.
* Pages and their scripts are static files in ``animeid/web`` (no build step, no CDN), served
  from an allow-list of file names. The API docs page (``/docs``) renders ``/openapi.json``
  with a local script, so it works without internet.

Limits and errors
-----------------
Every error is JSON ``{"detail": "..."}`` naming the problem: 400 for an unreadable picture or
video or a bad character name; 403 for a manifest path outside the workspace; 404 for an unknown
job, face or route (and every workspace route when the app has no workspace); 413 when the
request body is over the upload limit -- counted while it is read, so a huge upload is refused
after ``max_upload_mb`` bytes, not after it has been stored -- or too many pictures are sent;
422 for a missing or invalid field or parameter (a value an option's rule refuses, see
:mod:`animeid.options`: the same message the CLI gives, e.g. ``top: must be a whole number from 1
to 50, got 0``); 429 when too many videos wait; 501 for enrolment (or forgetting) with a model
that cannot do it (:class:`~animeid.errors.CannotEnrollError`).
Pictures go through :func:`animeid.images.load_image` with ``max_pixels`` (checked before
decoding: decompression bombs, huge dimensions). Upload file names are only ever echoed back,
never used as paths; face crops are served by manifest id, from inside the workspace only.

Enrolment (``POST /api/v1/enroll``, ``POST /api/v1/forget``) changes the model in the server's
memory; with ``save_enrolments`` (``animeid serve --save-enrolments``) each change is also written
to the model file, atomically and before the next change starts, and the answer's ``saved`` says
whether it was.
"""
from __future__ import annotations

import io
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import unicodedata
from collections import OrderedDict, Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence

from .errors import AnimeidError, CannotEnrollError, ConfigError, InputError
from .images import IMAGE_EXTS, load_image
from .predict import PredictConfig, Recognizer, parse_unknown_threshold

try:
    from fastapi import Body, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:  # pragma: no cover - the [serve] extra is not installed
    raise ImportError("the web app needs FastAPI: pip install 'animeid[serve]' "
                      "(fastapi, uvicorn, python-multipart)") from e

__all__ = ["create_app", "serve_in_thread", "encode_multipart", "WEB_DIR", "MAX_SERVE_PIXELS"]

log = logging.getLogger("animeid")

#: The page, its scripts and styles.
WEB_DIR = Path(__file__).with_name("web")
#: Largest picture the server decodes by default (width x height): 8K UHD fits, bombs do not.
MAX_SERVE_PIXELS = 40_000_000
_MB = 1024 * 1024
#: After refusing an oversized body, at most this many more bytes are read (and dropped) before answering.
_DRAIN_MAX = 32 * _MB
_MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
          ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".json": "application/json"}
_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


# --------------------------------------------------------------------------- response models (docs)

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")      # open-set fields (``unknown``, ...) pass through


class Candidate(_Open):
    name: Optional[str] = Field(description="a character of the model (never 'unknown')")
    p: float = Field(description="probability among the model's characters, 0..1")


class OpenSetInfo(_Open):
    kind: str = Field(description="what the score is: 'prototype_z' (open-set layer) or 'max_proba' (older models)")
    score: float = Field(description="the face's open-set score: low means like no known character")
    threshold: Optional[float] = Field(description="the face is unknown below this score (null: never unknown)")
    refusal_rate: Optional[float] = Field(None, description="share of the model's known calibration faces this "
                                                            "threshold refuses, 0..1")
    known_below: Optional[float] = Field(None, description="share of the model's known calibration faces that "
                                                           "score lower than this face, 0..1")


class FaceResult(_Open):
    box: list[int] = Field(description="[x0, y0, x1, y1] in the picture's pixels, x1/y1 exclusive")
    name: str = Field(description="the verdict: the character's name, or 'unknown' for a face of no known character")
    unknown: bool = Field(description="true when the verdict is 'unknown'")
    candidates: list[Candidate] = Field(description="the closest characters, most likely first (named only: for an "
                                                    "unknown face, who it would be if it had to be one of them)")
    open_set: OpenSetInfo = Field(description="why the verdict: the face's open-set score against the threshold")


class ImageResult(_Open):
    filename: str = Field(description="the upload's file name, as sent (never used as a path)")
    width: int
    height: int
    faces: list[FaceResult]


class ManyResults(BaseModel):
    results: list[ImageResult] = Field(description="one per `image` field, in the order sent")


class Job(_Open):
    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = Field(description="0..1 (share of the video's duration processed)")
    filename: str
    every: float
    done_s: float = Field(description="seconds of video processed")
    duration: Optional[float]
    frames: int = Field(description="frames named so far")
    error: Optional[str]
    result: Optional[dict] = Field(description="the timeline when done (see animeid.timeline)")


class Error(BaseModel):
    detail: str = Field(description="what is wrong, naming the file or field")


def _errors(*codes: int) -> dict:
    what = {400: "unreadable picture or video, or a bad name", 403: "a path outside the workspace",
            404: "no such job, face or workspace", 413: "upload over the limit (counted while reading)",
            422: "a missing or invalid field or parameter", 429: "too many videos waiting",
            501: "the model cannot enrol or forget characters"}
    return {c: {"model": Error, "description": what[c]} for c in codes}


class LabelRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=10_000, description="face ids from the manifest")
    name: Optional[str] = Field(max_length=200, description="character name; null un-labels the faces")


# --------------------------------------------------------------------------- helpers

class _UploadTooLarge(HTTPException):
    pass


class _Guard:
    """ASGI middleware: security headers on every response, and a JSON 413 for a request body over
    ``limit_for(path)`` bytes.

    The limit is enforced while the body is read: a declared ``Content-Length`` over it is refused
    before any of the body reaches the app, otherwise bytes are counted as they arrive and the
    request is refused as soon as the count passes the limit (chunked uploads included). Before
    answering, up to :data:`_DRAIN_MAX` more bytes of the refused body are read and dropped, so a
    client that sends its whole body before reading (most do) gets the 413 instead of a reset
    connection; a client that waits for ``100 Continue`` is answered at once.
    """

    def __init__(self, app, limit_for: Callable[[str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for
        self.extra = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", _CSP.encode()),
                      (b"referrer-policy", b"no-referrer")]

    @staticmethod
    async def _drain(receive, budget: int) -> None:
        while budget > 0:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            budget -= len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, what = self.limit_for(scope.get("path", ""))
        detail = f"{what} is larger than the upload limit of {limit / _MB:g} MB"
        started = False

        async def guarded_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg = {**msg, "headers": list(msg.get("headers", [])) + [h for h in self.extra if h[0] not in have]}
            await send(msg)

        headers = dict(scope.get("headers", []))
        try:
            declared = int(headers[b"content-length"]) if b"content-length" in headers else None
        except ValueError:
            declared = None
        if declared is not None and declared > limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive, min(declared, _DRAIN_MAX))
            resp = JSONResponse({"detail": f"{detail} ({declared / _MB:.1f} MB declared)"}, status_code=413,
                                headers={"Connection": "close"})
            return await resp(scope, receive, guarded_send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    stopped = seen
                    if msg.get("more_body", False):
                        await self._drain(receive, _DRAIN_MAX)
                    raise _UploadTooLarge(413, f"{detail} (stopped reading at {stopped / _MB:.1f} MB)")
            return msg

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _UploadTooLarge as e:     # raised where no handler caught it (e.g. before routing)
            if started:
                raise
            await JSONResponse({"detail": e.detail}, status_code=413, headers={"Connection": "close"})(
                scope, receive, guarded_send)


def _display(name: str | None, fallback: str) -> str:
    """An upload's file name for messages: control characters dropped, at most 120 characters."""
    if not name:
        return fallback
    s = "".join(c for c in unicodedata.normalize("NFC", name) if c.isprintable())
    return (s[:117] + "...") if len(s) > 120 else (s or fallback)


class _Upload(io.BytesIO):
    """An upload's bytes, named by its label in Pillow's messages (not ``<_io.BytesIO object at 0x...>``)."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __repr__(self) -> str:
        return repr(self.label)


def _read_upload(up: UploadFile, label: str) -> _Upload:
    data = up.file.read()
    if not data:
        raise HTTPException(400, f"{label}: empty file (0 bytes), not a picture")
    return _Upload(data, label)


def _check_name(name: str, *, enrol: bool = False) -> str:
    """A character name from a request, by animeid's one rule (:func:`animeid.names.check_character_name`),
    with the workspace's reserved folder names (and, to enrol or forget, ``unknown``) refused; 400 otherwise."""
    from .dataset import _RESERVED
    from .names import check_character_name
    from .openset import UNKNOWN

    try:
        return check_character_name(name, reserved={*_RESERVED, UNKNOWN} if enrol else _RESERVED)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


def _inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, or 403 when it is not a file inside ``root`` (``root`` is resolved)."""
    if not rel or "\x00" in rel or os.path.isabs(rel):
        raise HTTPException(403, f"refused path {rel!r}: not a relative path inside the workspace")
    p = (root / rel).resolve()
    if not p.is_relative_to(root) or p == root:
        raise HTTPException(403, f"refused path {rel!r}: it lies outside the workspace")
    if p.suffix.lower() not in IMAGE_EXTS:
        raise HTTPException(403, f"refused path {rel!r}: not a picture")
    return p


# --------------------------------------------------------------------------- background jobs

@dataclass
class _Job:
    id: str
    filename: str
    every: float
    path: Path
    status: str = "queued"
    progress: float = 0.0
    done_s: float = 0.0
    duration: float | None = None
    frames: int = 0
    error: str | None = None
    result: dict | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "status", "progress", "filename", "every", "done_s",
                                               "duration", "frames", "error", "result")}


class _Cancelled(Exception):
    pass


class _Jobs:
    """Timeline jobs: one worker thread, a bounded queue, finished jobs kept for polling."""

    def __init__(self, run: Callable[[_Job, Callable], dict], *, max_pending: int = 8, keep: int = 64):
        self._run = run
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self.max_pending = max_pending
        self.keep = keep

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(j.status for j in self._jobs.values()))

    def get(self, job_id: str) -> _Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def submit(self, job: _Job) -> _Job:
        with self._lock:
            if self._stop.is_set():
                raise HTTPException(503, "the server is shutting down")
            pending = sum(j.status in ("queued", "running") for j in self._jobs.values())
            if pending >= self.max_pending:
                raise HTTPException(429, f"{pending} videos are already waiting or being read; try again later")
            self._jobs[job.id] = job
            done = [k for k, j in self._jobs.items() if j.status not in ("queued", "running")]
            for k in done[: max(0, len(self._jobs) - self.keep)]:
                del self._jobs[k]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="animeid-timeline")
            self._pool.submit(self._work, job)
        return job

    def _work(self, job: _Job) -> None:
        def progress(done: float, duration: float | None, frames: int) -> None:
            if self._stop.is_set():
                raise _Cancelled()
            job.done_s, job.duration, job.frames = done, duration, frames
            if duration:
                job.progress = round(min(0.99, done / duration), 4)

        try:
            if self._stop.is_set():
                raise _Cancelled()
            job.status = "running"
            job.result = self._run(job, progress)
            job.progress, job.status = 1.0, "done"
        except _Cancelled:
            job.status, job.error = "cancelled", "the server shut down before the video was read"
        except AnimeidError as e:
            job.status, job.error = "failed", f"{job.filename}: {e.message}"
        except Exception as e:  # noqa: BLE001 - a job must never take the worker down
            log.exception("timeline job %s failed", job.id)
            job.status, job.error = "failed", f"{job.filename}: internal error ({type(e).__name__}: {e})"
        finally:
            job.finished = time.time()
            try:
                job.path.unlink(missing_ok=True)
            except OSError:
                pass

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for j in self._jobs.values():
                if j.status == "queued":
                    j.status, j.error = "cancelled", "the server shut down before the video was read"


# --------------------------------------------------------------------------- shared state

class _State:
    """What the routes share: the model (loaded once, lazily, thread-safely), caches, the temp folder."""

    def __init__(self, model_path: Path, workspace: Path | None, tmp_parent: str | None):
        self.model_path = model_path
        self.workspace = workspace
        self._rec: Recognizer | None = None
        self._load_lock = threading.Lock()
        self._enroll_lock = threading.Lock()
        self._tmp_parent = tmp_parent
        self._tmp: Path | None = None
        self._tmp_lock = threading.Lock()
        self._guesses: dict[int, tuple[str, float]] = {}   # face id -> model's top-1 (label page)
        self._groups_cache: tuple[frozenset, list[list[int]], str] | None = None
        self._groups_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._rec is not None

    @property
    def recognizer(self) -> Recognizer:
        rec = self._rec
        if rec is None:
            with self._load_lock:
                if self._rec is None:
                    self._rec = Recognizer.load(self.model_path)
                rec = self._rec
        return rec

    def tmp_dir(self) -> Path:
        with self._tmp_lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="animeid-serve-", dir=self._tmp_parent))
            return self._tmp

    def cleanup(self) -> None:
        with self._tmp_lock:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None


# --------------------------------------------------------------------------- the app

def create_app(model_path: str | os.PathLike, workspace: str | os.PathLike | None = None, *,
               max_upload_mb: float = 20, max_video_mb: float = 500, max_pixels: int = MAX_SERVE_PIXELS,
               max_images: int = 16, max_video_frames: int = 3000, page_faces: int = 120,
               tmp_dir: str | os.PathLike | None = None, preload: bool = False,
               save_enrolments: bool = False, detector: str | None = None) -> FastAPI:
    """The animeid web app for the model file ``model_path`` (and a workspace for the label page).

    ``max_upload_mb``: largest request body for pictures (``max_video_mb`` for videos), enforced
    while the body is read. ``max_pixels``: largest picture decoded. ``max_images``: pictures in
    one request. ``max_video_frames``: frames sampled from one video (the rest is cut, the result
    says ``truncated``). ``page_faces``: faces per page of the label page. ``tmp_dir``: where the
    private folder for video uploads is made (default: the system's). ``preload``: load the model
    now (errors surface here) instead of on the first request. ``save_enrolments``: write the model
    file after each enrolment or forget through the API (atomically), so that it survives a restart;
    by default such changes live in the server's memory only. ``detector``: the face detector
    (a name or a detector file; ``None``: animeid's default).
    A bad option raises :class:`~animeid.errors.ConfigError` naming it.
    Raises :class:`~animeid.errors.ModelFileError` / :class:`~animeid.errors.DatasetError` for a
    missing model file (or, with ``save_enrolments``, one in a folder that cannot be written) or a
    folder that is not a workspace.
    """
    from . import options as o
    from ._util import check_file
    from .errors import ModelFileError

    for k, v, rule in (("max_upload_mb", max_upload_mb, o.MEGABYTES), ("max_video_mb", max_video_mb, o.MEGABYTES),
                       ("max_pixels", max_pixels, o.whole(1)), ("max_images", max_images, o.whole(1)),
                       ("max_video_frames", max_video_frames, o.whole(1)), ("page_faces", page_faces, o.whole(1)),
                       ("detector", detector, o.detector())):
        rule.check(k, v)                          # ConfigError naming the option, before anything is opened
    mp = check_file(model_path, "an animeid model file", ModelFileError, missing="no such model file")
    if save_enrolments and not os.access(mp.resolve().parent, os.W_OK):
        raise ModelFileError("cannot save enrolments: the model file's folder is not writable", mp)
    ws_root: Path | None = None
    if workspace is not None:
        from .dataset import Workspace

        Workspace(workspace).close()              # DatasetError when it is not one
        ws_root = Path(workspace).resolve()
    state = _State(mp, ws_root, os.fspath(tmp_dir) if tmp_dir is not None else None)
    if preload:
        state.recognizer  # noqa: B018 - load now
    upload_limit = int(max_upload_mb * _MB)
    video_limit = int(max_video_mb * _MB)
    statics = {p.name: p for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA} if WEB_DIR.is_dir() else {}

    def run_timeline(job: _Job, progress) -> dict:
        from .timeline import build_timeline

        tl = build_timeline(state.recognizer, job.path, every=job.every, max_frames=max_video_frames,
                            progress=progress, cfg=PredictConfig(detect="always", detector=detector))
        tl["video"] = job.filename                 # not the temporary file's path
        return tl

    jobs = _Jobs(run_timeline)

    @asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            jobs.shutdown()
            state.cleanup()

    app = FastAPI(
        title="animeid", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url="/openapi.json",
        description="Recognise anime characters by their faces. Errors are JSON `{\"detail\": \"...\"}`. "
                    "Pictures: multipart field `image` (several allowed). The page is at `/`, "
                    "the characters page (enrol and forget) at `/characters`, the label page at `/label` "
                    "(with a workspace).")
    app.state.animeid = state
    app.state.jobs = jobs

    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith("/api/v1/timeline"):
            return video_limit, "the video upload"
        return upload_limit, "the upload"

    app.add_middleware(_Guard, limit_for=limit_for)

    # -- errors: always {"detail": "..."}
    @app.exception_handler(AnimeidError)
    async def animeid_error(_request: Request, exc: AnimeidError):
        return JSONResponse({"detail": exc.message if isinstance(exc, InputError) else str(exc)}, status_code=400)

    @app.exception_handler(ConfigError)      # a bad option: the rule's message (animeid.options), as the CLI says it
    async def config_error(_request: Request, exc: ConfigError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(CannotEnrollError)
    async def cannot_enroll(_request: Request, exc: CannotEnrollError):
        return JSONResponse({"detail": exc.message}, status_code=501)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")]
            where = ".".join(loc) or "request"
            if err.get("type") == "json_invalid":
                why = (err.get("ctx") or {}).get("error", "decode error")
                parts.append(f"the request body is not valid JSON ({why})")
            elif err.get("type") == "missing":
                src = (err.get("loc") or ("",))[0]
                kind = ("JSON field" if request.url.path.endswith("/label") else "multipart/form-data field"
                        if src == "body" else "query parameter" if src == "query" else "field")
                parts.append(f"missing {kind} {where!r}")
            else:
                parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request",
                             "errors": json.loads(json.dumps(exc.errors(), default=str))}, status_code=422)

    # -- pages
    def page(name: str) -> Response:
        p = statics.get(name)
        if p is None:
            raise HTTPException(404, f"page {name} is not installed (animeid/web is missing)")
        return FileResponse(p, media_type=_MEDIA[p.suffix], headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index():
        return page("index.html")

    @app.get("/label", include_in_schema=False)
    def label_page():
        return page("label.html")

    @app.get("/characters", include_in_schema=False)
    def characters_page():
        return page("characters.html")

    @app.get("/docs", include_in_schema=False)
    def docs_page():
        return page("docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        p = statics.get(name)
        if p is None:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(p, media_type=_MEDIA[p.suffix], headers={"Cache-Control": "no-cache"})

    # -- API
    @app.get("/health", tags=["service"], summary="Liveness: the server answers (does not load the model)")
    def health():
        return {"status": "ok", "model": mp.name, "model_loaded": state.loaded,
                "workspace": ws_root.name if ws_root else None, "jobs": jobs.counts(),
                "limits": {"upload_mb": max_upload_mb, "video_mb": max_video_mb, "max_pixels": max_pixels,
                           "max_images": max_images, "max_video_frames": max_video_frames}}

    @app.get("/api/v1/characters", tags=["recognition"], summary="The characters the model knows",
             description="`characters`: the names answered now (trained ones first, then enrolled ones). "
                         "`details`: one object per name, in the same order: `trained` (the model was trained "
                         "on it), `trained_faces` (its training faces, when the model says) and "
                         "`enrolled_pictures` (pictures enrolled through enrolment). `forgotten`: trained "
                         "characters forgotten since (enrolling pictures under such a name brings it back). "
                         "`saves_enrolments`: whether enrolments and forgets are written to the model file "
                         "(`--save-enrolments`) or kept in memory until the server stops.")
    def characters():
        rec = state.recognizer
        labels = list(rec.labels)
        os_ = getattr(rec, "openset", None)        # one snapshot: enrol/forget replace it
        if os_ is not None:
            trained = {c: int(n) for c, n in zip(os_.trained, os_.counts)}
            enrolled = Counter(os_.gallery_labels)
            forgotten = [c for c in os_.masked if c not in labels]
        else:
            trained = {c: None for c in getattr(getattr(rec, "bundle", None), "labels", labels)}
            enrolled, forgotten = Counter(), []
        details = [{"name": c, "trained": c in trained, "trained_faces": trained.get(c),
                    "enrolled_pictures": int(enrolled.get(c, 0))} for c in labels]
        return {"characters": labels, "count": len(labels), "method": rec.method,
                # models made before the open-set layer existed cannot enrol or forget
                "can_enroll": callable(getattr(rec, "enroll", None)) and os_ is not None,
                "can_forget": callable(getattr(rec, "forget", None)) and os_ is not None,
                "details": details, "forgotten": forgotten, "saves_enrolments": bool(save_enrolments),
                "model": mp.name}

    def load_uploads(uploads: Sequence[UploadFile]) -> tuple[list[Any], list[str]]:
        if len(uploads) > max_images:
            raise HTTPException(413, f"{len(uploads)} pictures in one request; the limit is {max_images}")
        imgs, names = [], []
        for i, up in enumerate(uploads):
            name = _display(up.filename, f"image #{i + 1}")
            label = name if len(uploads) == 1 else f"image #{i + 1} ({name})"
            try:
                imgs.append(load_image(_read_upload(up, label), "RGB", max_pixels=max_pixels))
            except InputError as e:
                raise HTTPException(400, f"{label}: {e.message}") from None
            names.append(name)
        return imgs, names

    @app.post(
        "/api/v1/recognize", tags=["recognition"], response_model=ImageResult | ManyResults,
        responses=_errors(400, 413, 422),
        summary="Find the faces in pictures and name the characters",
        description="Send a picture (illustration, screenshot or face crop) as the multipart field `image`. "
                    "One `image` gives `{\"filename\", \"width\", \"height\", \"faces\": [{\"box\": [x0, y0, x1, y1], "
                    "\"name\", \"unknown\", \"candidates\": [{\"name\", \"p\"}], \"open_set\"}]}`; several "
                    "`image` fields give `{\"results\": [...]}` with one such object per picture, in order. `name` "
                    "is the verdict: a character, or `unknown` for a face of no known character (then `candidates` "
                    "are the characters it is closest to). A picture in which no face is found gets `faces: []` "
                    "and a separate `whole_picture` guess, the picture read as a face crop (`detect=auto`).")
    def recognize(image: list[UploadFile] = File(..., description="one or more pictures"),
                  top: int = Query(3, ge=1, le=50, description="candidates per face"),
                  threshold: float | None = Query(None, ge=0.0, le=1.0, description="face detector score threshold, 0..1 "
                                                  "(default: the detector's own calibrated one)"),
                  detect: Literal["auto", "always", "never"] = Query(
                      "auto", description="auto: find faces, a face crop is taken whole; always: only faces "
                                          "found; never: the whole picture is one face"),
                  unknown_threshold: Optional[str] = Query(
                      None, max_length=40, examples=["5%", "0.05", "off", "score:-14.8"],
                      description="when a face is answered `unknown`: the share of known faces refused on the "
                                  "model's calibration data, `0.05` or `5%` (more: more faces unknown; from 0 up to "
                                  "100 % excluded); `off`: never; `score:T`: a raw open-set score threshold. "
                                  "Default: the model's calibrated threshold")):
        try:
            unk = parse_unknown_threshold(unknown_threshold)
            cfg = PredictConfig(top=top, threshold=threshold, detect=detect, detector=detector, **unk)
            state.recognizer._threshold(cfg, state.recognizer.openset)
        except (ValueError, AnimeidError) as e:
            raise HTTPException(422, f"unknown_threshold: {getattr(e, 'message', None) or e}") from None
        imgs, names = load_uploads(image)
        results = state.recognizer.predict_batch(imgs, cfg)
        out = [{"filename": n, **{k: v for k, v in r.items() if k != "path"}} for n, r in zip(names, results)]
        return out[0] if len(out) == 1 else {"results": out}

    @app.post("/api/v1/enroll", tags=["recognition"], responses=_errors(400, 413, 422, 501),
              summary="Teach the model a new character from a few pictures (open-set models only)",
              description="Multipart: `name` and one or more `image` fields. Answers 501 when the loaded "
                          "model cannot enrol characters. Enrolment changes the model in this server's memory, "
                          "and in the model file when the server runs with `--save-enrolments`: `saved` says "
                          "whether it was written (`save_error` says why not, when a save failed).")
    def enroll(name: str = Form(..., description="the character's name"),
               image: list[UploadFile] = File(..., description="pictures of the character's face"),
               face_crops: bool = Form(False, description="the pictures are face crops: each is used whole; by "
                                                          "default a picture in which no face is found is refused")):
        rec = state.recognizer
        fn = getattr(rec, "enroll", None)
        if not callable(fn):
            raise HTTPException(501, "this model cannot enrol new characters: this animeid's recogniser has no "
                                     "enroll(); retrain with `animeid train` on a dataset that includes the character")
        name = _check_name(name, enrol=True)
        imgs, _ = load_uploads(image)
        cfg = PredictConfig(detector=detector)
        return change_model(rec, "enrol", name, lambda: fn(name, imgs, cfg, face_crops=face_crops),
                            {"images": len(imgs)})

    @app.post("/api/v1/forget", tags=["recognition"], responses=_errors(400, 422, 501),
              summary="Remove a character from the model (open-set models only)",
              description="Form field `name`. An enrolled character's pictures go; a trained one is never "
                          "answered again. Answers 501 when the loaded model cannot forget characters. Like "
                          "enrolment, it changes the model in memory, and in the model file with "
                          "`--save-enrolments` (`saved`).")
    def forget(name: str = Form(..., description="the character's name")):
        rec = state.recognizer
        fn = getattr(rec, "forget", None)
        if not callable(fn):
            raise HTTPException(501, "this model cannot forget characters: this animeid's recogniser has no forget()")
        name = _check_name(name, enrol=True)
        return change_model(rec, "forget", name, lambda: fn(name), {})

    def change_model(rec: Recognizer, verb: str, name: str, call: Callable[[], Any], extra: dict) -> dict:
        """The answer to an enrol or forget: ``call()`` changes the model (one change at a time;
        recognition goes on), then, with ``save_enrolments``, the model file is written before the
        next change starts. ``{"name", **extra, "characters", "result", "saved"}``."""
        try:
            with state._enroll_lock:
                out = call()
                state._guesses.clear()           # the label page's guesses came from the old model
                saved = save_model_file(rec)
        except CannotEnrollError as e:          # a model without an open-set layer: 501, as documented
            raise HTTPException(501, f"cannot {verb} {name!r}: {e.message}") from None
        except (AnimeidError, ValueError) as e:
            raise HTTPException(400, f"cannot {verb} {name!r}: {getattr(e, 'message', e)}") from None
        body = {"name": name, **extra, "characters": list(rec.labels)}
        if isinstance(out, dict):
            body["result"] = json.loads(json.dumps(out, default=str))
        return {**body, **saved}

    def save_model_file(rec: Recognizer) -> dict:
        """``{"saved": bool}`` after an enrol/forget: with ``save_enrolments``, the model is written to
        its file (atomically)."""
        if not save_enrolments:
            return {"saved": False}
        try:
            rec.save(mp)
        except Exception as e:  # the change stays in memory; say so rather than fail the request
            log.error("%s: cannot save the model: %s", mp, e, exc_info=not isinstance(e, (OSError, AnimeidError)))
            return {"saved": False, "save_error": f"{mp.name}: cannot save the model: {getattr(e, 'message', e)}"}
        return {"saved": True}

    @app.post("/api/v1/timeline", tags=["video"], status_code=202, response_model=Job,
              responses=_errors(400, 413, 422, 429),
              summary="Who appears when: upload a video, get a job to poll",
              description="Multipart: `video` (any format FFmpeg reads) and `every` (seconds between sampled "
                          "frames, default 2). The file is checked at once (400 if it is not a readable video); "
                          "then poll `GET /api/v1/jobs/{id}` until `status` is `done` (the timeline is in "
                          "`result`) or `failed`.")
    def timeline(video: UploadFile = File(..., description="the video"),
                 every: float = Form(2.0, gt=0.0, le=600.0, description="seconds between sampled frames")):
        from .images import VIDEO_EXTS

        try:
            from .video import probe
        except ModuleNotFoundError as e:        # a prediction-only install: no PyAV
            from ._util import missing_extra_hint

            raise HTTPException(501, missing_extra_hint(e) or str(e)) from None
        name = _display(video.filename, "video")
        ext = Path(video.filename or "").suffix.lower()
        job_id = secrets.token_hex(8)
        path = state.tmp_dir() / f"{job_id}{ext if ext in VIDEO_EXTS else '.video'}"
        try:
            with open(path, "xb") as f:
                shutil.copyfileobj(video.file, f, 1 << 20)
            if path.stat().st_size == 0:
                raise HTTPException(400, f"{name}: empty file (0 bytes), not a video")
            try:
                info = probe(path)
            except InputError as e:
                raise HTTPException(400, f"{name}: {e.message}") from None
            job = _Job(job_id, name, float(every), path, duration=info.duration)
            return jobs.submit(job).to_dict()
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @app.get("/api/v1/jobs/{job_id}", tags=["video"], response_model=Job, responses=_errors(404, 422),
             summary="A timeline job's progress and result")
    def job_status(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {_display(job_id, '?')!r} (finished jobs are kept for a while only)")
        return job.to_dict()

    # -- workspace (label page)
    def need_ws() -> Path:
        if ws_root is None:
            raise HTTPException(404, "no workspace: start the server with --workspace WS to label faces")
        return ws_root

    def open_ws():
        from .dataset import Workspace

        return Workspace(need_ws())

    @app.get("/api/v1/workspace", tags=["workspace"], responses=_errors(404), summary="Counts of the workspace's faces")
    def workspace_info():
        with open_ws() as ws:
            rows = ws.conn.execute("SELECT label, COUNT(*) FROM faces WHERE status='ok' GROUP BY label").fetchall()
        chars = {r[0]: r[1] for r in rows if r[0] is not None}
        unlabeled = sum(r[1] for r in rows if r[0] is None)
        return {"name": ws_root.name, "faces": unlabeled + sum(chars.values()), "unlabeled": unlabeled,
                "labeled": sum(chars.values()), "characters": dict(sorted(chars.items()))}

    def guesses(rows: list) -> dict[int, tuple[str, float]]:
        """The model's top-1 for each face row (cached by id); unreadable crops are left out."""
        from .timeline import face_identity

        todo = [r for r in rows if r["id"] not in state._guesses]
        paths, ids = [], []
        for r in todo:
            try:
                p = _inside(ws_root, r["file"])
            except HTTPException:
                continue
            if p.is_file():
                paths.append(p)
                ids.append(r["id"])
        rec = state.recognizer
        for i in range(0, len(paths), 64):
            try:
                verdicts = rec.identify_faces(paths[i:i + 64], top=1)
            except InputError:
                verdicts = []
                for p in paths[i:i + 64]:
                    try:
                        verdicts.extend(rec.identify_faces([p], top=1))
                    except InputError:
                        verdicts.append(None)
            for fid, v in zip(ids[i:i + 64], verdicts):
                if v:
                    state._guesses[fid] = face_identity(v)
        return {r["id"]: state._guesses[r["id"]] for r in rows if r["id"] in state._guesses}

    def cluster_groups(unlabeled_ids: list[int]) -> tuple[list[list[int]], str, set[int]] | None:
        """Groups from ``animeid.cluster.cluster_workspace`` when it exists (cached), else None; with the
        ids of the faces the clustering left apart (each shown as a group of one: they are not one
        character)."""
        try:
            from . import cluster as _cluster
        except ImportError:
            return None
        fn = getattr(_cluster, "cluster_workspace", None)
        if not callable(fn):
            return None
        key = frozenset(unlabeled_ids)
        with state._groups_lock:
            cached = state._groups_cache
            if cached is None or not key <= cached[0]:
                try:
                    try:
                        raw = fn(ws_root, model=state.recognizer)
                    except TypeError:
                        raw = fn(ws_root, model=state.model_path)
                    groups, apart = _normalise_groups(raw)
                except Exception as e:  # noqa: BLE001 - fall back to manifest order
                    log.warning("clustering the workspace failed (%s: %s); faces shown in manifest order",
                                type(e).__name__, e)
                    return None
                cached = state._groups_cache = (key, groups, apart)
        groups = [[i for i in g if i in key] for g in cached[1]]
        grouped = {i for g in groups for i in g}
        rest = [i for i in unlabeled_ids if i not in grouped]
        groups = [g for g in groups if g] + [[i] for i in rest]
        return groups, "cluster", cached[2] & key

    @app.get("/api/v1/workspace/groups", tags=["workspace"], responses=_errors(404, 422),
             summary="Unlabeled faces grouped by identity, a page at a time",
             description="Groups come from `animeid.cluster` when it is installed; otherwise faces are taken in "
                         "manifest order, a page at a time, and grouped by the model's guess. Each group has "
                         "the model's `suggestion` (the most common top-1 name among its faces). Faces the "
                         "clustering left apart (like no other face closely enough) are not one character: "
                         "each is a group of its own, with `left_apart: true`.")
    def workspace_groups(page: int = Query(0, ge=0, le=1_000_000)):
        with open_ws() as ws:
            rows = ws.conn.execute(
                "SELECT id, file FROM faces WHERE status='ok' AND label IS NULL ORDER BY id").fetchall()
        by_id = {r["id"]: r for r in rows}
        clustered = cluster_groups(list(by_id))
        apart: set[int] = set()
        if clustered is not None:
            groups_all, how, apart = clustered
            pages, cur, n = [], [], 0
            for g in groups_all:
                if cur and n + len(g) > page_faces:
                    pages.append(cur)
                    cur, n = [], 0
                cur.append(g)
                n += len(g)
            if cur:
                pages.append(cur)
            n_pages = len(pages)
            chosen = pages[page] if page < n_pages else []
            g_rows = [[by_id[i] for i in g] for g in chosen]
            guess = guesses([r for g in g_rows for r in g])
        else:
            how = "model guess"
            n_pages = (len(rows) + page_faces - 1) // page_faces
            chunk = rows[page * page_faces:(page + 1) * page_faces]
            guess = guesses(chunk)
            buckets: dict[str, list] = {}
            for r in chunk:
                buckets.setdefault(guess.get(r["id"], ("?", 0.0))[0], []).append(r)
            g_rows = sorted(buckets.values(), key=lambda g: (-len(g), g[0]["id"]))
        out = []
        for k, g in enumerate(g_rows):
            names = Counter(guess[r["id"]][0] for r in g if r["id"] in guess)
            sugg = None
            if names:
                top_name, cnt = names.most_common(1)[0]
                ps = [guess[r["id"]][1] for r in g if guess.get(r["id"], ("",))[0] == top_name]
                sugg = {"name": top_name, "p": round(sum(ps) / len(ps), 4), "share": round(cnt / len(g), 3)}
            out.append({"key": f"p{page}g{k}", "suggestion": sugg,
                        "left_apart": len(g) == 1 and g[0]["id"] in apart, "faces": [
                {"id": r["id"], "url": f"/api/v1/faces/{r['id']}/crop",
                 "guess": ({"name": guess[r["id"]][0], "p": round(guess[r["id"]][1], 4)} if r["id"] in guess else None)}
                for r in g]})
        return {"grouping": how, "page": page, "pages": n_pages, "unlabeled": len(rows), "groups": out}

    @app.get("/api/v1/faces/{face_id}/crop", tags=["workspace"], summary="A face crop from the workspace, by id",
             responses=_errors(403, 404, 422),
             response_class=FileResponse)
    def face_crop(face_id: int):
        root = need_ws()
        with open_ws() as ws:
            row = ws.conn.execute("SELECT file FROM faces WHERE id=?", (face_id,)).fetchone()
        if row is None:
            raise HTTPException(404, f"no face with id {face_id} in the workspace")
        p = _inside(root, row["file"])
        if not p.is_file():
            raise HTTPException(404, f"the crop of face {face_id} is missing from the workspace")
        return FileResponse(p, media_type=_MEDIA.get(p.suffix.lower(), "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=60"})

    @app.post("/api/v1/workspace/label", tags=["workspace"], responses=_errors(400, 403, 404, 422),
              summary="Name faces (moves their crops into the character's folder and records it in the manifest)",
              description="JSON `{\"ids\": [1, 2], \"name\": \"aoba\"}`; `name: null` un-labels.")
    def label(req: LabelRequest = Body(...)):
        from .dataset import label_faces

        need_ws()
        name = _check_name(req.name) if req.name is not None else None
        ids = list(dict.fromkeys(req.ids))
        with open_ws() as ws:
            found = {r[0] for r in ws.conn.execute(
                f"SELECT id FROM faces WHERE status='ok' AND id IN ({','.join('?' * len(ids))})", ids)}
            rows = ws.conn.execute(
                f"SELECT file FROM faces WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
        missing = [i for i in ids if i not in found]
        if missing:
            raise HTTPException(404, f"no face with id {', '.join(map(str, missing[:10]))} in the workspace")
        for r in rows:
            _inside(ws_root, r["file"])      # never move a file the manifest places outside the workspace
        n = label_faces(ws_root, ids, name)
        with open_ws() as ws:
            left = ws.conn.execute("SELECT COUNT(*) FROM faces WHERE status='ok' AND label IS NULL").fetchone()[0]
        return {"labelled": n, "name": name, "unlabeled": left}

    return app


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread and yield its base URL (``http://127.0.0.1:PORT``).

    ``port=0`` takes a free port (the socket is bound here, so there is no race). The server is
    stopped, its lifespan shut down, when the ``with`` block ends. For tests, benchmarks, notebooks.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="animeid-uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def encode_multipart(parts: Sequence[tuple[str, str | None, bytes | str, str | None]]) -> tuple[bytes, str]:
    """``multipart/form-data`` for ``(field, filename or None, data, content type or None)`` parts, with
    the standard library only: ``(body, content_type_header)``. File names are sent as given."""
    boundary = "animeid-" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, filename, data, ctype in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode("utf-8", "surrogateescape"))
        if ctype:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n")
        out.write(data.encode() if isinstance(data, str) else data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _normalise_groups(raw: Any) -> tuple[list[list[int]], set[int]]:
    """Face-id groups from whatever ``cluster_workspace`` returns (lists, dicts, objects), and the ids
    of the faces it left apart: the group with id -1 (:class:`animeid.cluster.Group`, or a dict's
    ``id`` / ``group_id``, or the key -1 of a ``{group id: faces}`` dict) holds faces that matched no
    other face, possibly of different characters, so each becomes a group of its own."""
    if isinstance(raw, dict) and "groups" in raw:
        raw = raw["groups"]
    if isinstance(raw, dict):
        raw = [{"id": k, "face_ids": v} for k, v in raw.items()]
    groups: list[list[int]] = []
    apart: set[int] = set()
    for g in raw or []:
        gid = (g.get("id", g.get("group_id")) if isinstance(g, dict)
               else getattr(g, "id", getattr(g, "group_id", None)))
        for attr in ("face_ids", "ids", "faces"):
            if isinstance(g, dict) and attr in g:
                g = g[attr]
                break
            if not isinstance(g, dict) and hasattr(g, attr):
                g = getattr(g, attr)
                break
        ids = []
        for x in g:
            x = x.get("id") if isinstance(x, dict) else getattr(x, "id", x)
            ids.append(int(x))
        try:
            left_apart = int(gid) == -1
        except (TypeError, ValueError):
            left_apart = False
        if left_apart:
            apart.update(ids)
            groups.extend([i] for i in ids)
        else:
            groups.append(ids)
    return groups, apart


def _version() -> str:
    from . import __version__

    return __version__
