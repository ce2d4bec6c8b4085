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


def test_finished_jobs_beyond_keep_are_forgotten_oldest_first_and_pending_ones_never(tmp_path):
    started = {n: threading.Event() for n in ("a", "b", "c")}
    release = threading.Event()

    def run(job, progress):
        if job.id != "c":
            progress(3.0, 4.0, 2)        # a job under way: its share of the duration, rounded
        started[job.id].set()
        if job.id == "b":                # b holds the worker until released; a and c end at once
            release.wait()
        return {"id": job.id}

    jobs = _Jobs(run, keep=1)
    a = jobs.submit(_job(tmp_path, "a"))
    b = jobs.submit(_job(tmp_path, "b"))
    try:
        assert started["b"].wait(60), "the worker never started b"   # one worker: a has ended
        c = jobs.submit(_job(tmp_path, "c"))                         # 3 jobs, keep 1: the finished a goes
        assert jobs.get("a") is None and jobs.get("b") is b and jobs.get("c") is c
        assert jobs.counts() == {"running": 1, "queued": 1}
        assert a.to_dict() == {"id": "a", "status": "done", "progress": 1.0, "filename": "a.mp4", "every": 1.0,
                               "done_s": 3.0, "duration": 4.0, "frames": 2, "error": None, "result": {"id": "a"}}
        assert (b.status, b.progress, b.done_s, b.frames) == ("running", 0.75, 3.0, 2)   # 3 s of 4
    finally:
        release.set()
    assert started["c"].wait(60), "the worker never started c"       # b has ended
    jobs.shutdown()
    assert [(j.status, j.result) for j in (b, c)] == [("done", {"id": "b"}), ("done", {"id": "c"})]
    assert jobs.counts() == {"done": 2}


def test_a_job_picked_up_after_shutdown_began_is_cancelled_unread(tmp_path):
    """The worker can take a job between shutdown's stop flag and its cancelling the queue: it is
    cancelled without being read, and its upload deleted."""
    calls = []
    jobs = _Jobs(lambda job, progress: calls.append(job.id) or {})
    jobs.shutdown()                                                  # no worker yet: only the flag
    late = _job(tmp_path, "late")
    jobs._work(late)                                                 # what the worker would run
    assert (late.status, late.error, calls, late.path.exists()) == ("cancelled", SHUT, [], False)
    assert late.finished is not None


def test_an_upload_that_cannot_be_deleted_does_not_fail_the_job(tmp_path):
    next_started = threading.Event()

    def run(job, progress):
        if job.id == "next":             # one worker, jobs in order: the first has ended
            next_started.set()
        return {"frames": 0}

    jobs = _Jobs(run)
    job = TimelineJob(id="dir", filename="dir.mp4", every=1.0, path=tmp_path / "a-folder")
    job.path.mkdir()                     # its unlink() raises IsADirectoryError
    (job.path / "inside").write_bytes(b"x")
    jobs.submit(job)
    jobs.submit(_job(tmp_path, "next"))
    assert next_started.wait(60), "the worker never reached the next job"
    jobs.shutdown()
    assert (job.status, job.error, job.result, job.progress) == ("done", None, {"frames": 0}, 1.0)
    assert (job.path / "inside").is_file(), "the folder is left as it was"
