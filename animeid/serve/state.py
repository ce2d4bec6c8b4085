"""What the routes share, in one place: the settings the app was made with, the model (loaded once,
lazily, thread-safely), the workspace, the timeline jobs, caches and the private temporary folder.

Routes get it with ``Depends(get_state)`` (it lives on ``app.state.animeid``), as FastAPI apps
share their settings and resources.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from ..predict import Recognizer

if TYPE_CHECKING:
    from .jobs import _Jobs

#: The page, its scripts and styles.
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: Largest picture the server decodes by default (width x height): 8K UHD fits, bombs do not.
MAX_SERVE_PIXELS = 40_000_000
_MB = 1024 * 1024
_MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
          ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".json": "application/json"}
_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Settings:
    """:func:`animeid.serve.create_app`'s options, checked there."""
    max_upload_mb: float
    max_video_mb: float
    max_pixels: int
    max_images: int
    max_video_frames: int
    page_faces: int
    save_enrollments: bool
    detector: str | None

    @property
    def save_enrolments(self) -> bool:
        """The older spelling of :attr:`save_enrollments` (still read)."""
        return self.save_enrollments

    @property
    def upload_limit(self) -> int:
        return int(self.max_upload_mb * _MB)

    @property
    def video_limit(self) -> int:
        return int(self.max_video_mb * _MB)


class _State:
    """What the routes share: settings, the model (loaded once, lazily, thread-safely), the
    workspace, the jobs, caches, the temp folder."""

    def __init__(self, model_path: Path, workspace: Path | None, tmp_parent: str | None,
                 settings: Settings | None = None):
        self.model_path = model_path
        self.workspace = workspace
        self.settings = settings
        self.jobs: _Jobs | None = None
        self.statics: dict[str, Path] = ({p.name: p for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA}
                                         if WEB_DIR.is_dir() else {})
        self._rec: Recognizer | None = None
        self._load_lock = threading.Lock()
        self._enroll_lock = threading.Lock()
        self._tmp_parent = tmp_parent
        self._tmp: Path | None = None
        self._tmp_lock = threading.Lock()
        self._guesses: dict[int, tuple[str, float]] = {}   # face id -> model's top-1 (label page)
        self._groups_cache: tuple[frozenset, list[list[int]], Any] | None = None
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

    def need_workspace(self) -> Path:
        """The workspace's folder; 404 when the app has none."""
        if self.workspace is None:
            raise HTTPException(404, "no workspace: start the server with --workspace WS to label faces")
        return self.workspace

    def open_workspace(self):
        from ..dataset import Workspace

        return Workspace(self.need_workspace())


def get_state(request: Request) -> _State:
    """The app's :class:`_State` (a FastAPI dependency)."""
    return request.app.state.animeid
