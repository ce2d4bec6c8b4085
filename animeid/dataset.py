"""Dataset workspaces: from episodes and illustrations to a labelled, exported face dataset.

A *workspace* is a folder::

    WS/manifest.sqlite        every face: source file, timestamp or page, box, score, hash, label, split
    WS/unlabeled/*.png        crops nobody has named yet
    WS/<character>/*.png      crops the user moved there (any Unicode name)

Stages (each a function here; the CLI only translates flags):

* :func:`collect` -- frames (video), detection (worker processes), crops and near-duplicate removal
  (perceptual hash) into the workspace. Resumable: every processed frame or picture is committed
  with its faces in one transaction, crops are written atomically under deterministic names, so a
  run that is killed and started again continues where it stopped and duplicates nothing.
* :func:`sync` -- records the user's folder moves (labels) and deletions in the manifest.
* :func:`import_illustrations` -- pictures of one known character, detected, cropped and labelled.
* :func:`export` -- the tidy folder-per-character layout the trainers read, resized, with a seeded
  stratified train/val/test split (``split.csv``) that keeps near-duplicates on one side only.
* :func:`stats` / :func:`contact_sheet` -- counts per character and a picture of the dataset.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import csv
import hashlib
import io
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from ._plot import label_font, pil_font
from ._util import atomic_write, progress, save_image_atomic
from .errors import DatasetError, InputError
from .images import IMAGE_EXTS, load_image, walk_files
from .names import MAX_NAME_BYTES, check_character_name, normalize_name, safe_filename

__all__ = [
    "CollectConfig",
    "CollectSummary",
    "Workspace",
    "collect",
    "sync",
    "import_illustrations",
    "export",
    "stats",
    "contact_sheet",
    "hamming",
    "group_near_duplicates",
    "SPLIT_FILE",
]

log = logging.getLogger("animeid")

MANIFEST = "manifest.sqlite"
UNLABELED = "unlabeled"
SPLIT_FILE = "split.csv"
_SCHEMA_VERSION = 1
_RESERVED = {UNLABELED, "_trash", "_rejected"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,      -- absolute path of the video or picture
    kind TEXT NOT NULL,             -- video | image | manual
    size INTEGER, mtime REAL,
    status TEXT NOT NULL,           -- partial | done | failed
    error TEXT
);
CREATE TABLE IF NOT EXISTS items (  -- one processed frame (t=...) or picture (page=0): resume markers
    source_id INTEGER NOT NULL REFERENCES sources(id),
    key TEXT NOT NULL,
    n_faces INTEGER NOT NULL,
    n_duplicates INTEGER NOT NULL,
    PRIMARY KEY (source_id, key)
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    file TEXT UNIQUE NOT NULL,      -- crop path relative to the workspace, '/' separated
    source_id INTEGER NOT NULL REFERENCES sources(id),
    time REAL,                      -- seconds into the video, NULL for pictures
    page INTEGER,                   -- picture number for pictures, NULL for videos
    x0 INTEGER, y0 INTEGER, x1 INTEGER, y1 INTEGER,   -- box in the source's pixels, before the margin
    score REAL,
    phash TEXT NOT NULL,            -- 64-bit perceptual hash of the crop, hex
    label TEXT,                     -- character name, NULL while unlabeled
    split TEXT,                     -- train | val | test after an export
    status TEXT NOT NULL DEFAULT 'ok'   -- ok | deleted (the user removed the crop)
);
CREATE INDEX IF NOT EXISTS faces_label ON faces(label);
"""


# --------------------------------------------------------------------------- hashing helpers

def _phash(img: Image.Image) -> int:
    import imagehash

    return int(str(imagehash.phash(img)), 16)


def hamming(a: int | np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between 64-bit hash ``a`` and each hash in ``b`` (uint64 array)."""
    x = np.bitwise_xor(np.uint64(a), np.asarray(b, dtype=np.uint64))
    # popcount on uint64 via byte view
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def group_near_duplicates(hashes: Sequence[int], max_distance: int) -> list[int]:
    """Union-find groups of hashes within ``max_distance`` bits of each other; returns a group id per item."""
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    arr = np.asarray([np.uint64(h) for h in hashes], dtype=np.uint64)
    for i in range(n):
        if i + 1 >= n:
            break
        d = hamming(arr[i], arr[i + 1:])
        for j in np.nonzero(d <= max_distance)[0]:
            a, b = find(i), find(i + 1 + int(j))
            if a != b:
                parent[b] = a
    return [find(i) for i in range(n)]


def _tidy(name: str) -> str:
    """A tidy version of a character or source name for file names: Unicode letters and digits kept,
    anything else ``_`` (the length is :func:`animeid.names.safe_filename`'s business)."""
    out = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in normalize_name(name))
    return out.strip("._") or "x"


def _check_character(name: str) -> str:
    return check_character_name(name, reserved=_RESERVED, error=DatasetError)


def _portable_folders(labels: Iterable[str]) -> dict[str, str]:
    """A folder name per character for an export: portable (:func:`animeid.names.safe_filename`;
    ``x:y`` -> ``x_y``, ``CON`` -> ``CON_``, no trailing dot or space), unique even where the file
    system ignores case (a clash gets ``~2``, ``~3``, ... in sorted order of the real names)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for lab in sorted(set(labels)):
        base = safe_filename(lab, max_bytes=MAX_NAME_BYTES - 4, fallback="character")
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}~{n}"
        taken.add(name.casefold())
        out[lab] = name
    return out


# --------------------------------------------------------------------------- the workspace

class Workspace:
    """A dataset workspace folder and its SQLite manifest."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False):
        self.root = Path(root)
        self.db_path = self.root / MANIFEST
        if not self.db_path.exists():
            if not create:
                raise DatasetError("not an animeid workspace (no manifest.sqlite); run `animeid collect` first", self.root)
            if self.root.exists() and not self.root.is_dir():
                raise DatasetError("exists and is not a folder", self.root)
            (self.root / UNLABELED).mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.db_path, timeout=30)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DatasetError(f"manifest is corrupt ({e})", self.db_path) from None
        ver = self.get_meta("schema_version")
        if ver is None:
            self.set_meta("schema_version", str(_SCHEMA_VERSION))
        elif int(ver) > _SCHEMA_VERSION:
            raise DatasetError(f"workspace made by a newer animeid (schema {ver} > {_SCHEMA_VERSION}); upgrade animeid", self.root)

    # -- small helpers
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def faces(self, *, labeled: bool | None = None, include_deleted: bool = False) -> list[sqlite3.Row]:
        q = "SELECT * FROM faces"
        cond = []
        if not include_deleted:
            cond.append("status='ok'")
        if labeled is True:
            cond.append("label IS NOT NULL")
        elif labeled is False:
            cond.append("label IS NULL")
        if cond:
            q += " WHERE " + " AND ".join(cond)
        return self.conn.execute(q + " ORDER BY id").fetchall()

    def all_hashes(self) -> np.ndarray:
        rows = self.conn.execute("SELECT phash FROM faces ORDER BY id").fetchall()
        return np.array([int(r[0], 16) for r in rows], dtype=np.uint64)

    def source_row(self, path: Path) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM sources WHERE path=?", (str(path),)).fetchone()

    def characters(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT label FROM faces WHERE label IS NOT NULL AND status='ok' ORDER BY label").fetchall()
        return [r[0] for r in rows]


# --------------------------------------------------------------------------- collect

@dataclass
class CollectConfig:
    """Options shared by :func:`collect` and :func:`import_illustrations`, checked when the config is
    made (:mod:`animeid.options`; a bad value raises :class:`~animeid.errors.ConfigError`).

    Parameters
    ----------
    every : float, default 5.0
        Seconds between sampled video frames (> 0; the study: ffmpeg ``fps=1/5``).
    threshold : float, optional
        Detector score threshold, 0..1 (None: the detector's own; the study: 0.7).
    margin : float, default 0.2
        Square crop margin on each side, as a share of the face box's longer side.
    crop_size : int, default 128
        Side of the crops stored in the workspace, px (``dataset export`` resizes; the study: 96).
    dedupe_distance : int, default 6
        Perceptual-hash bits (0..64): a crop this close to one in the workspace is a duplicate.
    skip_similar_frames : int or None, default 4
        A sampled frame whose difference hash is within this many bits (0..64) of the previous kept
        frame's is skipped (static scenes); None keeps every frame.
    detector : str or path, optional
        A detector name or a detector file (None: animeid's default).
    workers : int, optional
        Detection processes (None: all cores).
    segment_frames : int, default 30
        Sampled frames per video segment; the similar-frame chain starts again at each segment
        border (``every * segment_frames`` seconds), locally and on a cluster (one task each).

    Examples
    --------
    >>> collect(["episode01.mkv"], "ws", CollectConfig(every=2, crop_size=96))
    """

    every: float = 5.0            # seconds between sampled frames (the study: ffmpeg fps=1/5)
    threshold: float | None = None  # detector score threshold (None: the detector's own; the study: 0.7)
    margin: float = 0.2           # square crop margin (the study: 0.2)
    crop_size: int = 128          # crops stored in the workspace; export resizes (the study: 96)
    dedupe_distance: int = 6      # perceptual-hash bits: a crop this close to a known one is a duplicate
    skip_similar_frames: int | None = 4   # dhash bits between consecutive frames; None keeps all frames
    detector: str | None = None   # a name or a detector file (None: animeid's default detector)
    workers: int | None = None    # detection processes; None: all cores
    # sampled frames per video segment: the similar-frame chain starts again at each segment border
    # (every * segment_frames seconds), locally and on a cluster, where each segment is one task
    segment_frames: int = 30

    def __post_init__(self):
        from . import options as o

        o.check_fields(self, {"every": o.SECONDS, "threshold": o.DETECTOR_SCORE, "margin": o.MARGIN,
                              "crop_size": o.SIDE, "dedupe_distance": o.HASH_BITS,
                              "skip_similar_frames": o.whole(0, o.MAX_HASH_BITS, optional=True),
                              "detector": o.detector(), "workers": o.whole(1, 1024, optional=True),
                              "segment_frames": o.whole(1, 1_000_000)})


@dataclass
class CollectSummary:
    sources: int = 0
    skipped_sources: int = 0      # already done in an earlier run
    items: int = 0                # frames or pictures processed in this run
    faces: int = 0                # new crops written
    duplicates: int = 0           # near-duplicate crops not written
    skipped_files: int = 0        # files in the folders given that are neither pictures nor videos
    failed: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    seconds: float = 0.0
    nothing_to_read: bool = False  # no input exists or holds a video or picture: no workspace made or opened

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {"sources": self.sources, "skipped_sources": self.skipped_sources, "items": self.items,
                "faces": self.faces, "duplicates": self.duplicates, "skipped_files": self.skipped_files,
                "failed": [{"path": p, "error": e} for p, e in self.failed], "seconds": round(self.seconds, 2),
                "nothing_to_read": self.nothing_to_read}


# A unit of detection work: (source key, item key, time, page, picture or path)
@dataclass
class _DetectJob:
    source_id: int
    item_key: str
    time: float | None
    page: int | None
    image: np.ndarray | None = None
    path: str | None = None


@dataclass
class _Result:
    faces: list[tuple[tuple[int, int, int, int], float, bytes, int]]   # box, score, png bytes, phash
    error: str | None = None


def _detect_job(job: _DetectJob, cfg: CollectConfig) -> _Result:
    """Runs in a worker process: load, detect, crop, hash. Returns PNG bytes so nothing is written twice."""
    from .detect import crop_box, crop_face, detect_faces

    try:
        img = job.image if job.image is not None else load_image(job.path, "RGB", frame=job.page or 0)
        faces = detect_faces(img, threshold=cfg.threshold, detector=cfg.detector)
        out = []
        for f in faces:
            crop = crop_face(img, crop_box(f.box, cfg.detector), margin=cfg.margin, size=cfg.crop_size)
            buf = io.BytesIO()
            crop.save(buf, format="PNG")
            out.append((tuple(int(v) for v in f.box), float(f.score), buf.getvalue(), _phash(crop)))
        return _Result(out)
    except InputError as e:
        return _Result([], str(e))


def _init_worker(parent: int) -> None:
    # one thread per worker process: the parallelism is across processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A pool's worker waits for work forever once its parent is gone (killed with SIGKILL, it cannot
    # shut the pool down): this one ends itself within a second of its parent's death (``parent``: the
    # pid of the process that made the pool, given, since it may be gone before this runs).

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    import threading

    threading.Thread(target=watch, name="animeid-parent-watch", daemon=True).start()


class _Runner:
    """Runs jobs in order, inline (1 worker) or in a bounded process pool (results in input order)."""

    def __init__(self, workers: int, cfg: CollectConfig):
        self.workers = workers
        self.cfg = cfg
        self.pool = None
        if workers > 1:
            import multiprocessing as mp

            self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                               initializer=_init_worker, initargs=(os.getpid(),))

    def map(self, jobs: Iterable[_DetectJob]) -> Iterator[tuple[_DetectJob, _Result]]:
        if self.pool is None:
            for job in jobs:
                yield job, _detect_job(job, self.cfg)
            return
        window: collections.deque = collections.deque()
        limit = 2 * self.workers          # bounded prefetch: decoded frames are large
        for job in jobs:
            window.append((job, self.pool.submit(_detect_job, job, self.cfg)))
            if len(window) >= limit:
                j, fut = window.popleft()
                yield j, fut.result()
        while window:
            j, fut = window.popleft()
            yield j, fut.result()

    def videos(self, todo: Sequence[_VideoTodo]) -> Iterator[tuple[_DetectJob, _Result]]:
        """``(job, result)`` per sampled frame not done yet, video after video, each in time order.
        The pool's window spans videos: the next video's first frames are decoded while the last
        frames of the one before are still being detected."""
        return self.map(job for v in todo for job in _video_jobs(v.path, v.source_id, self.cfg, v.done, v.errors))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _time_key(t: float) -> str:
    return f"t={t:.3f}"


def _crop_name(source: Path, item_key: str, k: int) -> str:
    h = hashlib.sha1(str(source).encode("utf-8")).hexdigest()[:6]
    tag = item_key.replace("=", "").replace(".", "_")
    return safe_filename(_tidy(source.stem), f"-{h}_{tag}_{k}.png")


def _register_source(ws: Workspace, path: Path, kind: str) -> tuple[int, bool]:
    """(source id, already done). A source whose size or mtime changed is processed again."""
    st = path.stat()
    row = ws.source_row(path)
    if row is None:
        with ws.conn:
            cur = ws.conn.execute("INSERT INTO sources(path, kind, size, mtime, status) VALUES (?,?,?,?,?)",
                                  (str(path), kind, st.st_size, st.st_mtime, "partial"))
        return int(cur.lastrowid), False
    if row["status"] == "done" and row["size"] == st.st_size and row["mtime"] == st.st_mtime:
        return int(row["id"]), True
    with ws.conn:
        ws.conn.execute("UPDATE sources SET size=?, mtime=?, status='partial', error=NULL WHERE id=?",
                        (st.st_size, st.st_mtime, row["id"]))
    return int(row["id"]), False


def _set_source_status(ws: Workspace, source_id: int, status: str, error: str | None = None) -> None:
    with ws.conn:
        ws.conn.execute("UPDATE sources SET status=?, error=? WHERE id=?", (status, error, source_id))


class _Store:
    """Writes results into the workspace: dedupe, atomic crop files, one transaction per item."""

    def __init__(self, ws: Workspace, cfg: CollectConfig, summary: CollectSummary):
        self.ws, self.cfg, self.summary = ws, cfg, summary
        self.hashes = list(ws.all_hashes())

    def done_keys(self, source_id: int) -> set[str]:
        return {r[0] for r in self.ws.conn.execute("SELECT key FROM items WHERE source_id=?", (source_id,))}

    def add(self, job: _DetectJob, res: _Result, source: Path, label: str | None = None,
            label_index: int | None = None, folder: str = UNLABELED) -> int:
        """Store one item's faces; ``label`` goes to face ``label_index`` (others stay unlabeled)."""
        rows, dups = [], 0
        arr = np.array(self.hashes, dtype=np.uint64)
        for k, (box, score, png, ph) in enumerate(res.faces):
            is_labeled = label is not None and k == label_index
            if len(arr) and int(hamming(ph, arr).min()) <= self.cfg.dedupe_distance and not is_labeled:
                dups += 1
                continue
            sub = folder if is_labeled else UNLABELED
            rel = f"{sub}/{_crop_name(source, job.item_key, k)}"
            dest = self.ws.root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(dest, "wb") as f:
                f.write(png)
            rows.append((rel, job.source_id, job.time, job.page, *box, score, f"{ph:016x}",
                         label if is_labeled else None))
            self.hashes.append(ph)
            arr = np.array(self.hashes, dtype=np.uint64)
        with self.ws.conn:
            self.ws.conn.executemany(
                "INSERT OR REPLACE INTO faces(file, source_id, time, page, x0, y0, x1, y1, score, phash, label)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            self.ws.conn.execute("INSERT OR REPLACE INTO items VALUES (?,?,?,?)",
                                 (job.source_id, job.item_key, len(rows), dups))
        self.summary.items += 1
        self.summary.faces += len(rows)
        self.summary.duplicates += dups
        return len(rows)


def _expand_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]], int]:
    """Sorted (path, kind) for every video and picture named, folders searched; missing paths as
    failures; and the number of files in the folders that are neither (by ending: IMAGE_EXTS, VIDEO_EXTS)."""
    from .images import VIDEO_EXTS

    found: list[tuple[Path, str]] = []
    failed: list[tuple[str, str]] = []
    skipped = 0
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            failed.append((str(p), "no such file or folder"))
            continue
        problems: list[tuple[Path, str]] = []
        files = [p] if p.is_file() else walk_files(p, problems=problems)
        failed.extend((str(f), why) for f, why in problems)     # broken links, link loops: said, not dropped
        n_before = len(found)
        for f in files:
            ext = f.suffix.lower()
            if ext in VIDEO_EXTS:
                found.append((f.resolve(), "video"))
            elif ext in IMAGE_EXTS:
                found.append((f.resolve(), "image"))
            elif p.is_file():       # named directly: tried as a picture, Pillow knows more than endings
                found.append((f.resolve(), "image"))
            else:
                skipped += 1
        if p.is_dir() and len(found) == n_before:
            failed.append((str(p), "folder holds no videos or pictures"))
    return found, failed, skipped


@dataclass
class _VideoTodo:
    """A video collect still has to read: its source row, the frame keys stored already, and the
    first error met reading it (filled while it is read)."""
    path: Path
    source_id: int
    done: set[str]
    errors: list[str] = field(default_factory=list)


def _video_ends(todo: Sequence[_VideoTodo], results: Iterable[tuple[_DetectJob, _Result]]
                ) -> Iterator[tuple[_VideoTodo, _DetectJob | None, _Result | None]]:
    """``(video, job, result)`` per frame of a runner's stream (frames of ``todo``'s videos in
    order), and ``(video, None, None)`` once each video has no more frames to come, in ``todo``'s
    order: a video ends when a frame of a later one arrives, or when the stream does."""
    index = {v.source_id: i for i, v in enumerate(todo)}
    k = 0
    for job, res in results:
        i = index[job.source_id]
        while k < i:
            yield todo[k], None, None
            k += 1
        yield todo[i], job, res
    while k < len(todo):
        yield todo[k], None, None
        k += 1


def _video_jobs(path: Path, source_id: int, cfg: CollectConfig, done: set[str], errors: list[str]) -> Iterator[_DetectJob]:
    from .video import sample_frames

    # Frames are decoded from the start even when resuming, so that the chain of "similar to the
    # previous kept frame" decisions is replayed exactly; only detection is skipped for done frames.
    # The chain starts again at each segment border, as on a cluster (animeid.remote), where each
    # segment is sampled by its own task.
    try:
        for fr in sample_frames(path, cfg.every, skip_similar=cfg.skip_similar_frames,
                                similar_restart=cfg.every * cfg.segment_frames):
            key = _time_key(fr.time)
            if key in done:
                continue
            yield _DetectJob(source_id, key, round(fr.time, 3), None, image=fr.image)
    except InputError as e:
        errors.append(e.message)


def _resolve_workers(workers: int | None) -> int:
    n = workers if workers is not None else (os.cpu_count() or 1)
    return max(1, int(n))


def _picture_results(ws: Workspace, runner: _Runner, store: "_Store", summary: CollectSummary,
                     pictures: Sequence[Path], desc: str, disable: bool | None
                     ) -> Iterator[tuple[int, Path, list[tuple[_DetectJob, _Result]]]]:
    """Register each picture as a source and detect in the pool; yields ``(source id, path, [(job,
    result), ...])`` per readable picture: one job for a still picture (``page=0``), one per sampled
    frame (``page=k``, :data:`ANIMATION_FRAMES` at most) for an animated one.

    Pictures done in an earlier run are skipped; unreadable ones are recorded as failed (by name).
    """
    from .images import ANIMATION_FRAMES, frame_count, frame_picks

    pending = []
    for path in pictures:
        summary.sources += 1
        sid, done = _register_source(ws, path, "image")
        if done:
            summary.skipped_sources += 1
            continue
        have = store.done_keys(sid)
        pages = frame_picks(frame_count(path), ANIMATION_FRAMES)
        jobs = [_DetectJob(sid, f"page={k}", None, k, path=str(path)) for k in pages if f"page={k}" not in have]
        if not jobs:            # every frame stored by an interrupted run
            _set_source_status(ws, sid, "done")
            continue
        pending.extend(jobs)
    group: list[tuple[_DetectJob, _Result]] = []
    for job, res in progress(runner.map(pending), total=len(pending), desc=desc, unit="pic", disable=disable):
        if group and group[0][0].source_id != job.source_id:
            yield from _finish_picture(ws, summary, group)
            group = []
        group.append((job, res))
    if group:
        yield from _finish_picture(ws, summary, group)


def _finish_picture(ws: Workspace, summary: CollectSummary, group: list[tuple[_DetectJob, _Result]]
                    ) -> Iterator[tuple[int, Path, list[tuple[_DetectJob, _Result]]]]:
    job = group[0][0]
    errors = [res.error for _, res in group if res.error]
    if errors:
        summary.failed.append((job.path, errors[0].split(": ", 1)[-1]))
        log.warning("%s", errors[0])
        _set_source_status(ws, job.source_id, "failed", errors[0])
        return
    yield job.source_id, Path(job.path), group


def _inputs(inputs: Sequence[str | os.PathLike]) -> tuple[CollectSummary, list[tuple[Path, str]]]:
    """The summary :func:`collect` and :func:`import_illustrations` start from, with the unusable inputs
    noted in it, and the ``(path, kind)`` of every video and picture among the inputs."""
    summary = CollectSummary()
    sources, failed, summary.skipped_files = _expand_inputs(inputs)
    summary.failed.extend(failed)
    for path, why in failed:
        log.warning("%s: %s", path, why)
    summary.nothing_to_read = not sources
    return summary, sources


def _check_workspace_place(workspace: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse (:class:`~animeid.errors.OutputError`) a workspace inside a folder being read (the next run
    would read the workspace's own crops as new pictures) or inside another workspace."""
    from .outputs import check_not_inside_inputs, workspace_around

    ws = Path(os.path.abspath(os.path.expanduser(os.fspath(workspace))))
    check_not_inside_inputs(ws, [q for q in inputs if Path(q).is_dir()], "--workspace", "the workspace's crops",
                            holds=False)
    outer = workspace_around(ws.parent)
    if outer is not None:
        from .errors import OutputError

        raise OutputError(f"is inside the animeid workspace {outer}; give --workspace a folder outside it", ws)


@contextlib.contextmanager
def _session(summary: CollectSummary, workspace: str | os.PathLike, cfg: CollectConfig, client=None):
    """What :func:`collect` and :func:`import_illustrations` share once there is something to read:
    ``(workspace, detection pool, crop store)``, opened (the workspace created if needed); the pool
    and the workspace are closed and the time noted however the work ends. With ``client`` (a
    ``dask.distributed.Client`` or a scheduler address) detection runs on that Dask cluster
    (:mod:`animeid.remote`), connected and checked before the workspace is touched."""
    t0 = time.perf_counter()
    cluster = None
    if client is not None:
        from .remote import connect

        cluster = connect(client)
    runner = None
    root = Path(workspace)
    fresh = not (root / "manifest.sqlite").exists()
    # the user's folders, kept if nothing is read; only a fresh workspace can be removed, so an existing
    # one (tens of thousands of crops) is not walked at every start
    had = {root, *(p for p in root.rglob("*") if p.is_dir())} if fresh and root.is_dir() else set()
    try:
        ws = Workspace(workspace, create=True)
        try:
            if cluster is not None:
                from .remote import DaskRunner

                runner = DaskRunner(cluster, cfg)
            else:
                runner = _Runner(_resolve_workers(cfg.workers), cfg)
            yield ws, runner, _Store(ws, cfg, summary)
        finally:
            if runner is not None:
                runner.close()
            summary.seconds += time.perf_counter() - t0
            ws.close()
        if fresh and not summary.items and not summary.faces and summary.failed:
            _remove_empty_workspace(root, had)      # nothing could be read: no workspace is left behind
    finally:
        if cluster is not None:
            cluster.close()


def _remove_empty_workspace(root: Path, had: set[Path]) -> None:
    """Remove a workspace this run made and found nothing for: its manifest and the empty folders it
    made; folders that were there before (``had``) stay, and so does anything a user put there."""
    for name in ("manifest.sqlite", "manifest.sqlite-wal", "manifest.sqlite-shm", "manifest.sqlite-journal"):
        (root / name).unlink(missing_ok=True)
    made = [p for p in root.rglob("*") if p.is_dir() and p not in had] + ([root] if root not in had else [])
    for d in sorted(made, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()                    # only when empty


def collect(inputs: Sequence[str | os.PathLike], workspace: str | os.PathLike, cfg: CollectConfig | None = None,
            *, show_progress: bool | None = None, client=None) -> CollectSummary:
    """Frames, detection, crops and near-duplicate removal into ``workspace``.

    Videos are sampled every ``cfg.every`` seconds; pictures are taken whole (animated ones: up to
    16 frames). Every face found at ``cfg.threshold`` is cropped (square, ``cfg.margin``,
    ``cfg.crop_size`` px) into ``WS/unlabeled/`` unless its perceptual hash is within
    ``cfg.dedupe_distance`` bits of a face already in the workspace. Safe to interrupt: run it again
    and it continues.

    Parameters
    ----------
    inputs : sequence of paths
        Videos, pictures and folders (searched recursively).
    workspace : path
        The workspace folder: created if needed; not when no input exists or holds a video or
        picture (``summary.nothing_to_read``), nor when nothing could be read.
    cfg : CollectConfig, optional
        Sampling, detection, cropping and near-duplicate settings (checked when made).
    show_progress : bool, optional
        A progress bar (None: on a terminal only).
    client : dask.distributed.Client or str, optional
        A client or a scheduler address (``tcp://HOST:8786``) to decode, detect, crop and hash on
        that Dask cluster's workers (``animeid[distributed]``); this process stays the only writer
        of the workspace, which ends up the same as a local run's. The inputs must be readable by
        every worker under the same path.

    Returns
    -------
    CollectSummary
        Sources, frames or pictures read, new faces, near-duplicates dropped, seconds; failures
        per file (never fatal).

    Raises
    ------
    OutputError
        ``workspace`` lies inside an input folder or inside another workspace.
    animeid.remote.ClusterError
        An unusable cluster, before anything is written.

    Examples
    --------
    >>> from animeid.dataset import CollectConfig, collect
    >>> s = collect(["episodes/"], "ws", CollectConfig(every=5))           # doctest: +SKIP
    >>> s.sources, s.items, s.faces, s.duplicates                         # doctest: +SKIP
    (12, 3456, 2101, 388)
    >>> collect(["episodes/"], "ws", client="tcp://10.0.0.5:8786")        # doctest: +SKIP
    """
    cfg = cfg or CollectConfig()
    disable = None if show_progress is None else not show_progress
    _check_workspace_place(workspace, inputs)
    summary, sources = _inputs(inputs)
    if not sources:                  # nothing to read: no workspace is made (summary.nothing_to_read)
        return summary
    with _session(summary, workspace, cfg, client) as (ws, runner, store):
        videos = [(p, k) for p, k in sources if k == "video"]
        pictures = [(p, k) for p, k in sources if k == "image"]
        todo = []
        for path, _ in videos:
            summary.sources += 1
            sid, done = _register_source(ws, path, "video")
            if done:
                summary.skipped_sources += 1
                continue
            todo.append(_VideoTodo(path, sid, store.done_keys(sid)))
        # one stream of frames over all videos, so that workers never wait at a video's end
        desc = todo[0].path.name if len(todo) == 1 else f"{len(todo)} videos"
        frames = progress(runner.videos(todo), desc=desc, unit="frame", disable=disable)
        for video, job, res in _video_ends(todo, frames):
            if job is not None:
                store.add(job, res, video.path)
                continue
            why = video.errors[0] if video.errors else None
            if why:
                summary.failed.append((str(video.path), why))
                log.warning("%s: %s", video.path, why)
            _set_source_status(ws, video.source_id, "failed" if why else "done", why)
        # pictures: one source each, detection spread over the pool
        for sid, path, results in _picture_results(ws, runner, store, summary, [p for p, _ in pictures],
                                                   "pictures", disable):
            for job, res in results:
                store.add(job, res, path)
            _set_source_status(ws, sid, "done")
    return summary


# --------------------------------------------------------------------------- import & sync

def import_illustrations(inputs: Sequence[str | os.PathLike], workspace: str | os.PathLike, character: str,
                         cfg: CollectConfig | None = None, *, whole_if_none: bool = True,
                         show_progress: bool | None = None, client=None) -> CollectSummary:
    """Pictures of one character: the largest face of each is cropped into ``WS/<character>/``.

    Other faces in the same picture go to ``unlabeled/``. A picture where no face is found but which
    looks like a face crop already (``whole_if_none``: square-ish and small) is taken whole. As with
    :func:`collect`, no workspace is made when no input exists or holds a video or picture.

    Parameters
    ----------
    inputs : sequence of paths
        Pictures and folders (searched recursively); a video is refused by name (use :func:`collect`).
    workspace : path
        The workspace folder (created if needed, as in :func:`collect`).
    character : str
        Whose pictures they are: the folder ``WS/<character>/`` the largest faces go to.
    cfg : CollectConfig, optional
        Detection, cropping (``margin``, ``crop_size`` px) and near-duplicate settings.
    whole_if_none : bool, default True
        Take a picture without a face found whole when it looks like a face crop.
    show_progress : bool, optional
        A progress bar (None: on a terminal only).
    client : dask.distributed.Client or str, optional
        A Dask client or scheduler address, as in :func:`collect`.

    Returns
    -------
    CollectSummary
        As :func:`collect`'s; failures per file (never fatal).

    Raises
    ------
    DatasetError
        ``character`` cannot be a character's folder name (empty, reserved, too long).
    OutputError
        ``workspace`` lies inside an input folder or inside another workspace.
    animeid.remote.ClusterError
        An unusable cluster, before anything is written.

    Examples
    --------
    >>> s = import_illustrations(["fanart/aoba/"], "ws", "aoba")
    >>> s.faces, s.failed
    (37, [])
    """
    character = _check_character(character)
    cfg = cfg or CollectConfig()
    disable = None if show_progress is None else not show_progress
    _check_workspace_place(workspace, inputs)
    summary, sources = _inputs(inputs)
    if not sources:                  # nothing to read: no workspace is made (summary.nothing_to_read)
        return summary
    with _session(summary, workspace, cfg, client) as (ws, runner, store):
        for v in [p for p, k in sources if k == "video"]:
            summary.failed.append((str(v), "import takes pictures; use `animeid collect` for videos"))
        pictures = [p for p, kind in sources if kind == "image"]
        for sid, path, results in _picture_results(ws, runner, store, summary, pictures, character, disable):
            # an animated picture: the frame with the largest face (a title frame has none)
            job, res = max(results, key=lambda jr: max((_area(f[0]) for f in jr[1].faces), default=-1))
            if not res.faces and whole_if_none:
                res = _whole_picture(path, cfg)
            if not res.faces:
                summary.failed.append((str(path), "no face found"))
                log.warning("%s: no face found", path)
                _set_source_status(ws, sid, "done", "no face found")
                summary.items += 1
                continue
            store.add(job, res, path, label=character, label_index=int(np.argmax([_area(f[0]) for f in res.faces])),
                      folder=character)
            _set_source_status(ws, sid, "done")
    return summary


def _area(box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _whole_picture(path: Path, cfg: CollectConfig) -> _Result:
    """A picture that is a face crop already (small and nearly square) as one face."""
    img = load_image(path, "RGB")
    w, h = img.size
    if max(w, h) > 512 or not (0.75 <= w / h <= 1.33):
        return _Result([])
    crop = img.resize((cfg.crop_size, cfg.crop_size), Image.LANCZOS)
    buf = io.BytesIO()
    crop.save(buf, format="PNG")
    return _Result([((0, 0, w, h), 0.0, buf.getvalue(), _phash(crop))])


@dataclass
class SyncSummary:
    labeled: int = 0
    unlabeled: int = 0
    moved: int = 0
    deleted: int = 0
    added: int = 0
    characters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def sync(workspace: str | os.PathLike) -> SyncSummary:
    """Record the user's sorting: a crop in ``WS/<name>/`` is labelled ``name``; one in ``unlabeled/``
    is unlabelled; a crop removed from disk is marked deleted (and stays out of later collects).
    Pictures the user put into a character folder by hand are added as labelled faces.

    Parameters
    ----------
    workspace : path
        The workspace whose folders the user sorted.

    Returns
    -------
    SyncSummary
        ``labeled``, ``unlabeled`` (faces now), ``moved``, ``deleted``, ``added`` (this sync) and
        ``characters`` (``{name: faces}``).

    Raises
    ------
    DatasetError
        ``workspace`` is not a workspace (or one of a newer animeid).

    Examples
    --------
    >>> s = sync("ws")           # after moving crops from ws/unlabeled/ into ws/aoba/ by hand
    >>> s.labeled, s.characters
    (120, {'aoba': 64, 'hifumi': 56})
    """
    out = SyncSummary()
    with Workspace(workspace) as ws:
        on_disk: dict[str, str] = {}   # file name -> relative path
        for d in sorted(ws.root.iterdir()):
            if not d.is_dir() or d.name.startswith(".") or (d / ".animeid-output").exists():
                continue                  # an animeid output folder (an older animeid let some in here): not faces
            real_d = os.path.realpath(d)
            for f in sorted(d.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith("."):
                    if f.is_symlink() and os.path.dirname(os.path.realpath(f)) != real_d:
                        log.warning("%s: a link to %s, not a face sorted into %s: left out", f,
                                    os.path.realpath(f), d.name)
                        continue          # another folder's face would be labelled twice
                    on_disk.setdefault(f.name, f"{d.name}/{f.name}")
        known = {}
        updates, deletions = [], []
        for row in ws.faces(include_deleted=True):
            name = Path(row["file"]).name
            known[name] = row
            rel = on_disk.get(name)
            if rel is None:
                if row["status"] != "deleted":
                    deletions.append(row["id"])
                continue
            folder = rel.split("/", 1)[0]
            label = None if folder in _RESERVED else normalize_name(folder)
            if rel != row["file"] or label != row["label"] or row["status"] != "ok":
                if rel != row["file"]:
                    out.moved += 1
                updates.append((rel, label, row["id"]))
        new_rows = []
        manual_src = None
        for name, rel in on_disk.items():
            if name in known:
                continue
            folder = rel.split("/", 1)[0]
            if folder in _RESERVED:
                continue
            try:
                img = load_image(ws.root / rel, "RGB")
            except InputError as e:
                log.warning("%s", e)
                continue
            if manual_src is None:
                with ws.conn:
                    ws.conn.execute("INSERT OR IGNORE INTO sources(path, kind, status) VALUES (?,?,?)",
                                    ("<added by hand>", "manual", "done"))
                manual_src = ws.conn.execute("SELECT id FROM sources WHERE path='<added by hand>'").fetchone()[0]
            w, h = img.size
            new_rows.append((rel, manual_src, None, None, 0, 0, w, h, None, f"{_phash(img):016x}",
                             normalize_name(folder)))
        with ws.conn:
            ws.conn.executemany("UPDATE faces SET file=?, label=?, status='ok' WHERE id=?", updates)
            ws.conn.executemany("UPDATE faces SET status='deleted' WHERE id=?", [(i,) for i in deletions])
            ws.conn.executemany(
                "INSERT INTO faces(file, source_id, time, page, x0, y0, x1, y1, score, phash, label)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)", new_rows)
        out.deleted = len(deletions)
        out.added = len(new_rows)
        for row in ws.faces():
            if row["label"] is None:
                out.unlabeled += 1
            else:
                out.labeled += 1
                out.characters[row["label"]] = out.characters.get(row["label"], 0) + 1
    return out


def label_faces(workspace: str | os.PathLike, face_ids: Sequence[int], name: str | None) -> int:
    """Give ``name`` (None: unlabel) to faces by id, moving their crops to the matching folder.

    Parameters
    ----------
    workspace : path
        The workspace.
    face_ids : sequence of int
        Face ids of the manifest (as ``cluster``, ``suggest`` and the label page show them).
    name : str or None
        The character; None moves the faces back to ``unlabeled/``.

    Returns
    -------
    int
        The faces labelled (an id given twice counts once).

    Raises
    ------
    DatasetError
        Not a workspace, no face with one of the ids, or a name that cannot be a character's folder.

    Examples
    --------
    >>> label_faces("ws", [3, 7, 12], "aoba")
    3
    """
    if name is not None:
        name = _check_character(name)
    n = 0
    with Workspace(workspace) as ws:
        for fid in dict.fromkeys(int(i) for i in face_ids):
            row = ws.conn.execute("SELECT * FROM faces WHERE id=? AND status='ok'", (int(fid),)).fetchone()
            if row is None:
                raise DatasetError(f"no face with id {fid}", ws.root)
            src = ws.root / row["file"]
            rel = f"{name if name is not None else UNLABELED}/{Path(row['file']).name}"
            dst = ws.root / rel
            if src != dst:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.exists():
                    os.replace(src, dst)
            with ws.conn:
                ws.conn.execute("UPDATE faces SET file=?, label=? WHERE id=?", (rel, name, row["id"]))
            n += 1
    return n


# --------------------------------------------------------------------------- export

def _split_groups(labels: list[str], groups: list[int], seed: int, fractions: tuple[float, float, float]
                  ) -> list[str]:
    """Stratified split by character where every near-duplicate group lands on one side only."""
    rng = np.random.default_rng(seed)
    names = ("train", "val", "test")
    out = [""] * len(labels)
    by_label: dict[str, dict[int, list[int]]] = {}
    for i, (lab, g) in enumerate(zip(labels, groups)):
        by_label.setdefault(lab, {}).setdefault(g, []).append(i)
    for lab in sorted(by_label):
        gs = list(by_label[lab].values())
        order = rng.permutation(len(gs))
        total = sum(len(g) for g in gs)
        want = np.array(fractions) * total
        have = np.zeros(3)
        # test and val (those asked for: a fraction of 0 means none) first get a group each when the
        # character has three or more groups
        first = [k for k in (2, 1) if fractions[k] > 0] if len(gs) >= 3 else []
        for rank, gi in enumerate(order):
            members = gs[gi]
            if rank < len(first):
                k = first[rank]         # first group -> test, second -> val
            else:
                k = int(np.argmax(want - have))
            have[k] += len(members)
            for i in members:
                out[i] = names[k]
    return out


def export(workspace: str | os.PathLike, out: str | os.PathLike, *, size: int = 96, seed: int = 0,
           val: float = 0.1, test: float = 0.1, group_distance: int = 10, min_per_character: int = 1,
           fmt: str = "png", overwrite: bool = False) -> dict:
    """Write the labelled faces as ``out/<character>/<character>_0001.png`` plus ``out/split.csv``.

    Folder and file names are portable versions of the character's name (:func:`_portable_folders`:
    ``What?`` -> ``What_``); ``split.csv``'s ``label`` column keeps the exact name.

    Faces are resized to ``size`` x ``size``. The split is seeded and stratified by character;
    crops whose perceptual hashes lie within ``group_distance`` bits are grouped and each group goes
    to one split only, so near-duplicates never straddle train and test.

    ``out`` is claimed by :func:`animeid.outputs.prepare_output_dir` before anything is written: a
    new or empty folder, or (with ``overwrite``) an earlier export holding nothing else; the
    workspace, a folder holding it, and a folder with files animeid did not write are refused
    (:class:`~animeid.errors.OutputError`). The faces are written into a hidden folder inside
    ``out`` and moved into place when all are done, so a failed export leaves the previous one whole.

    Parameters
    ----------
    workspace : path
        The workspace.
    out : path
        The dataset folder to write (new or empty, or an earlier export with ``overwrite``).
    size : int, default 96
        Side of the exported faces in pixels.
    seed : int, default 0
        Seed of the split.
    val, test : float, default 0.1, 0.1
        Shares of each character's faces held out for validation and test (``val + test < 1``).
    group_distance : int, default 10
        Perceptual-hash bits (0..64) within which faces are near-duplicates kept in one part.
    min_per_character : int, default 1
        Characters with fewer labelled faces are left out.
    fmt : {"png", "jpg", "webp"}
        The pictures' format.
    overwrite : bool, default False
        Replace an earlier export in ``out``.

    Returns
    -------
    dict
        ``{"out", "faces", "missing" (labelled faces whose crop is gone), "size", "characters":
        {name: {"train": n, "val": n, "test": n}}}``.

    Raises
    ------
    ConfigError
        A bad option (``size``, ``val + test >= 1``, ``fmt``, ...), before anything is read.
    DatasetError
        Not a workspace, or no labelled faces to export.
    OutputError
        ``out`` cannot be claimed (see above).

    Examples
    --------
    >>> r = export("ws", "data/mine", size=96, val=0.1, test=0.2)
    >>> r["characters"]["aoba"]
    {'train': 45, 'val': 6, 'test': 13}
    """
    from . import options as o
    from .errors import ConfigError
    from .outputs import prepare_output_dir

    size = o.SIDE.check("size", size)
    seed = o.whole().check("seed", seed)
    val = o.share(hi_open=True).check("val", val)
    test = o.share(hi_open=True).check("test", test)
    if val + test >= 1:
        raise ConfigError("test", f"val + test must leave faces for training (below 1), got {val:g} + {test:g}")
    group_distance = o.HASH_BITS.check("group_distance", group_distance)
    min_per_character = o.whole(1).check("min_per_character", min_per_character)
    fmt = o.choice(("png", "jpg", "webp")).check("fmt", fmt)
    with Workspace(workspace) as ws:
        rows = ws.faces(labeled=True)
        if not rows:
            raise DatasetError("no labeled faces to export: sort crops into character folders, then "
                               "`animeid dataset sync`", ws.root)
        counts = collections.Counter(r["label"] for r in rows)
        keep = [r for r in rows if counts[r["label"]] >= min_per_character]
        labels = [r["label"] for r in keep]
        groups = group_near_duplicates([int(r["phash"], 16) for r in keep], group_distance)
        train = 1.0 - val - test
        splits = _split_groups(labels, groups, seed, (train, val, test))
        od = prepare_output_dir(out, "dataset export", overwrite=overwrite, protect=[ws.root])
        out = od.path
        folders = _portable_folders(labels)     # the folder is portable; split.csv keeps the real name
        tmp = Path(tempfile.mkdtemp(prefix=".animeid-tmp-", dir=out))
        try:
            index: dict[str, int] = collections.Counter()
            lines = []
            missing = 0
            for r, split in zip(keep, splits):
                src = ws.root / r["file"]
                try:
                    img = load_image(src, "RGB")
                except InputError as e:
                    log.warning("%s", e)
                    missing += 1
                    continue
                lab = r["label"]
                index[lab] += 1
                rel = f"{folders[lab]}/{safe_filename(_tidy(lab), f'_{index[lab]:04d}.{fmt}')}"
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                img.resize((size, size), Image.LANCZOS).save(dest)
                lines.append((rel, lab, split))
            with open(tmp / SPLIT_FILE, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["path", "label", "split"])
                w.writerows(lines)
            od.clear()                       # the earlier export's files only (nothing else is there)
            od.record(*(f.relative_to(tmp) for f in tmp.rglob("*") if f.is_file()))
            for entry in sorted(tmp.iterdir()):
                os.replace(entry, out / entry.name)
            tmp.rmdir()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # record the split in the manifest
        with ws.conn:
            ws.conn.executemany("UPDATE faces SET split=? WHERE id=?", [(s, r["id"]) for r, s in zip(keep, splits)])
    per = collections.Counter((lab, s) for _, lab, s in lines)
    return {"out": str(out), "faces": len(lines), "missing": missing, "size": size,
            "characters": {lab: {s: per[(lab, s)] for s in ("train", "val", "test")} for lab in sorted(counts)}}


# --------------------------------------------------------------------------- stats

def _folder_counts(root: Path) -> dict[str, dict[str, int]]:
    split_file = root / SPLIT_FILE
    counts: dict[str, dict[str, int]] = {}
    if split_file.exists():
        with open(split_file, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                counts.setdefault(row["label"], collections.Counter())[row["split"]] += 1
        return {k: dict(v) for k, v in counts.items()}
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            n = sum(1 for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if n:
                counts[d.name] = {"all": n}
    return counts


def stats(path: str | os.PathLike, *, sheet: str | os.PathLike | None = None, per_character: int = 12) -> dict:
    """Counts per character of a workspace or an exported folder; draws a contact sheet PNG.

    Parameters
    ----------
    path : path
        A workspace, or a folder-per-character dataset (an export).
    sheet : path, optional
        The contact sheet to write; default ``WS/contact_sheet.png`` for a workspace,
        ``<folder>_contact_sheet.png`` beside a dataset folder. Never over a file animeid did not draw.
    per_character : int, default 12
        Faces shown per character on the sheet.

    Returns
    -------
    dict
        ``{"path", "kind" ("workspace" or "folder"), "total", "characters": {name: counts},
        "contact_sheet"}``: a workspace's counts are ``"all"`` and one per split its faces were
        exported to (unlabelled faces under ``"(unlabeled)"``); an export's come from ``split.csv``
        (``"train"``, ``"val"``, ``"test"``), a plain folder's are ``"all"``.

    Raises
    ------
    InputError
        No such folder.
    DatasetError
        It holds no faces.
    OutputError
        The sheet would replace a file animeid did not draw, or land among the faces it counts.

    Examples
    --------
    >>> stats("ws")["characters"]["aoba"]["all"]
    64
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError("no such workspace or dataset folder", root)
    files: dict[str, list[Path]] = {}
    if (root / MANIFEST).exists():
        with Workspace(root) as ws:
            rows = ws.faces()
            counts: dict[str, dict[str, int]] = {}
            for r in rows:
                lab = r["label"] or "(unlabeled)"
                c = counts.setdefault(lab, collections.Counter())
                c["all"] += 1
                if r["split"]:
                    c[r["split"]] += 1
                files.setdefault(lab, []).append(ws.root / r["file"])
            counts = {k: dict(v) for k, v in sorted(counts.items())}
            kind = "workspace"
    else:
        counts = _folder_counts(root)
        for lab in counts:
            d = root / lab
            files[lab] = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS) if d.is_dir() else []
        kind = "folder"
    if not counts:
        raise DatasetError("holds no faces", root)
    from .outputs import check_not_inside_inputs, is_animeid_png, prepare_output_file

    sheet_path = Path(sheet) if sheet else root / "contact_sheet.png"
    if kind == "folder" and sheet is None:
        sheet_path = root.parent / f"{root.name}_contact_sheet.png"
    own_place = sheet is None and kind == "workspace"      # WS/contact_sheet.png: the workspace's own picture
    prepare_output_file(sheet_path, own=is_animeid_png, suffix=".png", what="a contact sheet", overwrite=True, option="--sheet",
                        in_workspace=own_place)        # never over a picture or file animeid did not draw
    if not own_place:                  # not among the faces it counts (the next count would include it)
        check_not_inside_inputs(sheet_path.parent, [root], "--sheet", "the sheet", holds=False)
    contact_sheet(files, sheet_path, per_character=per_character)
    total = sum(v.get("all", sum(v.values())) for v in counts.values())
    return {"path": str(root), "kind": kind, "total": total, "characters": counts, "contact_sheet": str(sheet_path)}


def contact_sheet(files: dict[str, list[Path]], path: str | os.PathLike, *, per_character: int = 12,
                  thumb: int = 64) -> Path:
    """A PNG with one row per character: its name, its count, and up to ``per_character`` faces."""
    from PIL import ImageDraw

    names = sorted(files)
    label_w = 180
    W = label_w + per_character * (thumb + 4) + 4
    H = max(1, len(names)) * (thumb + 4) + 4
    sheet = Image.new("RGB", (W, H), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = label_font(14)
    for row, name in enumerate(names):
        y = 4 + row * (thumb + 4)
        draw.text((6, y + thumb // 2 - 16), name[:22], fill=(20, 20, 20), font=pil_font(14, name[:22]) or font)
        draw.text((6, y + thumb // 2 + 2), f"{len(files[name])} faces", fill=(110, 110, 110), font=font)
        picks = files[name]
        if len(picks) > per_character:
            idx = np.linspace(0, len(picks) - 1, per_character).round().astype(int)
            picks = [picks[i] for i in idx]
        for col, f in enumerate(picks):
            try:
                im = load_image(f, "RGB").resize((thumb, thumb), Image.BILINEAR)
            except InputError:
                continue
            sheet.paste(im, (label_w + 4 + col * (thumb + 4), y))
    save_image_atomic(sheet, path)
    return Path(path)


