"""The saved model: one ``.animeid`` file holding everything needed to predict, never a pickle.

Layout (a ZIP container)::

    animeid-model.json   what it is: format name + version, animeid version, method, labels,
                         backbone (name, version, preprocessing config), extra feature config,
                         head type + parameters, training summary, thresholds, creation time,
                         and the size + SHA-256 of every other member
    arrays.npz           the head's arrays as ``head.<name>`` (plus ``extra.<name>``); written and
                         read with ``allow_pickle=False``: numbers and unicode only
    backbone.onnx        optional: the (frozen or fine-tuned) backbone graph, so prediction needs
                         only onnxruntime

:func:`save_model` writes through a temporary file renamed into place (a crash leaves the old
file). :func:`read_model` checks everything and returns a :class:`ModelBundle`; whatever is wrong
with the file -- missing, empty, not a ZIP, a ZIP from something else, a damaged member, a newer
format or a newer animeid -- raises :class:`~animeid.errors.ModelFileError` naming the file.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._util import atomic_write, check_file
from ._version import __version__
from .errors import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "MODEL_SUFFIX", "ModelBundle", "save_model", "read_model"]

#: ``format`` field of animeid-model.json.
FORMAT = "animeid-model"
#: Highest format version this animeid writes and reads. 2: a fine-tuned network's graph may be
#: stored as one view (``features["one_view"]`` holds how two runs combine: see
#: :func:`animeid.onnx_export.one_view_graph`); an animeid that reads only 1 would run it as if it
#: averaged the mirror image, so it refuses the file instead.
FORMAT_VERSION = 2
#: The usual file name ending.
MODEL_SUFFIX = ".animeid"

META_NAME = "animeid-model.json"
ARRAYS_NAME = "arrays.npz"
ONNX_NAME = "backbone.onnx"
_MAX_MEMBER = 4 * 1024**3  # refuse members that claim to unpack to more than 4 GiB


@dataclass
class ModelBundle:
    """A model read by :func:`read_model` (or about to be written).

    ``head``: the fitted estimator (:mod:`animeid.heads`), ``labels``: its characters in column
    order, ``backbone``: ``{"name", "version", "preprocess", ...}`` or ``None`` (pixel models),
    ``backbone_onnx``: the ONNX graph bytes when the file carries one, ``meta``: the whole
    animeid-model.json.
    """

    path: Path | None
    method: str
    labels: list[str]
    head: Any
    backbone: dict[str, Any] | None = None
    backbone_onnx: bytes | None = None
    features: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    animeid_version: str = __version__
    format_version: int = FORMAT_VERSION
    created: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, X: Any) -> np.ndarray:
        """The head's class probabilities ``(n, len(labels))`` for features (or pictures, for
        pixel models) ``X``."""
        return self.head.predict_proba(X)

    def onnx_session(self, providers: list[str] | None = None):
        """An onnxruntime session on the bundled backbone graph (``ModelFileError`` if none). For a
        graph stored as one view (``features["one_view"]``), its outputs are one view's:
        :meth:`animeid.features.FeaturePipeline.run_outputs` gives the model's."""
        if self.backbone_onnx is None:
            raise ModelFileError("this model carries no backbone.onnx", self.path)
        import onnxruntime as ort

        return ort.InferenceSession(self.backbone_onnx, providers=providers or ["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _json_safe(obj: Any, what: str) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    try:
        return json.loads(json.dumps(obj, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} cannot be stored in a model file: {e}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray) and o.size <= 10_000:
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    clean = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise ValueError(f"array {k!r} has dtype object; model files hold numbers and text only")
        clean[k] = a
    # savez pickles nothing once object arrays are refused; it writes plain .npy members
    np.savez(buf, **clean)
    return buf.getvalue()


def save_model(path: str | os.PathLike, head: Any, *, method: str, labels: list[str] | None = None,
               backbone: Mapping[str, Any] | Any | None = None, backbone_onnx: bytes | str | os.PathLike | None = None,
               features: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None,
               thresholds: Mapping[str, Any] | None = None,
               extra_arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a fitted ``head`` and everything needed to use it to ``path`` (atomically).

    ``method``: a short name of the recipe (``"pixel_forest"``, ``"inception_v3+softmax"``...).
    ``labels``: defaults to ``head.classes_`` and must equal it. ``backbone``: a dict (or the
    backbone's config dataclass) with at least ``name`` and ideally ``version`` and the
    preprocessing settings; ``backbone_onnx``: the ONNX graph (bytes or a file) to bundle.
    ``features``: other feature settings (e.g. the colour histogram's parameters);
    ``training``: a JSON-safe summary (data, split, scores, history...); ``thresholds``: e.g.
    ``{"unknown": 0.35}``. Returns the path written. ``.animeid`` is the usual ending.
    """
    from .heads import head_name

    path = Path(path)
    name = head_name(head)
    classes = [str(c) for c in getattr(head, "classes_", [])]
    if labels is None:
        labels = classes
    labels = [str(x) for x in labels]
    if labels != classes:
        raise ValueError(f"labels {labels[:5]}... differ from the head's classes_ {classes[:5]}...")
    arrays = {f"head.{k}": v for k, v in head.to_arrays().items()}
    for k, v in (extra_arrays or {}).items():
        arrays[f"extra.{k}"] = v
    npz = _npz_bytes(arrays)
    onnx: bytes | None
    if backbone_onnx is None or isinstance(backbone_onnx, (bytes, bytearray)):
        onnx = bytes(backbone_onnx) if backbone_onnx is not None else None
    else:
        onnx = Path(backbone_onnx).read_bytes()

    bb = _json_safe(backbone, "backbone") if backbone is not None else None
    if bb is not None and not (isinstance(bb, dict) and bb.get("name")):
        raise ValueError("backbone must be a mapping with a 'name'")
    members = {ARRAYS_NAME: npz}
    if onnx is not None:
        members[ONNX_NAME] = onnx
        if bb is not None:
            bb["onnx"] = ONNX_NAME
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "animeid_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": str(method),
        "labels": labels,
        "backbone": bb,
        "features": _json_safe(features, "features") if features is not None else None,
        "head": {"type": name, "params": _json_safe(head.to_params(), "head parameters")},
        "training": _json_safe(dict(training or {}), "training summary"),
        "thresholds": _json_safe(dict(thresholds or {}), "thresholds"),
        "members": {k: {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in members.items()},
    }
    meta_bytes = json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8")
    with atomic_write(path, "wb") as f:
        with zipfile.ZipFile(f, "w") as z:
            z.writestr(META_NAME, meta_bytes, compress_type=zipfile.ZIP_DEFLATED)
            z.writestr(ARRAYS_NAME, npz, compress_type=zipfile.ZIP_DEFLATED)
            if onnx is not None:
                z.writestr(ONNX_NAME, onnx, compress_type=zipfile.ZIP_STORED)
    return path


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _version_tuple(v: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(v).split("+")[0])[:3]
    return tuple(int(x) for x in nums) or (0,)


def _read_member(z: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise ModelFileError(f"damaged model file: {name} is missing", path) from None
    if info.file_size > _MAX_MEMBER:
        raise ModelFileError(f"damaged model file: {name} claims {info.file_size:,} bytes", path)
    try:
        return z.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ModelFileError(f"damaged model file: cannot read {name} ({e})", path) from None
    except Exception as e:  # zlib.error and friends
        raise ModelFileError(f"damaged model file: cannot read {name} ({e})", path) from None


def read_model(path: str | os.PathLike) -> ModelBundle:
    """Open an ``.animeid`` model file; raises :class:`~animeid.errors.ModelFileError` for any problem."""
    from .heads import head_from_arrays

    path = check_file(path, "an animeid model file", ModelFileError, missing="no such model file")
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ModelFileError("not an animeid model file (not a ZIP container)", path) from None
    except OSError as e:
        raise ModelFileError(f"cannot read: {e.strerror or e}", path) from None
    with z:
        if META_NAME not in z.namelist():
            raise ModelFileError(f"not an animeid model file (a ZIP without {META_NAME})", path)
        raw = _read_member(z, META_NAME, path)
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"damaged model file: {META_NAME} is not valid JSON ({e})", path) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"not an animeid model file ({META_NAME} has no format {FORMAT!r})", path)
        made_by = str(meta.get("animeid_version", "?"))
        fv = meta.get("format_version")
        if not isinstance(fv, int) or isinstance(fv, bool):
            raise ModelFileError(f"damaged model file: bad format_version {fv!r}", path)
        if fv > FORMAT_VERSION:
            raise ModelFileError(
                f"model file format {fv} is newer than this animeid reads ({FORMAT_VERSION}); "
                f"made by animeid {made_by}, this is {__version__}: upgrade animeid", path)
        if _version_tuple(made_by)[0] > _version_tuple(__version__)[0]:
            raise ModelFileError(f"made by animeid {made_by}, this is {__version__}: upgrade animeid", path)

        members = meta.get("members") or {}
        blobs: dict[str, bytes] = {}
        for name in (ARRAYS_NAME, ONNX_NAME):
            if name not in members and name != ARRAYS_NAME:
                continue
            data = _read_member(z, name, path)
            want = members.get(name) or {}
            if want.get("sha256") and hashlib.sha256(data).hexdigest() != want["sha256"]:
                raise ModelFileError(f"damaged model file: {name} does not match its checksum", path)
            blobs[name] = data

    try:
        with np.load(io.BytesIO(blobs[ARRAYS_NAME]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # ValueError (pickled data), BadZipFile, OSError, EOFError...
        raise ModelFileError(f"damaged model file: {ARRAYS_NAME} is unreadable ({e})", path) from None

    try:
        head_meta = meta["head"]
        labels = [str(x) for x in meta["labels"]]
        method = str(meta["method"])
        head_arrays = {k[5:]: v for k, v in arrays.items() if k.startswith("head.")}
        head = head_from_arrays(head_meta["type"], head_arrays, head_meta.get("params") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"damaged or incompatible model file: cannot rebuild the head ({e})",
                             path) from None
    if [str(c) for c in head.classes_] != labels:
        raise ModelFileError("damaged model file: labels do not match the head's classes", path)
    return ModelBundle(
        path=path, method=method, labels=labels, head=head, backbone=meta.get("backbone"),
        backbone_onnx=blobs.get(ONNX_NAME), features=meta.get("features"), training=meta.get("training") or {},
        thresholds=meta.get("thresholds") or {},
        extra_arrays={k[6:]: v for k, v in arrays.items() if k.startswith("extra.")},
        animeid_version=made_by, format_version=fv, created=str(meta.get("created", "")), meta=meta)
