"""animeid's learned anime face detector, run by ONNX Runtime (no torch).

The network (trained by :mod:`animeid.detect.training`) is EfficientNet-Lite0 with a small
feature pyramid and a CenterNet-style head at stride 8: a face-centre heatmap and, at each
place, the distances from it to the face box's four sides. The ONNX graph takes
``(N, 3, H, W)`` float32 pixels 0..255 (RGB; ``H`` and ``W`` multiples of 32; the normalisation is
inside the graph) and gives ``peaks`` ``(N, H/8, W/8)`` (the heatmap where it is a local 3x3
maximum, else 0) and ``ltrb`` ``(N, 4, H/8, W/8)`` in input pixels.

A picture is resized so that its longer side is ``input_size`` (stored in the file: 640 for the
shipped detector, 512 for one trained with ``detector train``'s defaults), padded right and bottom
to a multiple of 32, and run; peaks above the threshold become boxes, overlapping boxes are merged
by non-maximum suppression (IoU 0.5), and the boxes are mapped back to the picture's pixels. Raw
peak values are turned into calibrated probabilities (Platt scaling fitted on held-out pictures,
stored in the file): a score of 0.7 means that about 70 % of the faces given that score are real
faces (IoU >= 0.5 with a face a person boxed).

The detector file is the ONNX model itself; its metadata (``custom_metadata_map``) holds
``animeid_detector`` (JSON: input size, stride, calibration, default threshold, training data,
licence, figures). The default file is an int8 copy (:mod:`animeid.detect.quantize`) of the
float32 one, run the same way; its metadata says so (``quantized``, ``quantized_from``).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ModelFileError
from .base import Face

__all__ = ["LearnedDetector", "DEFAULT_DETECTOR_FILE", "FLOAT_DETECTOR_FILE", "decode", "nms", "platt", "logit",
           "letterbox", "read_metadata"]

#: the detector shipped inside animeid and used by default (see README's model card): the int8 copy
#: (:mod:`animeid.detect.quantize`) of :data:`FLOAT_DETECTOR_FILE`, about twice as fast
DEFAULT_DETECTOR_FILE = Path(__file__).with_name("weights") / "animeid-faces-v3-int8.onnx"
#: the same detector in float32, also shipped: what ``detector train --from default`` starts from
#: (an int8 file's weights cannot be trained further) and what the int8 copy was made from
FLOAT_DETECTOR_FILE = Path(__file__).with_name("weights") / "animeid-faces-v3.onnx"
_META_KEY = "animeid_detector"
#: SHA-256 of every detector file animeid has shipped, by file name (all releases: a file was remade
#: under the same name when its calibration changed). A file of one of these names is taken for
#: animeid's own (whose crop geometry recognisers may have measured) only when its bytes are one of
#: these; a user's detector that happens to bear the name is told apart by :attr:`LearnedDetector.file_id`.
SHIPPED_SHA256: dict[str, frozenset[str]] = {
    "animeid-faces-v1.onnx": frozenset({
        "2627ebc10f92958a11e0ee132d26aa7a319e1795a57a61a385e3debad9a54a3b",
        "1f5be9770e24f93ef739247a55a4afbd60da38b7ed6a9d4628962d0e21fbc0d2"}),
    "animeid-faces-v2.onnx": frozenset({"caaa2d832a6c8746ee5d403df07db771c18f7749f95faf26d5c1bbf94dc31c22"}),
    "animeid-faces-v2-int8.onnx": frozenset({
        "5d2359641a5d15f07976627cd168e64189f3893d2558283a54e124a6ad34dbd1",
        "e524686ab870e7196045f4171261698ca4642cbcf1a21b341478d8ad2c520a68",
        "fc4453c1aa0fd87b5ed68dcb6abf2c525425fda0755edf4ae971263b82d45303"}),
    "animeid-faces-v3.onnx": frozenset({"de5958978a00bb92e609dbd8b9a53e5b180793c12471b2c99b14bc75762b5ce4"}),
    "animeid-faces-v3-int8.onnx": frozenset({"1f122bde9a3e7872ded0ab03ffc290a481055d44b2e1cc13ec2dac64fd6b67fc"}),
}
#: a detection pass after the first is skipped for a picture it would upscale more than this
_MAX_UPSCALE = 4


#: :func:`nms`: a box lying this much (share of its own area) inside a better one is dropped too
NMS_CONTAIN = 0.8


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5, contain: float = NMS_CONTAIN) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    ``boxes``: ``(n, 4)`` ``[x0, y0, x1, y1]``; ``scores``: ``(n,)``. A box overlapping a kept,
    better one by IoU > ``iou`` is dropped, and so is one lying inside it by more than ``contain``
    of its own area (a smaller box on part of a face a better box holds whole, which IoU alone keeps).
    """
    from .metrics import _inside_fraction, box_iou

    boxes = np.asarray(boxes, np.float64)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        if len(order) == 1:
            break
        rest = order[1:]
        b = boxes[rest]
        inside = _inside_fraction(b, boxes[i:i + 1]) > contain
        order = rest[(box_iou(boxes[i:i + 1], b)[0] <= iou) & ~inside]
    return np.asarray(keep, np.int64)


def decode(peaks: np.ndarray, ltrb: np.ndarray, stride: int, min_peak: float, max_faces: int = 100,
           nms_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` (input pixels) and raw peak values ``(n,)`` of one picture's outputs.

    ``peaks``: ``(h, w)``; ``ltrb``: ``(4, h, w)``; a place ``(i, j)`` stands for the pixel
    ``((j + 0.5) * stride, (i + 0.5) * stride)``.
    """
    ys, xs = np.nonzero(peaks > min_peak)
    sc = peaks[ys, xs].astype(np.float64)
    if len(sc) > max_faces * 4:
        top = np.argsort(-sc, kind="stable")[:max_faces * 4]
        ys, xs, sc = ys[top], xs[top], sc[top]
    cx, cy = (xs + 0.5) * stride, (ys + 0.5) * stride
    d = ltrb[:, ys, xs].astype(np.float64)
    boxes = np.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]], 1) if len(sc) else np.zeros((0, 4))
    keep = nms(boxes, sc, nms_iou)[:max_faces] if len(sc) else np.zeros(0, np.int64)
    return boxes[keep], sc[keep]


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of scores or raw peak values, clipped to 1e-6 .. 1 - 1e-6 first (float64)."""
    r = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(r / (1 - r))


def platt(raw: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling: ``sigmoid(a * logit(raw) + b)`` of raw peak values (:func:`logit`: clipped)."""
    return 1.0 / (1.0 + np.exp(-(a * logit(raw) + b)))


def letterbox(rgb: np.ndarray, size: int, multiple: int = 32) -> tuple[np.ndarray, float]:
    """``rgb`` ``(H, W, 3)`` resized so its longer side is ``size``, padded (grey 114, right and bottom)
    to a multiple of ``multiple`` -> ``((3, h, w) float32, scale)``; input pixel = picture pixel * scale."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = Image.fromarray(rgb)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.BICUBIC)
    pw, ph = -(-nw // multiple) * multiple, -(-nh // multiple) * multiple
    out = np.full((ph, pw, 3), 114, np.uint8)
    out[:nh, :nw] = np.asarray(img)
    return np.ascontiguousarray(out.transpose(2, 0, 1), np.float32), scale


def _session(path: str | os.PathLike, threads: int = 0):
    """``(ONNX Runtime session, animeid_detector metadata)`` of a detector file; :class:`ModelFileError`
    for a file that is not one."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # no busy-waiting between operators: collect runs one detector per worker process on shared cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelFileError(f"not an ONNX detector file ({str(e).splitlines()[0][:120]})", path) from None
    meta = sess.get_modelmeta().custom_metadata_map.get(_META_KEY)
    if meta is None:
        raise ModelFileError("an ONNX file, but not an animeid detector (no animeid_detector metadata)", path)
    return sess, json.loads(meta)


def _file_id(path: Path) -> str:
    """:attr:`LearnedDetector.file_id` of the detector file at ``path`` (hashed only when it bears a
    shipped file's name); :class:`ModelFileError` when it cannot be read."""
    name = path.name
    if name not in SHIPPED_SHA256:
        return name
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise ModelFileError(f"cannot be read ({e.strerror or e})", path) from None
    digest = h.hexdigest()
    return name if digest in SHIPPED_SHA256[name] else f"{name}@{digest[:12]}"


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``animeid_detector`` metadata of a detector file; :class:`ModelFileError` if it is not one."""
    return _session(path)[1]


#: a picture whose longer side is under this many pixels is taken for a face crop or thumbnail and
#: padded by :data:`PAD_FRACTION` of its shorter side on each side (grey) before detection, so that a
#: face filling it does not touch the border (holoen16-dev, 400 crops of 128 px: face found in 85 % of
#: them unpadded, 98.8 % padded)
PAD_BELOW = 256
PAD_FRACTION = 0.3
#: such a picture (padded) is resized to this longer side instead of the file's input size: on 300
#: holoen16-dev and 91 newgame8 crops, faces were found in all at 256, 320 and 384 px and in 99.3 % /
#: 100 % at 512 px, 5.5x slower
SMALL_SIZE = 256
#: a small, square-ish picture (longer side under :data:`PAD_BELOW`, at most :data:`QUICK_ASPECT` times
#: its shorter side) is first searched in one quick pass at this longer side (4x cheaper than
#: :data:`SMALL_SIZE`); when that pass finds it is a face crop -- one face (calibrated score at least
#: the default threshold, nothing else above 0.05) whose box side is at least :data:`QUICK_FILL` of
#: the picture's longer side -- its answer stands, otherwise the picture gets the full passes.
#: Measured (``bench/quick_pass_bench.py``): 95 % of 400 holoen16-dev and of 272 newgame8 crops are
#: settled by the quick pass, its box overlapping the full search's by IoU 0.83-0.85 (median); of 600
#: iCartoonFace pictures shrunk to 240 px, with 1 to many faces, the quick pass settled 4, none in
#: which the full search finds several faces. Whole-picture answers in ``predict``
#: (a face filling the picture) are unchanged; face crops run about 4x faster.
QUICK_SIZE = 128
QUICK_ASPECT = 1.3
QUICK_FILL = 0.6


def _crop_pad(rgb: np.ndarray) -> int:
    return int(round(min(rgb.shape[:2]) * PAD_FRACTION)) if max(rgb.shape[:2]) < PAD_BELOW else 0


def _quick_candidate(shape: tuple) -> bool:
    """A picture (of ``shape`` ``(H, W, ...)``) the quick pass may settle: small and square-ish (see
    :data:`QUICK_SIZE`)."""
    h, w = shape[:2]
    return max(h, w) < PAD_BELOW and max(h, w) <= QUICK_ASPECT * min(h, w)


def _pad(rgb: np.ndarray, p: int) -> np.ndarray:
    return np.pad(rgb, ((p, p), (p, p), (0, 0)), constant_values=114)


class LearnedDetector:
    """A learned detector file (see the module's notes), loaded lazily and thread-safely.

    ``path``: the ``.onnx`` detector file (default: the one shipped inside animeid).
    ``threads``: ONNX Runtime intra-op threads (0: its default, all cores).
    Scores of :meth:`detect_array` are calibrated probabilities (0..1), or raw peaks for a file that
    could not be calibrated (:attr:`calibrated`).
    Raises :class:`~animeid.errors.ModelFileError` for a missing or foreign file.
    """

    min_face = 1

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 0):
        self.path = Path(path) if path is not None else DEFAULT_DETECTOR_FILE
        self.threads = threads
        self._lock = threading.Lock()
        self._sess = None
        self.meta: dict = {}
        self._load()

    @property
    def name(self) -> str:
        return "default" if self.path == DEFAULT_DETECTOR_FILE else os.fspath(self.path)

    def __repr__(self) -> str:
        return f"LearnedDetector({os.fspath(self.path)!r})"

    def _load(self) -> None:
        from .._util import check_file

        check_file(self.path, "a detector file", ModelFileError)
        self._sess, self.meta = _session(self.path, self.threads)
        self._file_id = _file_id(self.path)

    @property
    def input_size(self) -> int:
        return int(self.meta.get("input_size", 512))

    @property
    def file_id(self) -> str:
        """The file's name, which a measured crop fill records (:func:`animeid.detect.detector_id`); for
        a file named like one animeid shipped (:data:`SHIPPED_SHA256`) but holding other bytes,
        ``"NAME@"`` and the first 12 hex digits of its SHA-256, so that it is never taken for that one.
        Measured on the bytes read when the detector was loaded."""
        return self._file_id

    @property
    def stride(self) -> int:
        return int(self.meta.get("stride", 8))

    @property
    def quantized_from(self) -> str | None:
        """For an int8 copy (:mod:`animeid.detect.quantize`): the :attr:`file_id` (the file name) of the
        float32 detector it was made from (its boxes have the same geometry), else None."""
        return self.meta.get("quantized_from") if self.meta.get("quantized") else None

    @property
    def crop_fill_from(self) -> tuple[str, ...]:
        """File names of earlier detectors whose boxes of the same faces have this one's size (measured
        when it was made; metadata ``crop_fill_from``): a recogniser's crop fill measured with them
        holds for this one (:func:`animeid.detect.crop_box_for`)."""
        names = self.meta.get("crop_fill_from", [])
        return tuple(str(n) for n in names) if isinstance(names, list) else ()

    @property
    def crop_scale(self) -> float:
        """How much larger AnimeFace's box of a face is than this detector's (see :func:`crop_box`)."""
        return float(self.meta.get("crop_scale", 1.0))

    @property
    def calibrated(self) -> bool:
        """Whether the scores are calibrated probabilities: False for a file whose scores could not be
        fitted when it was made (too few boxed validation faces, or nothing to fit on them; metadata
        ``"calibrated": false``, :func:`animeid.detect.training.uncalibrated_reason`): its scores and
        threshold are the network's raw heatmap peaks. Files from before that key were all calibrated."""
        return self.meta.get("calibrated") is not False

    @property
    def default_threshold(self) -> float:
        """The threshold (a calibrated probability) that gave the best F1 on held-out pictures."""
        return float(self.meta.get("threshold", 0.5))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw peak values -> calibrated probabilities (:func:`platt` with the file's calibration)."""
        return platt(raw, *self.meta.get("calibration", (1.0, 0.0)))

    def _min_peak(self) -> float:
        """The raw peak value whose calibrated probability is 0.05 (lower ones are never kept)."""
        a, b = self.meta.get("calibration", (1.0, 0.0))
        z = (np.log(0.05 / 0.95) - b) / a
        return float(min(0.05, 1 / (1 + np.exp(-z))))

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's ``(peaks, ltrb)`` for a ``(N, 3, H, W)`` float32 batch of letterboxed pictures."""
        peaks, ltrb = self._sess.run(["peaks", "ltrb"], {"pixels": batch})
        return peaks, ltrb

    @property
    def sizes(self) -> tuple[int, ...]:
        """The longer sides a picture is resized to, one detection pass each (the passes' faces are
        merged by non-maximum suppression): ``test_sizes`` of the file, else its ``input_size``."""
        return tuple(int(v) for v in self.meta.get("test_sizes", [self.input_size]))

    def _raw(self, rgbs: Sequence[np.ndarray], size: int, min_peak: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Raw ``(boxes in picture pixels, peak values)`` of each picture at one input size; pictures of
        the same letterboxed shape run as one batch (16 at most)."""
        prepared = [letterbox(r, size) for r in rgbs]
        groups: dict[tuple, list[int]] = {}
        for i, (x, _) in enumerate(prepared):
            groups.setdefault(x.shape, []).append(i)
        out: list = [None] * len(rgbs)
        for idx in groups.values():
            for s in range(0, len(idx), 16):
                part = idx[s:s + 16]
                peaks, ltrb = self.run(np.stack([prepared[i][0] for i in part]))
                for k, i in enumerate(part):
                    boxes, raw = decode(peaks[k], ltrb[k], self.stride, min_peak)
                    out[i] = (boxes / prepared[i][1], raw)
        return out

    def _quick(self, padded: Sequence[np.ndarray], pads: Sequence[int], shapes: Sequence[tuple],
               min_peak: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{index: (boxes, raw peaks)}`` of the pictures one quick pass settles as face crops (see
        :data:`QUICK_SIZE`); the others are left out. ``padded``: the pictures as :meth:`raw_arrays`
        padded them by ``pads``; ``shapes``: their shapes before."""
        idx = [i for i, shape in enumerate(shapes) if _quick_candidate(shape)]
        if not idx:
            return {}
        settled = {}
        for i, (boxes, raw) in zip(idx, self._raw([padded[i] for i in idx], QUICK_SIZE, min_peak)):
            p = self.calibrate(raw)
            if np.sum(p >= 0.05) != 1 or p.max() < self.default_threshold:
                continue
            best = int(np.argmax(raw))
            box = boxes[best] - pads[i]
            if max(box[2] - box[0], box[3] - box[1]) >= QUICK_FILL * max(shapes[i][:2]):
                settled[i] = (box[None], raw[[best]])
        return settled

    def raw_arrays(self, rgbs: Sequence[np.ndarray], sizes: Sequence[int] | None = None,
                   min_peak: float | None = None, quick: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(boxes (n, 4) in each picture's pixels, unclipped; raw peak values (n,))`` per picture: every
        pass of ``sizes`` (default :attr:`sizes`) merged by non-maximum suppression, before calibration.
        ``min_peak``: the lowest raw peak kept (default: calibrated probability 0.05). ``quick``: a
        small square-ish picture that one pass at :data:`QUICK_SIZE` finds to be a face crop is not
        searched further (False: every picture gets the full passes, as for evaluation)."""
        sizes = tuple(int(s) for s in (sizes or self.sizes))
        min_peak = self._min_peak() if min_peak is None else float(min_peak)
        pads = [_crop_pad(r) for r in rgbs]
        shapes = [r.shape for r in rgbs]
        rgbs = [_pad(r, p) if p else r for r, p in zip(rgbs, pads)]
        settled = self._quick(rgbs, pads, shapes, min_peak) if quick else {}
        # the extra passes (larger sizes: small faces) only for pictures they upscale at most 4x: a
        # 128 px face crop is not blown up to 1024 px for nothing
        runs = [(size, [i for i, r in enumerate(rgbs) if i not in settled
                        and (k == 0 or size <= _MAX_UPSCALE * max(shapes[i][:2]))]) for k, size in enumerate(sizes)]
        passes, ran = [], [set() for _ in rgbs]
        for size, idx in runs:
            done: dict = {}
            # a padded face crop or thumbnail runs at SMALL_SIZE: as found, 5x faster (see SMALL_SIZE);
            # each picture runs once per size it is actually resized to (two passes may both give SMALL_SIZE)
            eff_of = {i: min(size, SMALL_SIZE) if pads[i] else size for i in idx}
            idx = [i for i in idx if eff_of[i] not in ran[i]]
            for eff in sorted({eff_of[i] for i in idx}):
                part = [i for i in idx if eff_of[i] == eff]
                done.update(zip(part, self._raw([rgbs[i] for i in part], eff, min_peak)))
                for i in part:
                    ran[i].add(eff)
            passes.append(done)
        out = []
        for i in range(len(rgbs)):
            if i in settled:
                out.append(settled[i])
                continue
            mine = [p[i] for p in passes if i in p]
            boxes = np.concatenate([m[0] for m in mine]) if mine else np.zeros((0, 4))
            raw = np.concatenate([m[1] for m in mine]) if mine else np.zeros(0)
            if len(mine) > 1 and len(raw):
                keep = nms(boxes, raw, 0.5)
                boxes, raw = boxes[keep], raw[keep]
            out.append((boxes - pads[i], raw))
        return out

    def detect_arrays(self, rgbs: Sequence[np.ndarray], sizes: Sequence[int] | None = None) -> list[list[Face]]:
        """Faces in each ``(H, W, 3)`` uint8 picture, best first; boxes in its pixels, clipped.

        ``sizes``: the longer sides of the detection passes (default :attr:`sizes`). Scores are
        calibrated probabilities (0..1); every face down to 0.05 is given: threshold them yourself.
        """
        return [self._faces(boxes, self.calibrate(raw), rgb.shape)
                for (boxes, raw), rgb in zip(self.raw_arrays(rgbs, sizes), rgbs)]

    @staticmethod
    def _faces(boxes: np.ndarray, probs: np.ndarray, shape: tuple) -> list[Face]:
        h, w = shape[:2]
        faces = []
        for b, p in zip(boxes, probs):
            x0, y0 = min(max(round(b[0]), 0), w), min(max(round(b[1]), 0), h)
            x1, y1 = min(max(round(b[2]), 0), w), min(max(round(b[3]), 0), h)
            if x1 > x0 and y1 > y0:
                faces.append(Face((int(x0), int(y0), int(x1), int(y1)), float(p)))
        faces.sort(key=lambda f: -f.score)
        return faces

    def detect_array(self, rgb: np.ndarray) -> list[Face]:
        """Faces in one ``(H, W, 3)`` uint8 picture (see :meth:`detect_arrays`)."""
        return self.detect_arrays([rgb])[0]
