"""Video routes: upload a video for a timeline (a background job, :mod:`animeid.serve.jobs`) and poll it."""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile

from ..errors import InputError
from ..predict import PredictConfig
from .jobs import TimelineJob
from .schemas import Job, errors
from .state import _State, get_state
from .uploads import _display

router = APIRouter(tags=["video"])


def run_timeline(st: _State, job: TimelineJob, progress) -> dict:
    """The work of a timeline job (in the jobs' worker thread)."""
    from ..timeline import build_timeline

    tl = build_timeline(st.recognizer, job.path, every=job.every, max_frames=st.settings.max_video_frames,
                        progress=progress, cfg=PredictConfig(detect="always", detector=st.settings.detector))
    tl["video"] = job.filename                 # not the temporary file's path
    return tl


@router.post("/api/v1/timeline", status_code=202, response_model=Job, responses=errors(400, 413, 422, 429),
             summary="Who appears when: upload a video, get a job to poll",
             description="Multipart: `video` (any format FFmpeg reads) and `every` (seconds between sampled "
                         "frames, default 2). The file is checked at once (400 if it is not a readable video); "
                         "then poll `GET /api/v1/jobs/{id}` until `status` is `done` (the timeline is in "
                         "`result`) or `failed`. 501 when this install has no video decoding (`animeid[video]`).")
def timeline(video: UploadFile = File(..., description="the video"),
             every: float = Form(2.0, ge=0.001, le=600.0, description="seconds between sampled frames (0.001 to 600)"),
             st: _State = Depends(get_state)):
    from ..images import VIDEO_EXTS

    try:
        from ..video import probe
    except ModuleNotFoundError as e:        # a prediction-only install: no PyAV
        from .._util import missing_extra_hint

        raise HTTPException(501, missing_extra_hint(e) or str(e)) from None
    name = _display(video.filename, "video")
    ext = Path(video.filename or "").suffix.lower()
    job_id = secrets.token_hex(8)
    path = st.tmp_dir() / f"{job_id}{ext if ext in VIDEO_EXTS else '.video'}"
    try:
        with open(path, "xb") as f:
            shutil.copyfileobj(video.file, f, 1 << 20)
        if path.stat().st_size == 0:
            raise HTTPException(400, f"{name}: empty file (0 bytes), not a video")
        try:
            info = probe(path)
        except InputError as e:
            raise HTTPException(400, f"{name}: {e.message}") from None
        job = TimelineJob(job_id, name, float(every), path, duration=info.duration)
        return st.jobs.submit(job).to_dict()
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@router.get("/api/v1/jobs/{job_id}", response_model=Job, responses=errors(404, 422),
            summary="A timeline job's progress and result")
def job_status(job_id: str, st: _State = Depends(get_state)):
    job = st.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {_display(job_id, '?')!r} (finished jobs are kept for a while only)")
    return job.to_dict()
