"""Anime face detection, face crops and previews.

Structure
---------
* :class:`Face` - one detected face: a box ``(x0, y0, x1, y1)`` in the *original* picture's pixels
  (``x1``/``y1`` exclusive, clipped to the picture) and the detector's score.
* :class:`Detector` - the small interface every detector implements (``name``, ``min_face``,
  ``detect_array``); :data:`DETECTORS` maps a name to a factory and :func:`get_detector` builds
  each detector once, lazily and thread-safely. A second detector is added by writing one class
  and one line in :data:`DETECTORS`.
* :class:`AnimeFaceDetector` - the AnimeFace 2009 detector (nvxs 1.0.2, as bundled by the PyPI
  package ``animeface==2.0.3``). Its Python extension ``animeface._nvxs`` reads Pillow's private
  ``Imaging`` struct and silently finds *no faces* with Pillow >= 12, so the bundled C library
  ``libnvxs`` is called directly with :mod:`ctypes`, doing exactly what the extension's C code did
  (same pre-processing, same detector parameters: step 4, scale factor 1.095, smallest window
  42.592 px). The ``animeface`` package itself is never imported; only its library file is used.
* :func:`detect_faces_batch` / :func:`detect_faces` - the public detection: load the picture,
  scan it in one or two passes (see *Small pictures* below), map the boxes back to the original
  pixels, clip, threshold, merge the passes and sort by score (highest first).
* :func:`detect_faces_or_whole_batch` / :func:`detect_faces_or_whole` - the same, but a picture
  in which nothing is found is taken to be a face crop itself and gives one :class:`Face`
  covering the whole picture (score ``0.0``). :func:`detect_faces` never does this.
* :func:`crop_faces` / :func:`crop_face` - a square crop around a face box with a margin, padded
  where it leaves the picture, resized to ``size``.
* :func:`draw_faces` - a preview with the boxes and their scores (or labels).

Small pictures
--------------
AnimeFace finds no face smaller than about 43 px, nor a face that fills the picture (its search
windows lie inside the picture and need some context around the face). Measured on the real data
(``bench/detect_bench.py`` and the face-crop folders), upscaling helps small *illustrations* a lot
(a 128 px thumbnail of the benchmark: 15 -> 33 of 39 faces) but *hurts* face crops (a blurred,
upscaled 96 px crop is rarely recognised: 96 % found at its own size, about 20 % at 300 px). So:

1. every picture is scanned at its own size; one whose shorter side is under :data:`PAD_BELOW`
   is first padded on each side by :data:`PAD_FRACTION` of its shorter side (edge pixels
   replicated), so that a face crop (96x96, 128x128) shows its whole face with some context;
2. a picture whose shorter side is under ``upscale_to`` (default :data:`AUTO_UPSCALE_TO`) is
   also scanned upscaled (bicubic, by at most :data:`MAX_UPSCALE`), without padding;

faces of the two passes overlapping by IoU >= 0.4 are one face (the higher score is kept).
Pictures over :data:`MAX_DETECT_PIXELS` are scanned downscaled. Boxes are always given in the
original picture's pixels, clipped to it.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence, Union, runtime_checkable

import numpy as np
from PIL import Image, ImageDraw

from .._plot import label_font, pil_font
from ..errors import InputError
from ..images import ImageTyping, load_image, to_array
from ..registry import Registry

__all__ = [
    "Face",
    "Detector",
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "default_threshold",
    "crop_box",
    "crop_box_for",
    "detector_id",
    "measure_crop_fill",
    "check_detector_name",
    "AUTO_UPSCALE_TO",
    "PAD_BELOW",
    "PAD_FRACTION",
    "MAX_UPSCALE",
    "MAX_DETECT_PIXELS",
    "detect_in_animation",
    "animation_fields",
    "get_detector",
    "detect_faces_batch",
    "detect_faces",
    "detect_faces_or_whole_batch",
    "detect_faces_or_whole",
    "crop_face",
    "crop_faces",
    "draw_faces",
    "iou",
    "detect_files",
]

#: A picture whose shorter side is under this many pixels is upscaled to it before detection
#: (``upscale_to=None``). AnimeFace's smallest face is ~43 px: a face taking a seventh of the
#: shorter side of a 300 px picture is still found.
AUTO_UPSCALE_TO = 300
#: Pictures whose shorter side (before upscaling) is under this many pixels are padded before
#: detection, so that a face filling the picture (a face crop) does not touch its border.
PAD_BELOW = 256
#: Padding added on each side of a small picture, as a fraction of its shorter side.
PAD_FRACTION = 0.33
#: The upscaling factor is at most this (a 1x1 or 2x5000 picture is not blown up for nothing).
MAX_UPSCALE = 4.0
#: Larger pictures are downscaled to about this many pixels for detection (memory: the detector
#: holds ~32 bytes per pixel; time grows with the pixel count). 3840x2160 (4K UHD) fits.
MAX_DETECT_PIXELS = 3840 * 2160

BoxLike = Union["Face", Sequence[float]]
Fill = Union[str, int, Sequence[int]]


# --------------------------------------------------------------------------------------------
# Face
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Face:
    """One detected face.

    ``box``: ``(x0, y0, x1, y1)`` in the original picture's pixels, ``x1``/``y1`` exclusive,
    clipped to the picture; this is the detector's own box, before any crop margin.
    ``score``: the detector's likelihood (AnimeFace: 0..1, most true faces are above 0.99).
    """

    box: tuple[int, int, int, int]
    score: float

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "score": round(float(self.score), 4)}


# --------------------------------------------------------------------------------------------
# Detector interface and registry
# --------------------------------------------------------------------------------------------

@runtime_checkable
class Detector(Protocol):
    """What a face detector provides. ``detect_array`` gives every candidate the detector
    reports, in the given array's pixels: no threshold, no upscaling, no padding."""

    name: str
    min_face: int

    def detect_array(self, rgb: np.ndarray) -> list[Face]:
        ...


def _animeface() -> Detector:
    from .animeface import AnimeFaceDetector

    return AnimeFaceDetector()


def _learned() -> Detector:
    from .learned import LearnedDetector

    return LearnedDetector()


#: The detector used when none is named: animeid's learned detector (see README's model card).
DEFAULT_DETECTOR = "default"

#: Detector factories by name. Add a detector here (a class following :class:`Detector`).
#: Besides these names, :func:`get_detector` takes the path of a detector file that
#: ``animeid detector train`` wrote.
DETECTORS: Registry[Callable[[], Detector]] = Registry(
    "face detector", option="detector", hint="or the path of a detector file (animeid detector train)",
    entries={"default": _learned, "animeface": _animeface})

_detectors: dict[str, Detector] = {}
_detectors_lock = threading.Lock()


def _is_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith(".onnx") or os.path.exists(name)


def check_detector_name(name: str | os.PathLike, option: str | None = None) -> str | os.PathLike:
    """``name`` when it is a key of :data:`DETECTORS` or looks like a detector file's path (whether
    the file is one is found when it is opened); :class:`~animeid.errors.UnknownNameError` listing
    the known names otherwise (``option``: the option that held it, for the message)."""
    from ..errors import UnknownNameError

    key = os.fspath(name)
    if key in DETECTORS or _is_path(key):
        return name
    try:
        DETECTORS.get(key)
    except UnknownNameError as e:                    # the registry's message, with the option given here
        raise UnknownNameError(e.problem, option or e.option) from None
    return name


def get_detector(name: str | os.PathLike | None = None) -> Detector:
    """The detector called ``name`` (a key of :data:`DETECTORS`, or the path of a detector file;
    ``None``: :data:`DEFAULT_DETECTOR`), built on first use and shared afterwards (thread-safe).

    Parameters
    ----------
    name : str or path, optional
        ``"default"`` (animeid's learned detector), ``"animeface"`` (the study's AnimeFace 2009), a
        name registered in :data:`DETECTORS`, or a detector file (``.onnx``, from ``animeid detector
        train``); ``None``: :data:`DEFAULT_DETECTOR`.

    Returns
    -------
    Detector
        ``name``, ``min_face`` and ``detect_array(rgb)`` (every candidate :class:`Face` of an
        ``(H, W, 3)`` uint8 array), plus ``default_threshold`` / ``crop_scale`` where it has them.

    Raises
    ------
    UnknownNameError
        An unknown name (a :class:`ValueError`; the message lists the known names).
    ModelFileError
        A detector file that is missing or is not one.

    Examples
    --------
    >>> from animeid.detect import get_detector
    >>> get_detector("animeface").name
    'animeface'
    """
    key = DEFAULT_DETECTOR if name is None else os.fspath(name)
    det = _detectors.get(key)
    if det is not None:
        return det
    check_detector_name(key)
    if key in DETECTORS:
        factory = DETECTORS[key]
    else:
        from .learned import LearnedDetector

        key = os.path.realpath(key)
        factory = lambda: LearnedDetector(key)  # noqa: E731
    with _detectors_lock:
        det = _detectors.get(key)
        if det is None:
            det = factory()
            _detectors[key] = det
            _detectors[os.fspath(name) if name is not None else DEFAULT_DETECTOR] = det
    return det


def crop_box(box: Sequence[float], detector: str | os.PathLike | None = None) -> tuple[float, float, float, float]:
    """The box a face crop is cut around, for a box found by ``detector``: scaled about its centre by
    the detector's ``crop_scale`` (1 for AnimeFace), so that crops with a given margin have the
    geometry the recognisers were trained on (AnimeFace's boxes). The learned detector's boxes are
    about 7 % smaller than AnimeFace's (detect-tadne, 39 faces: median side ratio 0.928 for v2, 0.925
    for v3): its ``crop_scale`` is 1.078."""
    return _scaled(box, float(getattr(get_detector(detector), "crop_scale", 1.0)))


def _scaled(box: Sequence[float], scale: float) -> tuple[float, float, float, float]:
    """``box`` scaled by ``scale`` about its centre (as floats; unchanged when ``scale`` is 1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if scale == 1.0:
        return x0, y0, x1, y1
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * scale, (y1 - y0) / 2 * scale
    return cx - hw, cy - hh, cx + hw, cy + hh


def detector_id(detector: str | os.PathLike | None = None) -> str:
    """A stable name of a detector, for what is measured with it: ``"animeface"``, or a learned
    detector file's name (the shipped one: ``"animeid-faces-v3-int8.onnx"``; a file named like one
    animeid shipped but holding other bytes gets ``"@"`` and its hash added:
    :attr:`~animeid.detect.learned.LearnedDetector.file_id`)."""
    det = get_detector(detector)
    file_id = getattr(det, "file_id", None)
    if file_id is not None:
        return str(file_id)
    path = getattr(det, "path", None)
    return Path(path).name if path is not None else str(det.name)


def _geometry_ids(detector: str | os.PathLike | None) -> set[str]:
    """The detector names under which a measured crop fill holds for ``detector``. They are:

    * its own :func:`detector_id`;
    * the float32 file it was quantized from;
    * the shipped pair's two names, when it is either of them (by its bytes, wherever it lies) or an int8
      copy of the shipped float32 file;
    * the names in its metadata's ``crop_fill_from``: earlier detectors whose boxes of the same faces
      were measured to have the same size (the shipped files list the ones they replaced, so that
      models trained with those keep their fill).
    """
    from .learned import DEFAULT_DETECTOR_FILE, FLOAT_DETECTOR_FILE

    det = get_detector(detector)
    ids = {detector_id(detector)}
    source = getattr(det, "quantized_from", None)
    if source:
        ids.add(source)
    shipped = {DEFAULT_DETECTOR_FILE.name, FLOAT_DETECTOR_FILE.name}
    if FLOAT_DETECTOR_FILE.name in ids:        # the shipped float32 file (anywhere) or an int8 copy of it
        ids |= shipped
    ids.update(getattr(det, "crop_fill_from", ()))
    return ids


#: :func:`measure_crop_fill`: face crops searched at most, and found at least for a measure
CROP_FILL_SAMPLE = 100
CROP_FILL_MIN = 10


def measure_crop_fill(crops: Sequence[ImageTyping], detector: str | os.PathLike | None = None,
                      limit: int = CROP_FILL_SAMPLE) -> dict | None:
    """How much of a face crop the face fills, as ``detector`` boxes it: the geometry of a
    recogniser's training crops, so that crops cut from that detector's boxes at prediction time
    match it (:func:`crop_box_for`).

    Parameters
    ----------
    crops : sequence of pictures
        Face crops (paths or ``(H, W, 3)`` uint8 arrays); up to ``limit`` of them, evenly spaced over
        the whole sequence (a dataset in folder order: every character), are searched. The fill
        comes in steps of one pixel of the crop's side: coarse for crops under about 48 px.
    detector : str or path, optional
        As :func:`get_detector` (None: the default).

    Returns
    -------
    dict or None
        ``{"fill": median of (the longer side of the box nearest the crop's centre / the crop's
        longer side), "detector": detector_id(detector), "n": crops measured}``; None when the face
        is found in fewer than :data:`CROP_FILL_MIN` of them.
    """
    crops = list(crops)
    if not crops:
        return None
    picked = [crops[i] for i in sorted(set(np.linspace(0, len(crops) - 1, min(limit, len(crops))).round().astype(int)))]
    fills = []
    for crop, faces in zip(picked, detect_faces_batch(picked, detector=detector)):
        if not faces:
            continue
        h, w = (crop.shape[:2] if isinstance(crop, np.ndarray) else load_image(crop).size[::-1])
        box = min(faces, key=lambda f: math.hypot((f.box[0] + f.box[2] - w) / 2, (f.box[1] + f.box[3] - h) / 2)).box
        fills.append(max(box[2] - box[0], box[3] - box[1]) / max(w, h))
    if len(fills) < CROP_FILL_MIN:
        return None
    return {"fill": round(float(np.median(fills)), 4), "detector": detector_id(detector), "n": len(fills)}


def crop_box_for(box: Sequence[float], margin: float, fill: dict | None,
                 detector: str | os.PathLike | None = None) -> tuple[float, float, float, float]:
    """The box a recogniser's face crop is cut around (then widened by ``margin`` on each side): with
    the ``fill`` its training crops were measured to have (:func:`measure_crop_fill`) by this very
    detector, scaled about its centre so that the face fills the crop as much as in training;
    otherwise :func:`crop_box` (the detector's ``crop_scale``: AnimeFace's geometry). A fill measured
    with a float32 detector also holds for its int8 copy (``quantized_from``): their boxes of the same
    faces have the same size (median ratio 1.00 on 216 faces of whole pictures and on 766 face crops;
    BENCHMARKS.md), and the reverse; one measured with a detector the file names in ``crop_fill_from``
    holds too (:func:`_geometry_ids`)."""
    if not fill or fill.get("detector") not in _geometry_ids(detector) or not float(fill.get("fill", 0)) > 0:
        return crop_box(box, detector)
    return _scaled(box, 1.0 / (float(fill["fill"]) * (1 + 2 * float(margin))))


def default_threshold(detector: str | os.PathLike | None = None) -> float:
    """The score threshold a detector is used at when none is given: AnimeFace 0.7 (the study's),
    a learned detector the calibrated probability with the best F1 on its held-out pictures."""
    return float(getattr(get_detector(detector), "default_threshold", 0.7))


# --------------------------------------------------------------------------------------------
# Detection on any picture
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """How a picture is changed for one detection pass: ``t = (orig + pad) * scale`` per axis."""

    width: int
    height: int
    pad_x: int
    pad_y: int
    scale_x: float
    scale_y: float


def _make_plan(w: int, h: int, pad: float, scale: float) -> _Plan:
    pad_x = pad_y = round(min(w, h) * pad)
    pw, ph = w + 2 * pad_x, h + 2 * pad_y
    # never scan more than MAX_DETECT_PIXELS (this also bounds extreme aspect ratios)
    if pw * ph * scale * scale > MAX_DETECT_PIXELS:
        scale = math.sqrt(MAX_DETECT_PIXELS / (pw * ph))
    tw, th = max(1, round(pw * scale)), max(1, round(ph * scale))
    return _Plan(tw, th, pad_x, pad_y, tw / pw, th / ph)


def _plans(w: int, h: int, upscale_to: int) -> list[_Plan]:
    """The detection passes for a ``w`` x ``h`` picture.

    1. the picture at its own size (downscaled when huge), padded when small: this finds the
       faces of face crops, which upscaling blurs beyond AnimeFace's liking;
    2. when the shorter side is under ``upscale_to``: the picture upscaled to it, unpadded:
       this finds the small faces of small pictures.
    """
    short = min(w, h)
    plans = [_make_plan(w, h, PAD_FRACTION if short < PAD_BELOW else 0.0, 1.0)]
    if upscale_to and short < upscale_to:
        plans.append(_make_plan(w, h, 0.0, min(upscale_to / short, MAX_UPSCALE)))
    return plans


def _prepare(rgb: np.ndarray, plan: _Plan) -> np.ndarray:
    if plan.pad_x or plan.pad_y:
        rgb = np.pad(rgb, ((plan.pad_y, plan.pad_y), (plan.pad_x, plan.pad_x), (0, 0)), mode="edge")
    ph, pw = rgb.shape[:2]
    if (plan.width, plan.height) != (pw, ph):
        resample = Image.Resampling.BICUBIC if plan.width > pw else Image.Resampling.LANCZOS
        rgb = np.asarray(Image.fromarray(rgb).resize((plan.width, plan.height), resample))
    return rgb


def _map_back(face: Face, plan: _Plan, w: int, h: int) -> Face | None:
    x0, y0, x1, y1 = face.box
    bx0 = min(max(round(x0 / plan.scale_x) - plan.pad_x, 0), w)
    by0 = min(max(round(y0 / plan.scale_y) - plan.pad_y, 0), h)
    bx1 = min(max(round(x1 / plan.scale_x) - plan.pad_x, 0), w)
    by1 = min(max(round(y1 / plan.scale_y) - plan.pad_y, 0), h)
    if bx1 <= bx0 or by1 <= by0:  # entirely in the padding
        return None
    return Face((bx0, by0, bx1, by1), face.score)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


#: Two faces from different detection passes overlapping at least this much are one face.
_MERGE_IOU = 0.4


def _merge(passes: list[list[Face]]) -> list[Face]:
    """All faces of all passes, highest score first; a face overlapping a better one *found by
    another pass* is dropped (faces of one pass were already merged by the detector)."""
    tagged = sorted(((f, i) for i, faces in enumerate(passes) for f in faces),
                    key=lambda t: (-t[0].score, t[1], t[0].box[1], t[0].box[0], t[0].box[3], t[0].box[2]))
    kept: list[tuple[Face, int]] = []
    for f, i in tagged:
        if not any(j != i and iou(f.box, k.box) >= _MERGE_IOU for k, j in kept):
            kept.append((f, i))
    return [f for f, _ in kept]


def _detect_array(det: Detector, rgb: np.ndarray, threshold: float, upscale_to: int) -> list[Face]:
    h, w = rgb.shape[:2]
    passes = []
    for plan in _plans(w, h, upscale_to):
        if min(plan.width, plan.height) < det.min_face:  # no face fits
            continue
        faces = []
        for f in det.detect_array(_prepare(rgb, plan)):
            if f.score >= threshold:
                m = _map_back(f, plan, w, h)
                if m is not None:
                    faces.append(m)
        passes.append(faces)
    return _merge(passes)


def _detect_arrays(det: Detector, rgbs: list[np.ndarray], threshold: float, upscale_to: int) -> list[list[Face]]:
    """Faces of each picture. A detector with ``detect_arrays`` (a learned one: it resizes each
    picture itself, and runs pictures of one shape as a batch) is called once for all; the others
    picture by picture, through the padding and upscaling passes of the module's notes."""
    if hasattr(det, "detect_arrays"):
        return [[f for f in faces if f.score >= threshold] for faces in det.detect_arrays(rgbs)]
    return [_detect_array(det, rgb, threshold, upscale_to) for rgb in rgbs]


def _detect_batch(images: Sequence[ImageTyping], threshold: float | None, detector: str | None,
                  upscale_to: int | None, whole_if_none: bool) -> list[list[Face]]:
    if isinstance(images, (str, bytes, bytearray, os.PathLike, Image.Image, np.ndarray)):
        raise TypeError("the batch functions take a sequence of pictures; use detect_faces for one")
    up = AUTO_UPSCALE_TO if upscale_to is None else int(upscale_to)
    if up < 0:
        raise ValueError(f"upscale_to must be >= 0 (0: never upscale), got {upscale_to}")
    det = get_detector(detector)
    thr = float(getattr(det, "default_threshold", 0.7)) if threshold is None else float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold is a detector score between 0 and 1, got {threshold}")
    rgbs = [to_array(image) for image in images]
    out = _detect_arrays(det, rgbs, thr, up)
    if whole_if_none:
        out = [faces or [Face((0, 0, rgb.shape[1], rgb.shape[0]), 0.0)] for faces, rgb in zip(out, rgbs)]
    return out


def detect_faces_batch(images: Sequence[ImageTyping], *, threshold: float | None = None,
                       detector: str | os.PathLike | None = None,
                       upscale_to: int | None = None) -> list[list[Face]]:
    """Faces in each picture, highest score first.

    Parameters
    ----------
    images : sequence of pictures
        Paths, bytes, file objects, PIL images or ``(H, W, 3)`` uint8 arrays.
    threshold : float, optional
        Keep faces whose score is at least this (0..1). ``None``: the detector's own default
        (:func:`default_threshold`: 0.7 for AnimeFace, the calibrated one for a learned detector).
    detector : str or path, optional
        A name in :data:`DETECTORS` or a detector file; ``None``: :data:`DEFAULT_DETECTOR`.
    upscale_to : int, optional
        AnimeFace only: a picture whose shorter side is under this many pixels is also scanned
        upscaled to it (``None``: :data:`AUTO_UPSCALE_TO`; ``0``: never). Small pictures are also
        padded (see the module's notes). A learned detector resizes every picture itself.

    Returns
    -------
    list of list of Face
        Boxes in each picture's own pixels, clipped to it. A picture too small for any face gives ``[]``.

    Raises
    ------
    InputError
        An unreadable picture.
    UnknownNameError
        ``detector`` is neither a known name nor a path (the message lists the names).
    ModelFileError
        A detector file that is missing or is not one.

    Examples
    --------
    >>> from animeid.detect import detect_faces_batch
    >>> detect_faces_batch(["a.png", "b.png"], threshold=0.5)
    [[Face(box=(81, 81, 299, 299), score=0.93)], []]
    """
    return _detect_batch(images, threshold, detector, upscale_to, whole_if_none=False)


def detect_faces(image: ImageTyping, **kw) -> list[Face]:
    """Faces in one picture, highest score first (:func:`detect_faces_batch` for one).

    Parameters
    ----------
    image : picture
        A path, bytes, a file object, a PIL image or an ``(H, W, 3)`` uint8 array.
    **kw
        ``threshold`` (0..1), ``detector`` (a name or a detector file), ``upscale_to`` (px), as in
        :func:`detect_faces_batch`.

    Returns
    -------
    list of Face
        ``Face(box=(x0, y0, x1, y1), score)``: the box in the picture's pixels (x1/y1 exclusive),
        the score 0..1.

    Raises
    ------
    InputError, UnknownNameError, ModelFileError
        As :func:`detect_faces_batch`.

    Examples
    --------
    >>> from animeid.detect import detect_faces
    >>> detect_faces("illustration.png")
    [Face(box=(81, 81, 299, 299), score=0.93)]
    >>> detect_faces("illustration.png", detector="animeface", threshold=0.7)    # the study's detector
    [Face(box=(77, 70, 305, 298), score=0.9998)]
    """
    return detect_faces_batch([image], **kw)[0]


def detect_faces_or_whole_batch(images: Sequence[ImageTyping], *, threshold: float | None = None,
                                detector: str | os.PathLike | None = None,
                                upscale_to: int | None = None) -> list[list[Face]]:
    """Like :func:`detect_faces_batch`, but a picture where nothing is found is taken to be a face
    crop: it gives one :class:`Face` covering the whole picture, with score ``0.0``.

    Meant for pictures that are already face crops; never for whole illustrations.
    """
    return _detect_batch(images, threshold, detector, upscale_to, whole_if_none=True)


def detect_faces_or_whole(image: ImageTyping, **kw) -> list[Face]:
    """One picture through :func:`detect_faces_or_whole_batch`."""
    return detect_faces_or_whole_batch([image], **kw)[0]


# --------------------------------------------------------------------------------------------
# Face crops
# --------------------------------------------------------------------------------------------

def _box_of(box: BoxLike) -> tuple[float, float, float, float]:
    b = box.box if isinstance(box, Face) else box
    try:
        x0, y0, x1, y1 = (float(v) for v in b)
    except (TypeError, ValueError):
        raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"a box needs x0 < x1 and y0 < y1, got {box!r}")
    return x0, y0, x1, y1


def _square(box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square crop around ``box`` (see :func:`crop_face`)."""
    x0, y0, x1, y1 = box
    side = max(1, round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    left = math.floor((x0 + x1) / 2 - side / 2 + 0.5)
    top = math.floor((y0 + y1) / 2 - side / 2 + 0.5)
    return left, top, side


def _check_fill(fill: Fill) -> np.ndarray | None:
    """``fill`` checked: ``None`` for a mode name, the ``(3,)`` uint8 colour otherwise."""
    if isinstance(fill, str):
        if fill not in ("edge", "reflect", "symmetric"):
            raise ValueError(f"fill is 'edge', 'reflect', 'symmetric', a grey level or an (r, g, b) colour, got {fill!r}")
        return None
    try:
        color = np.broadcast_to(np.asarray(fill, dtype=np.int64), (3,))
    except (TypeError, ValueError):
        raise ValueError(f"fill colour is a grey level or (r, g, b), got {fill!r}") from None
    if color.min() < 0 or color.max() > 255:
        raise ValueError(f"fill colour must be 0..255, got {fill!r}")
    return color.astype(np.uint8)


def _crop_padded(rgb: np.ndarray, left: int, top: int, side: int, fill: Fill) -> np.ndarray:
    h, w = rgb.shape[:2]
    right, bottom = left + side, top + side
    if right <= 0 or bottom <= 0 or left >= w or top >= h:
        raise ValueError(f"the crop ({left}, {top}, {right}, {bottom}) lies outside the {w}x{h} picture")
    part = rgb[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
    pads = ((max(-top, 0), max(bottom - h, 0)), (max(-left, 0), max(right - w, 0)), (0, 0))
    if not any(p for ax in pads for p in ax):
        return part
    if isinstance(fill, str):
        if fill == "edge" or min(part.shape[:2]) < 2:
            return np.pad(part, pads, mode="edge")
        # numpy's reflect needs the pad to be shorter than the part: repeat it as needed
        out = part
        while any(p for ax in pads for p in ax):
            step = tuple((min(a, out.shape[i] - 1), min(b, out.shape[i] - 1)) if i < 2 else (0, 0)
                         for i, (a, b) in enumerate(pads))
            out = np.pad(out, step, mode=fill)
            pads = tuple((a - s[0], b - s[1]) for (a, b), s in zip(pads, step))
        return out
    out = np.empty((side, side, 3), np.uint8)
    out[...] = _check_fill(fill)
    out[pads[0][0]:pads[0][0] + part.shape[0], pads[1][0]:pads[1][0] + part.shape[1]] = part
    return out


def crop_faces(image: ImageTyping, boxes: Sequence[BoxLike], *, margin: float = 0.2, size: int | None = 96,
               fill: Fill = "edge") -> list[Image.Image]:
    """Square crops of several faces of one picture (the picture is loaded once).

    Parameters
    ----------
    image : picture
        A path, bytes, a file object, a PIL image or an ``(H, W, 3)`` uint8 array.
    boxes : sequence of boxes
        ``(x0, y0, x1, y1)`` in the picture's pixels, or :class:`Face` objects.
    margin, size, fill
        As in :func:`crop_face`.

    Returns
    -------
    list of PIL.Image.Image
        One RGB crop per box, in order (``size`` x ``size`` px, or their own size with ``None``).

    Raises
    ------
    ValueError
        ``margin`` not above -0.5, a bad ``size`` or ``fill``, or a box wholly outside the picture.
    InputError
        The picture cannot be read.

    Examples
    --------
    >>> faces = detect_faces("illustration.png")
    >>> crops = crop_faces("illustration.png", faces, size=128)
    """
    if not margin > -0.5:
        raise ValueError(f"margin must be > -0.5, got {margin}")
    _check_fill(fill)
    if size is not None and (int(size) != size or size < 1):
        raise ValueError(f"size must be a positive whole number or None, got {size!r}")
    squares = [_square(_box_of(b), margin) for b in boxes]
    rgb = to_array(image) if squares else None
    out = []
    for left, top, side in squares:
        img = Image.fromarray(np.ascontiguousarray(_crop_padded(rgb, left, top, side, fill)), "RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((int(size), int(size)), Image.Resampling.LANCZOS)
        out.append(img)
    return out


def crop_face(image: ImageTyping, box: BoxLike, *, margin: float = 0.2, size: int | None = 96,
              fill: Fill = "edge") -> Image.Image:
    """A square crop around a face, as the recognisers want it.

    ``box``: ``(x0, y0, x1, y1)`` or a :class:`Face`. The crop is the square centred on the box's
    centre whose side is ``round(max(w, h) * (1 + 2 * margin))``: ``margin`` is added on *each*
    side, as a fraction of the box's longer side (0.2: a 100 px face gives a 140 px crop). Its
    top-left corner is the centre minus half the side, rounded to the nearest pixel. Parts outside
    the picture are filled per ``fill``: ``"edge"`` (default: the border pixels are replicated, so
    no artificial frame appears), ``"reflect"`` / ``"symmetric"`` (mirrored), or a constant grey
    level / ``(r, g, b)`` colour. The crop is then resized to ``size`` x ``size`` (Lanczos);
    ``size=None`` keeps its own size. A box lying wholly outside the picture raises
    :class:`ValueError`.

    Parameters
    ----------
    image : picture
        A path, bytes, a file object, a PIL image or an ``(H, W, 3)`` uint8 array.
    box : (x0, y0, x1, y1) or Face
        The face's box in the picture's pixels (x1/y1 exclusive).
    margin : float, default 0.2
        Added on each side, as a share of the box's longer side; above -0.5.
    size : int or None, default 96
        Side of the returned crop in pixels; ``None``: as cut.
    fill : str, int or (r, g, b), default "edge"
        What fills the parts outside the picture.

    Returns
    -------
    PIL.Image.Image
        An RGB crop, ``size`` x ``size`` px.

    Raises
    ------
    ValueError
        A bad ``margin``, ``size`` or ``fill``, or a box wholly outside the picture.
    InputError
        The picture cannot be read.

    Examples
    --------
    >>> face = detect_faces("illustration.png")[0]
    >>> crop_face("illustration.png", face, margin=0.2, size=96).size
    (96, 96)
    """
    return crop_faces(image, [box], margin=margin, size=size, fill=fill)[0]


# --------------------------------------------------------------------------------------------
# Preview
# --------------------------------------------------------------------------------------------

_COLORS = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 180, 0), (200, 64, 255), (0, 200, 200)]


def draw_faces(image: ImageTyping, faces: Sequence[Face], labels: Sequence[str] | None = None) -> Image.Image:
    """A copy of the picture (RGB, same size) with each face's box and its score or label.

    Parameters
    ----------
    image : picture
        A path, bytes, a file object, a PIL image or an ``(H, W, 3)`` uint8 array.
    faces : sequence of Face
        The boxes to draw (in the picture's pixels).
    labels : sequence of str, optional
        One text per face (an empty one: box only); default: each face's score (2 decimals).

    Returns
    -------
    PIL.Image.Image
        The picture with the boxes drawn; the original is not changed.

    Raises
    ------
    ValueError
        ``labels`` and ``faces`` differ in length.
    InputError
        The picture cannot be read.

    Examples
    --------
    >>> faces = detect_faces("illustration.png")
    >>> draw_faces("illustration.png", faces, ["aoba"]).save("preview.png")
    """
    if labels is not None and len(labels) != len(faces):
        raise ValueError(f"{len(labels)} labels for {len(faces)} faces")
    img = load_image(image, "RGB").copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    line = max(2, round(min(w, h) / 200))
    px = max(10, round(min(w, h) / 32))
    default_font = label_font(px)
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = (int(round(v)) for v in _box_of(face))
        color = _COLORS[i % len(_COLORS)]
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=color, width=line)
        text = str(labels[i]) if labels is not None else f"{face.score:.2f}"
        if not text:
            continue
        font = pil_font(px, text) or default_font   # a CJK font for Japanese/Chinese labels, when installed
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0 + 2 * line, ty1 - ty0 + 2 * line
        top = y0 - th if y0 - th >= 0 else y0  # above the box when there is room, else inside
        left = min(max(x0, 0), max(w - tw, 0))
        draw.rectangle((left, top, left + tw, top + th), fill=color)
        draw.text((left + line - tx0, top + line - ty0), text, fill=(255, 255, 255), font=font)
    return img


def detect_in_animation(image: ImageTyping, *, threshold: float | None = None,
                        detector: str | os.PathLike | None = None, max_frames: int | None = None
                        ) -> tuple[Image.Image, list[Face], int, int]:
    """The frame of an animated picture (GIF, WebP, APNG, ...) in which faces are found.

    Up to ``max_frames`` frames (default :data:`animeid.images.ANIMATION_FRAMES`), evenly spaced,
    the first and last included, are searched in one batch; the frame with the most faces (then the
    largest face; the first such frame on a tie) wins, so a title frame without a face does not hide
    the rest. A still picture is searched as it is.

    Returns ``(frame as an RGB picture, its faces, its index, the picture's frame count)``.
    Raises :class:`InputError` for an unreadable picture or animation.
    """
    from ..images import ANIMATION_FRAMES, frame_count, iter_frames

    n = frame_count(image)
    if n <= 1:
        img = load_image(image, "RGB")
        return img, detect_faces(img, threshold=threshold, detector=detector), 0, max(n, 1)
    frames = [(k, im.copy()) for k, _, im in iter_frames(image, max_frames=max_frames or ANIMATION_FRAMES)]
    found = detect_faces_batch([im for _, im in frames], threshold=threshold, detector=detector)

    def rank(i: int) -> tuple[int, float]:
        area = max(((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in found[i]), default=0)
        return len(found[i]), area

    best = max(range(len(frames)), key=lambda i: (rank(i), -i))
    return frames[best][1], found[best], frames[best][0], n


def animation_fields(frame: int, n_frames: int) -> dict[str, int]:
    """``{"frame", "frames"}`` (and ``"searched"`` when only some frames were) of an animated picture's result."""
    from ..images import ANIMATION_FRAMES

    return {"frame": frame, "frames": n_frames,
            **({"searched": ANIMATION_FRAMES} if n_frames > ANIMATION_FRAMES else {})}


def detect_files(inputs: Sequence[str | os.PathLike], *, out: str | os.PathLike | None = None,
                 preview: str | os.PathLike | None = None, threshold: float | None = None, margin: float = 0.2,
                 size: int = 96, detector: str | os.PathLike | None = None) -> Iterator[dict]:
    """``animeid detect``: every picture named (folders searched) -> one record each.

    Records: ``{"path", "width", "height", "faces": [{"box", "score"}], "crops": [...]}`` (plus
    ``"frame"`` and ``"frames"`` for an animated picture: see :func:`detect_in_animation`), or
    ``{"path", "error"}`` for a missing path, an empty folder, or a picture that cannot be read;
    the other pictures go on. Crops (``out/<stem>_<k>.png``, cut as ``collect`` cuts them: around
    :func:`crop_box` of each box) and previews (``preview/<stem>.png``, boxes and scores drawn) are
    written atomically.

    Parameters
    ----------
    inputs : sequence of paths
        Pictures and folders (searched recursively).
    out : path, optional
        Folder for the face crops (made when missing); None: no crops.
    preview : path, optional
        Folder for the pictures with their boxes drawn; None: no previews.
    threshold : float, optional
        Detector score threshold, 0..1 (None: the detector's default).
    margin : float, default 0.2
        Crop margin on each side, as a share of the box's longer side.
    size : int, default 96
        Side of the crops in pixels.
    detector : str or path, optional
        A detector name or file (None: animeid's default).

    Yields
    ------
    dict
        One record per picture (or per path that cannot be read), in order.

    Raises
    ------
    UnknownNameError, ModelFileError
        A bad ``detector`` (the records of pictures are never exceptions).

    Examples
    --------
    >>> for rec in detect_files(["shots/"], out="faces/"):
    ...     print(rec["path"], len(rec.get("faces", [])))
    """
    from .._util import save_image_atomic
    from ..names import safe_filename
    from ..images import IMAGE_EXTS, walk_files

    used: set[str] = set()

    def unique(stem: str) -> str:
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}~{n}"
        used.add(name)
        return name

    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            yield {"path": str(p), "error": "no such file or folder"}
            continue
        if p.is_dir():
            problems: list = []
            files = walk_files(p, IMAGE_EXTS, problems)
            for f, why in problems:                     # broken links, link loops: said, not dropped
                yield {"path": str(f), "error": why}
            if not files:
                yield {"path": str(p), "error": "folder holds no pictures"}
                continue
        else:
            files = [p]
        for f in files:
            try:               # an animated picture: the frame in which faces are found
                img, faces, frame, n_frames = detect_in_animation(f, threshold=threshold, detector=detector)
            except InputError as e:
                yield {"path": str(f), "error": e.message}
                continue
            stem = unique(f.stem)
            crops = []
            if out is not None:
                # cut as collect cuts them (the detector's box scaled to AnimeFace's geometry: crop_box)
                boxes = [crop_box(x.box, detector) for x in faces]
                for k, c in enumerate(crop_faces(img, boxes, margin=margin, size=size)):
                    dest = Path(out) / safe_filename(stem, f"_{k}.png")
                    save_image_atomic(c, dest)
                    crops.append(str(dest))
            if preview is not None:
                save_image_atomic(draw_faces(img, faces), Path(preview) / safe_filename(stem, ".png"))
            yield {"path": str(f), "width": img.size[0], "height": img.size[1],
                   "faces": [x.to_dict() for x in faces], "crops": crops,
                   **(animation_fields(frame, n_frames) if n_frames > 1 else {})}
