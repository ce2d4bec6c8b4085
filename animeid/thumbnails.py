"""One small face picture per character, for pages and plots that name characters (the characters
page, timelines).

A model keeps, for each trained character, the training face that looks most typical (nearest, in
32x32 pixels, to the mean of the character's training faces), and for an enrolled character its
first enrolled face. They are stored in the model file as plain arrays (``extra.thumbs.images``,
``(n, SIZE, SIZE, 3)`` uint8, and ``extra.thumbs.labels``); models made before them have none.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = ["SIZE", "thumbnail", "typical_faces", "to_arrays", "from_arrays", "data_url", "png_bytes"]

#: Side of a stored thumbnail, px.
SIZE = 64


def _rgb(image: Any) -> Image.Image:
    """A face crop (PIL picture or ``(H, W, 3)`` uint8 array) as an RGB PIL picture."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    return img.convert("RGB")


def thumbnail(image: Any) -> np.ndarray:
    """``image`` (a face crop: PIL picture or ``(H, W, 3)`` array) as a ``(SIZE, SIZE, 3)`` uint8 array."""
    return np.asarray(_rgb(image).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.uint8)


def typical_faces(faces: Sequence[Any], labels: Sequence[str]) -> dict[str, np.ndarray]:
    """For each character of ``labels``, the thumbnail of its face nearest (L2 on 32x32 RGB) to the
    mean of its faces. ``faces``: ``(H, W, 3)`` uint8 arrays or PIL pictures, one per label."""
    small = np.stack([np.asarray(_rgb(f).resize((32, 32)), dtype=np.float32) for f in faces])
    labels = np.asarray([str(x) for x in labels])
    out: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(labels.tolist()):
        idx = np.flatnonzero(labels == name)
        block = small[idx].reshape(len(idx), -1)
        best = idx[int(np.argmin(((block - block.mean(axis=0)) ** 2).sum(axis=1)))]
        out[name] = thumbnail(faces[best])
    return out


def to_arrays(thumbs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model file's arrays for ``{name: thumbnail}`` (empty for none)."""
    if not thumbs:
        return {}
    names = list(thumbs)
    return {"thumbs.images": np.stack([np.asarray(thumbs[n], dtype=np.uint8) for n in names]),
            "thumbs.labels": np.asarray(names, dtype=str)}


def from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{name: thumbnail}`` from a model file's extra arrays (empty for a model without thumbnails,
    or with malformed ones)."""
    imgs, names = arrays.get("thumbs.images"), arrays.get("thumbs.labels")
    if imgs is None or names is None or imgs.ndim != 4 or imgs.shape[0] != len(names) or imgs.shape[-1] != 3:
        return {}
    return {str(n): np.asarray(im, dtype=np.uint8) for n, im in zip(names, imgs)}


def png_bytes(thumb: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(thumb).save(b, "PNG")
    return b.getvalue()


def data_url(image: Any) -> str:
    """A face picture as a small ``data:image/jpeg;base64,...`` URL (a few kB), for JSON answers."""
    b = io.BytesIO()
    Image.fromarray(thumbnail(image)).save(b, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(b.getvalue()).decode("ascii")
