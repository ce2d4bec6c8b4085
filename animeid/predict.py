"""Naming characters in pictures with a saved model: the library core the CLI and the web app call.

    >>> model = animeid.load("characters.animeid")            # doctest: +SKIP
    >>> model.predict("screenshot.png")                       # doctest: +SKIP
    {'path': 'screenshot.png', 'faces': [{'box': [x0, y0, x1, y1], 'candidates': [{'name': 'aoba', 'p': 0.93}, ...]}]}

A whole illustration or frame is searched for faces first (the study's classifier failed on
uncropped pictures); each face is cropped as in training (square, the model's margin) and named.
A picture that *is* a face crop (no face found in it, or one face filling it) is recognised as it is.

Batch first: :meth:`Recognizer.predict_batch` and :meth:`Recognizer.predict_faces` take lists;
:meth:`Recognizer.predict` wraps one picture. Everything here is thread-safe and torch-free.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .features import FeaturePipeline, FeatureSpec
from .images import ImageTyping, describe, load_image

__all__ = ["PredictConfig", "Recognizer", "load"]


@dataclass(frozen=True)
class PredictConfig:
    """Options shared by the CLI and the web app."""

    top: int = 3
    threshold: float = 0.7          # face detector threshold
    detect: str = "auto"            # auto: find faces, fall back to the whole picture; always; never
    fill_ratio: float = 0.6         # a single face whose box side is this share of the picture: a crop
    batch_size: int = 32


class Recognizer:
    """A loaded model. ``labels``: its characters; ``method``; ``meta``: the model file's description."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.labels: list[str] = list(bundle.labels)
        self.method: str = bundle.method
        feats = dict(bundle.features or {"kind": "pixels"})
        self.crop_margin = float(feats.pop("crop_margin", 0.2))
        self.spec = FeatureSpec.from_dict(feats)
        self.pipeline = FeaturePipeline(self.spec, bundle.backbone, bundle.backbone_onnx)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recognizer":
        from .modelfile import read_model

        return cls(read_model(path))

    @property
    def path(self) -> Path | None:
        return self.bundle.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.bundle.meta

    def __repr__(self) -> str:
        return f"Recognizer({self.method!r}, {len(self.labels)} characters, {self.spec.describe()})"

    # -- faces
    def predict_proba_faces(self, faces: Sequence[ImageTyping], *, batch_size: int = 32) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for face crops."""
        faces = list(faces)
        if not faces:
            return np.zeros((0, len(self.labels)), np.float32)
        X = self.pipeline.transform(faces, batch_size=batch_size, cache=False)
        return np.asarray(self.bundle.head.predict_proba(X), dtype=np.float64)

    def _candidates(self, p: np.ndarray, top: int) -> list[dict[str, Any]]:
        order = np.argsort(-p, kind="stable")[:top]
        return [{"name": self.labels[i], "p": round(float(p[i]), 4)} for i in order]

    def predict_faces(self, faces: Sequence[ImageTyping], *, top: int = 3) -> list[list[dict[str, Any]]]:
        """Top ``top`` candidates ``[{"name", "p"}]`` for each face crop."""
        return [self._candidates(p, top) for p in self.predict_proba_faces(faces)]

    # -- whole pictures
    def _locate(self, img, cfg: PredictConfig) -> list[tuple[list[int], Any]]:
        """(box, face crop) pairs for one picture."""
        from .detect import crop_face, detect_faces

        w, h = img.size
        whole = [([0, 0, w, h], img)]
        if cfg.detect == "never":
            return whole
        faces = detect_faces(img, threshold=cfg.threshold)
        if not faces:
            return [] if cfg.detect == "always" else whole
        if cfg.detect == "auto" and len(faces) == 1:
            x0, y0, x1, y1 = faces[0].box
            if max(x1 - x0, y1 - y0) >= cfg.fill_ratio * min(w, h):
                return whole             # the picture is a face crop already
        size = self.spec.size if self.spec.kind == "pixels" else None
        return [(list(f.box), crop_face(img, f.box, margin=self.crop_margin, size=size or 128)) for f in faces]

    def predict_batch(self, images: Sequence[ImageTyping], cfg: PredictConfig | None = None) -> list[dict[str, Any]]:
        """One result per picture: ``{"path", "width", "height", "faces": [{"box", "candidates"}]}``."""
        cfg = cfg or PredictConfig()
        located: list[tuple[int, list[int]]] = []
        crops: list[Any] = []
        results: list[dict[str, Any]] = []
        for i, image in enumerate(images):
            img = load_image(image, "RGB")
            results.append({"path": describe(image), "width": img.size[0], "height": img.size[1], "faces": []})
            for box, crop in self._locate(img, cfg):
                located.append((i, box))
                crops.append(crop)
        proba = self.predict_proba_faces(crops, batch_size=cfg.batch_size)
        for (i, box), p in zip(located, proba):
            results[i]["faces"].append({"box": [int(v) for v in box], "candidates": self._candidates(p, cfg.top)})
        return results

    def predict(self, image: ImageTyping, cfg: PredictConfig | None = None, **kw: Any) -> dict[str, Any]:
        """:meth:`predict_batch` for one picture; keyword arguments build a :class:`PredictConfig`."""
        if kw:
            cfg = PredictConfig(**{**(cfg.__dict__ if cfg else {}), **kw})
        return self.predict_batch([image], cfg)[0]


def load(path: str | os.PathLike) -> Recognizer:
    return Recognizer.load(path)
