"""Face boxes drawn by people, read from the formats users have.

:func:`load_boxes` reads a folder (or an annotation file) into a list of :class:`Annotated`
pictures, whatever the format:

``boxes.json`` (animeid's own, also that of ``../shared/data``)
    ``{"picture.jpg": {"faces": [{"box": [x0, y0, x1, y1]}, ...], "ignore": [[x0, y0, x1, y1], ...]}}``
    in the picture's pixels; keys starting with ``_`` are comments. ``ignore`` regions (optional)
    count neither as a hit nor as a false alarm.
COCO JSON
    a ``*.json`` file with ``images``, ``annotations`` (``bbox`` = ``[x, y, w, h]``) and
    ``categories``; every category counts as a face unless one is named ``face`` (then only it).
    ``iscrowd`` boxes become ignore regions.
YOLO txt
    ``picture.txt`` beside each picture (or in a ``labels/`` folder next to ``images/``), one line
    ``class cx cy w h`` per box, relative to the picture's size (0..1); every class counts.
Pascal VOC XML
    ``picture.xml`` beside each picture (or in ``Annotations/``), ``<object><bndbox>`` with
    ``xmin ymin xmax ymax`` in pixels; ``<difficult>1</difficult>`` boxes become ignore regions.

A box partly outside its picture is clipped to it; one wholly outside, empty, or not four numbers
raises :class:`~animeid.errors.InputError` naming the annotation file and the picture, as does an
annotation naming a picture that does not exist, an empty or malformed file, or a folder whose
format cannot be recognised. Nothing is trained on garbage: the whole set is checked first.
"""
from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError

__all__ = ["Annotated", "FORMATS", "load_boxes", "load_many", "detect_format", "save_boxes_json"]

#: annotation formats :func:`load_boxes` reads (``"auto"`` finds out which).
FORMATS = ("boxes.json", "coco", "yolo", "voc")


@dataclass
class Annotated:
    """One picture with its face boxes.

    ``boxes``: ``(n, 4)`` float32 ``[x0, y0, x1, y1]`` in the picture's pixels, clipped to it.
    ``ignore``: ``(m, 4)`` regions where detections count neither way. ``size``: ``(width, height)``.
    """

    image: Path
    boxes: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    size: tuple[int, int] = (0, 0)


def _image_size(path: Path, source: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"names the picture {path.name!r}, which does not exist", source)
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"not a readable picture ({e.__class__.__name__.replace('Error', ' error')})", path) from None


def _check_box(raw, source: Path, image: str, size: tuple[int, int]) -> list[float] | None:
    """``raw`` as a clipped ``[x0, y0, x1, y1]``; ``None`` for a box that clipping leaves tiny
    (< 1 px); errors for one that is malformed or lies wholly outside the picture."""
    try:
        x0, y0, x1, y1 = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise InputError(f"{image}: a box is four numbers [x0, y0, x1, y1], got {raw!r}", source) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise InputError(f"{image}: a box needs x0 < x1 and y0 < y1, got {raw!r}", source)
    w, h = size
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise InputError(f"{image}: the box {raw!r} lies wholly outside the {w}x{h} picture", source)
    c = [min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h)]
    if c[2] - c[0] < 1 or c[3] - c[1] < 1:
        return None
    return c


def _make(image: Path, boxes: Iterable, ignore: Iterable, source: Path) -> Annotated:
    size = _image_size(image, source)
    good = [b for b in (_check_box(b, source, image.name, size) for b in boxes) if b is not None]
    ign = [b for b in (_check_box(b, source, image.name, size) for b in ignore) if b is not None]
    return Annotated(image, np.asarray(good, np.float32).reshape(-1, 4), np.asarray(ign, np.float32).reshape(-1, 4),
                     size)


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", path) from None
    except OSError as e:         # e.g. --format boxes.json on a folder that has none
        raise InputError(f"cannot be read ({e.strerror or e})", path) from None
    if not text.strip():
        raise InputError("empty annotation file", path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", path) from None


def _load_boxes_json(path: Path) -> list[Annotated]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputError("a boxes.json file is an object mapping picture names to {\"faces\": [...]}", path)
    out = []
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        if isinstance(entry, list):  # a bare list of boxes
            entry = {"faces": [{"box": b} for b in entry]}
        if not isinstance(entry, dict) or not isinstance(entry.get("faces", []), list):
            raise InputError(f"{name}: expected {{\"faces\": [{{\"box\": [x0, y0, x1, y1]}}, ...]}}, got {entry!r:.80}",
                             path)
        if not isinstance(entry.get("ignore") or [], list):
            raise InputError(f"{name}: \"ignore\" is a list of boxes [x0, y0, x1, y1], got {entry['ignore']!r:.80}",
                             path)
        faces = [f.get("box") if isinstance(f, dict) else f for f in entry.get("faces", [])]
        out.append(_make(path.parent / name, faces, entry.get("ignore", []) or [], path))
    if not out:
        raise InputError("holds no pictures", path)
    return out


def _coco_id(v, what: str, path: Path):
    """``v`` if it can be a COCO id (a number or a string; JSON's lists and objects cannot)."""
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        return v
    raise InputError(f"{what} is a number or a string, got {v!r:.40}", path)


def _load_coco(path: Path, root: Path) -> list[Annotated]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list) or not isinstance(data.get("categories") or [], list):
        raise InputError("a COCO file has \"images\" and \"annotations\" lists (and \"categories\", a list)", path)
    cats = {_coco_id(c.get("id"), "a category's \"id\"", path): str(c.get("name", ""))
            for c in data.get("categories") or [] if isinstance(c, dict)}
    faces = {k for k, v in cats.items() if v.lower() == "face"} or set(cats) or None
    per_image: dict = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a or "bbox" not in a:
            raise InputError(f"an annotation needs \"image_id\" and \"bbox\", got {a!r:.80}", path)
        _coco_id(a["image_id"], "an annotation's \"image_id\"", path)
        if faces is not None and (a.get("category_id") is None
                                  or _coco_id(a["category_id"], "an annotation's \"category_id\"", path) not in faces):
            continue
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (TypeError, ValueError):
            raise InputError(f"a COCO bbox is [x, y, width, height], got {a['bbox']!r}", path) from None
        kind = "ignore" if a.get("iscrowd") else "faces"
        per_image.setdefault(a["image_id"], {"faces": [], "ignore": []})[kind].append([x, y, x + w, y + h])
    out = []
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise InputError(f"an image needs \"id\" and \"file_name\" (a string), got {im!r:.80}", path)
        _coco_id(im["id"], "an image's \"id\"", path)
        p = root / im["file_name"]
        if not p.exists() and (root / "images" / im["file_name"]).exists():
            p = root / "images" / im["file_name"]
        got = per_image.get(im["id"], {"faces": [], "ignore": []})
        out.append(_make(p, got["faces"], got["ignore"], path))
    if not out:
        raise InputError("holds no pictures", path)
    return out


def _pictures(folder: Path) -> list[Path]:
    from ..images import IMAGE_EXTS, walk_files

    return walk_files(folder, IMAGE_EXTS)


def _label_file(img: Path, folder: Path, ext: str, sub: str) -> Path | None:
    """The label file of ``img``: beside it, or in the sister folder ``sub`` (``images/`` -> ``labels/``)."""
    beside = img.with_suffix(ext)
    if beside.is_file():
        return beside
    rel = img.relative_to(folder)
    parts = list(rel.parts)
    for i, part in enumerate(parts[:-1]):
        if part.lower() in ("images", "jpegimages"):
            cand = folder.joinpath(*parts[:i], sub, *parts[i + 1:]).with_suffix(ext)
            if cand.is_file():
                return cand
    cand = folder / sub / img.with_suffix(ext).name
    return cand if cand.is_file() else None


def _load_yolo(folder: Path) -> list[Annotated]:
    out = []
    for img in _pictures(folder):
        lab = _label_file(img, folder, ".txt", "labels")
        if lab is None:
            raise InputError(f"the picture {img.name!r} has no label file ({img.with_suffix('.txt').name})", folder)
        w, h = _image_size(img, lab)
        boxes = []
        for n, line in enumerate(lab.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                _, cx, cy, bw, bh = (float(v) for v in parts[:5])     # fewer than 5: ValueError too
            except ValueError:
                raise InputError(f"line {n}: a YOLO line is 'class cx cy w h' (relative 0..1), got {line!r:.60}",
                                 lab) from None
            if max(cx, cy, bw, bh) > 1.5:
                raise InputError(f"line {n}: YOLO coordinates are relative to the picture (0..1), got {line!r:.60}",
                                 lab)
            boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        out.append(_make(img, boxes, [], lab))
    return out


def _load_voc(folder: Path) -> list[Annotated]:
    out = []
    for img in _pictures(folder):
        xml = _label_file(img, folder, ".xml", "Annotations")
        if xml is None:
            raise InputError(f"the picture {img.name!r} has no annotation file ({img.with_suffix('.xml').name})",
                             folder)
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise InputError(f"not valid XML ({e})", xml) from None
        boxes, ignore = [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                raise InputError("an <object> without <bndbox>", xml)
            try:
                b = [float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                raise InputError("a <bndbox> needs numeric xmin, ymin, xmax, ymax", xml) from None
            (ignore if (obj.findtext("difficult") or "0").strip() == "1" else boxes).append(b)
        out.append(_make(img, boxes, ignore, xml))
    return out


def detect_format(path: str | os.PathLike) -> str:
    """Which of :data:`FORMATS` ``path`` (a folder or an annotation file) holds.

    Raises :class:`~animeid.errors.InputError` when none fits.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() != ".json":
            raise InputError("an annotation file is boxes.json or a COCO .json; give the folder for YOLO or VOC", p)
        data = _read_json(p)
        return "coco" if isinstance(data, dict) and "annotations" in data and "images" in data else "boxes.json"
    if not p.is_dir():
        raise InputError("no such file or folder", p)
    if (p / "boxes.json").is_file():
        return "boxes.json"
    jsons = sorted(p.glob("*.json")) + sorted(p.glob("annotations/*.json"))
    if any(detect_format(j) == "coco" for j in jsons):
        return "coco"
    pics = _pictures(p)
    if not pics:
        raise InputError("folder holds no pictures and no annotation file", p)
    if any(_label_file(i, p, ".xml", "Annotations") for i in pics[:50]):
        return "voc"
    if any(_label_file(i, p, ".txt", "labels") for i in pics[:50]):
        return "yolo"
    raise InputError("no face boxes found: expected boxes.json, a COCO .json, YOLO .txt or VOC .xml files", p)


def load_boxes(path: str | os.PathLike, fmt: str = "auto") -> list[Annotated]:
    """Every annotated picture under ``path``, in a stable order (see the module's notes).

    ``fmt``: ``"auto"`` or one of :data:`FORMATS`. Raises :class:`~animeid.errors.InputError`
    (naming the file) for anything malformed; nothing is returned half-read.
    """
    p = Path(path)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt not in FORMATS:
        raise InputError(f"unknown annotation format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    if fmt == "boxes.json":
        return _load_boxes_json(p if p.is_file() else p / "boxes.json")
    if fmt == "coco":
        if p.is_file():
            return _load_coco(p, p.parent)
        files = [j for j in sorted(p.glob("*.json")) + sorted(p.glob("annotations/*.json"))
                 if detect_format(j) == "coco"]
        if not files:      # said, not an empty set: nothing is trained or scored on no pictures
            raise InputError("no COCO .json file (with \"images\" and \"annotations\") here or in annotations/", p)
        return [a for j in files for a in _load_coco(j, p)]
    if not p.is_dir():
        raise InputError(f"no such folder (give the folder of a {fmt} set)", p)
    out = _load_yolo(p) if fmt == "yolo" else _load_voc(p)
    if not out:
        raise InputError("folder holds no pictures", p)
    return out


def load_many(paths: Iterable[str | os.PathLike], fmt: str = "auto") -> list[Annotated]:
    """:func:`load_boxes` of each path, joined; a picture named twice is an error."""
    out: list[Annotated] = []
    seen: set[Path] = set()
    for p in paths:
        for a in load_boxes(p, fmt):
            key = a.image.resolve()
            if key in seen:
                raise InputError(f"the picture {a.image.name!r} is annotated twice", p)
            seen.add(key)
            out.append(a)
    return out


def save_boxes_json(path: str | os.PathLike, items: Iterable[Annotated], about: str = "") -> None:
    """Write ``items`` as animeid's ``boxes.json`` (picture names relative to the file's folder)."""
    from .._util import atomic_write_json

    root = Path(path).parent
    data: dict = {"_about": about} if about else {}
    for a in items:
        entry: dict = {"faces": [{"box": [round(float(v), 1) for v in b]} for b in a.boxes]}
        if len(a.ignore):
            entry["ignore"] = [[round(float(v), 1) for v in b] for b in a.ignore]
        data[os.path.relpath(a.image, root)] = entry
    atomic_write_json(path, data)
