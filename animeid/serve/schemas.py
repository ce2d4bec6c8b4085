"""The web API's response and request models: what ``/openapi.json`` documents."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Candidate", "OpenSetInfo", "FaceResult", "ImageResult", "ManyResults", "RecognizeResponse", "Job", "Error", "LabelRequest",
           "errors"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")      # open-set fields (``unknown``, ...) pass through


class Candidate(_Open):
    name: Optional[str] = Field(description="a character of the model (never 'unknown')")
    p: float = Field(description="probability among the model's characters, 0..1")


class OpenSetInfo(_Open):
    kind: str = Field(description="what the score is: 'prototype_z' or 'prototype_z+p' (open-set layer; the second "
                                  "adds the highest probability, fine-tuned networks) or 'max_proba' (older models)")
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


class RecognizeResponse(_Open):
    """``results`` always; with one picture, its fields also at the top level (as before ``results``
    was added to one-picture answers, so older clients keep working)."""
    results: list[ImageResult] = Field(description="one per `image` field, in the order sent")
    filename: Optional[str] = Field(None, description="one picture: its upload's file name")
    width: Optional[int] = Field(None, description="one picture: its width, px")
    height: Optional[int] = Field(None, description="one picture: its height, px")
    faces: Optional[list[FaceResult]] = Field(None, description="one picture: its faces")


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


def errors(*codes: int) -> dict:
    what = {400: "unreadable picture or video, or a bad name", 403: "a path outside the workspace",
            404: "not found: no such job, face, character thumbnail or workspace",
            413: "upload over the limit (counted while reading)", 415: "a request body neither JSON nor a form",
            422: "a missing or invalid field or parameter", 429: "too many videos waiting",
            501: "the model cannot enrol or forget characters"}
    return {c: {"model": Error, "description": what[c]} for c in codes}


class LabelRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=10_000, description="face ids from the manifest")
    name: Optional[str] = Field(max_length=200, description="character name; null un-labels the faces")

