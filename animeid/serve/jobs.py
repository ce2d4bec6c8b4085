"""Background jobs (video timelines): one worker thread, progress, a bounded queue, results kept a while."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fastapi import HTTPException

from ..errors import AnimeidError

log = logging.getLogger("animeid")


@dataclass
class TimelineJob:
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

    def __init__(self, run: Callable[[TimelineJob, Callable], dict], *, max_pending: int = 8, keep: int = 64):
        self._run = run
        self._jobs: OrderedDict[str, TimelineJob] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self.max_pending = max_pending
        self.keep = keep

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(j.status for j in self._jobs.values()))

    def get(self, job_id: str) -> TimelineJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def submit(self, job: TimelineJob) -> TimelineJob:
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

    def _work(self, job: TimelineJob) -> None:
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

