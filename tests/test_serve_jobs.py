"""The web app's timeline job queue (animeid.serve.jobs): its limits (README: 429 when full, 503 while
shutting down), what a job's failure says, and how shutdown ends queued and running jobs.

The job's work is a function the test controls with events (no timers): it says when it has started
and waits until the test lets it go on. No model, no video.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi import HTTPException  # noqa: E402

from animeid.errors import InputError  # noqa: E402
from animeid.serve.jobs import TimelineJob, _Jobs  # noqa: E402

SHUT = "the server shut down before the video was read"


def _job(tmp: Path, name: str) -> TimelineJob:
    p = tmp / f"{name}.upload"
    p.write_bytes(b"video bytes")
    return TimelineJob(id=name, filename=f"{name}.mp4", every=1.0, path=p)


def test_a_full_queue_answers_429_and_a_closing_one_503_and_shutdown_cancels_both_jobs(tmp_path):
    started, release = threading.Event(), threading.Event()

    def run(job, progress):
        started.set()
        release.wait()
        progress(1.0, 2.0, 1)            # the first progress report after shutdown began ends the job
        return {"never": "reached"}

    jobs = _Jobs(run, max_pending=2)
    a = jobs.submit(_job(tmp_path, "a"))
    assert started.wait(60), "the worker never started the first job"
    b = jobs.submit(_job(tmp_path, "b"))
    assert (a.status, b.status) == ("running", "queued")
    with pytest.raises(HTTPException) as e:
        jobs.submit(_job(tmp_path, "c"))
    assert (e.value.status_code, e.value.detail) == (429, "2 videos are already waiting or being read; "
                                                          "try again later")
    assert jobs.get("c") is None, "a refused job is not kept"
    stopper = threading.Thread(target=jobs.shutdown)
    stopper.start()
    assert jobs._stop.wait(60), "shutdown never began (its stop flag is set first)"
    with pytest.raises(HTTPException) as e:
        jobs.submit(_job(tmp_path, "d"))
    assert (e.value.status_code, e.value.detail) == (503, "the server is shutting down")
    release.set()
    stopper.join(60)
    assert not stopper.is_alive()
    assert (a.status, a.error, b.status, b.error) == ("cancelled", SHUT, "cancelled", SHUT)
    assert jobs.counts() == {"cancelled": 2}
    assert not a.path.exists(), "the running job's upload is deleted when it ends"


def test_a_failed_job_says_why_and_the_worker_goes_on_with_the_next(tmp_path, caplog):
    last_started = threading.Event()

    def run(job, progress):
        if job.id == "last":             # one worker, jobs in order: every earlier job has ended
            last_started.set()
            return {}
        progress(1.0, 4.0, 1)
        if job.id == "bad":
            raise InputError("not a readable video")
        if job.id == "bug":
            raise KeyError("frames")
        return {"frames": 1}

    jobs = _Jobs(run)
    bad, bug, ok, last = (jobs.submit(_job(tmp_path, n)) for n in ("bad", "bug", "ok", "last"))
    assert last_started.wait(60), "the worker never reached the last job"
    jobs.shutdown()
    assert (bad.status, bad.error) == ("failed", "bad.mp4: not a readable video")
    assert (bug.status, bug.error) == ("failed", "bug.mp4: internal error (KeyError: 'frames')")
    assert "timeline job bug failed" in caplog.text, "an internal error is logged with its traceback"
    assert (ok.status, ok.progress, ok.result, ok.done_s, ok.duration) == ("done", 1.0, {"frames": 1}, 1.0, 4.0)
    assert last.status == "done" and jobs.counts() == {"failed": 2, "done": 2}
    assert not any(j.path.exists() for j in (bad, bug, ok, last)), "every upload deleted when its job ended"
