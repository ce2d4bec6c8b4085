"""Int8 copies of a learned detector (``animeid detector quantize``; BENCHMARKS.md, issue 11): the
same network with 8-bit weights and activations, which ONNX Runtime runs about twice as fast as
float32 on the development machine's 2 CPU cores (v2 1.5-2.5x, v3 1.7-2.1x; they have AVX-512 VNNI;
on CPUs without VNNI the gain was not measured). The file uses ONNX Runtime's own int8 operators
(``com.microsoft``: ``QLinearAdd`` and others), so it runs in ONNX Runtime only, from version 1.17 on.

Static quantization with ONNX Runtime's tools (``onnxruntime.quantization.quantize_static``; they
need the ``onnx`` package, part of the full install, not of the light one, which only runs the
result): the ranges of the activations are measured on calibration pictures, weights are quantized
per output channel, in the QOperator form (``QLinearConv``; on the development machine the QDQ form
ran slower than float32, signed activations 7x slower). Weights and activations are both unsigned
8-bit ("U8U8"): on a CPU with VNNI it computes the same numbers as unsigned x signed, and ONNX
Runtime's documentation notes that U8U8, unlike U8S8, cannot saturate on CPUs without VNNI (AVX2's
``vpmaddubsw``). The usual alternative there, 7-bit weights (``reduce_range``), was measured to
double the error of the scores (mean logit error 0.11 against 0.06 on validation pictures and face
crops). The heads' last convolutions, the sigmoid and the peak picking stay float32 (a few cheap
operations), so scores and box sides come out continuous.

Calibration pictures are each run at every size the detector uses on them (the quick pass for face
crops, the small-picture size, the file's passes), letterboxed as :mod:`animeid.detect.learned`
letterboxes them, so the ranges cover face crops as well as whole pictures; they are all held in
memory (160 pictures of 512 px: 1.5 GB at the peak). The calibration of the scores (Platt scaling,
the default threshold) must then be fitted again on held-out pictures
(:func:`animeid.detect.training.recalibrate`); :func:`quantize_detector` does it when given them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, ModelFileError
from .annotations import Annotated
from .training import can_calibrate

#: pictures used to measure the activations' ranges (more take longer and hold more memory)
CALIBRATION_PICTURES = 160


def check_source(src: str | os.PathLike, out: str | os.PathLike):
    """The :class:`~animeid.detect.learned.LearnedDetector` of ``src`` when an int8 copy of it may be
    written to ``out``: :class:`ModelFileError` for a missing or foreign file or one quantized
    already, :class:`InputError` when ``out`` is ``src`` itself. Reads no pictures."""
    from .learned import LearnedDetector

    det = LearnedDetector(src)
    if det.meta.get("quantized"):
        raise ModelFileError("is quantized already: quantize the float32 file it was made from", src)
    if Path(out).resolve() == Path(src).resolve():
        raise InputError("the int8 copy would replace the detector itself: give another --out", out)
    return det


def _calibration_inputs(det, items: Sequence[Annotated], pictures: int, seed: int) -> list[np.ndarray]:
    """``(1, 3, h, w)`` float32 inputs: up to ``pictures`` of ``items`` (a seeded choice), each at every
    size the detector runs pictures at, letterboxed (and padded first when small, as detection does)."""
    from ..images import load_image
    from . import learned as L

    rng = np.random.default_rng(seed)
    chosen = [items[i] for i in sorted(rng.choice(len(items), min(pictures, len(items)), replace=False))]
    sizes = sorted({L.QUICK_SIZE, L.SMALL_SIZE, *det.sizes})
    out = []
    for a in chosen:
        rgb = np.asarray(load_image(a.image, "RGB"))
        pad = L._crop_pad(rgb)
        rgb = L._pad(rgb, pad) if pad else rgb
        out.extend(L.letterbox(rgb, s)[0][None] for s in sizes)
    return out


def quantize_detector(src: str | os.PathLike, out: str | os.PathLike, calibration: Sequence[Annotated], *,
                      held_out: Sequence[Annotated] | None = None, pictures: int = CALIBRATION_PICTURES,
                      seed: int = 0) -> dict:
    """Write an int8 copy of the detector file ``src`` to ``out`` (see the module's notes).

    Parameters
    ----------
    src : path
        A learned detector file (``.onnx``, float32), e.g. one made by ``animeid detector train``.
    out : path
        Where the int8 file goes (written atomically; an existing file there is replaced, ``src``
        never).
    calibration : sequence of Annotated
        Pictures to measure the activations' ranges on (the training part; their boxes are not used).
    held_out : sequence of Annotated, optional
        Boxed pictures the detector was not trained on: the scores' calibration and default threshold
        are fitted again on them (recommended: quantization shifts the raw scores a little).
        Without them, or with fewer than :data:`~animeid.detect.training.MIN_CALIBRATION_FACES`
        boxed faces in them, or when nothing can be fitted on them (the detections all faces or all
        false alarms), the file keeps ``src``'s calibration (``"recalibrated": false`` in its metadata).
    pictures : int
        How many of ``calibration`` to use (a seeded choice), each at every detection size.
    seed : int
        Seed of that choice.

    Returns
    -------
    dict
        The new file's metadata: ``src``'s, plus ``"quantized": "int8"``, ``"quantized_from"``
        (``src``'s :attr:`~animeid.detect.learned.LearnedDetector.file_id`: its file name) and, with
        ``held_out``, the new calibration.

    Raises
    ------
    ModelFileError
        ``src`` is missing or not an animeid detector file, or is quantized already.
    InputError
        No calibration pictures, or ``out`` is ``src``.
    ImportError
        The ``onnx`` package is missing (the light install): install animeid fully.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .._util import atomic_write_bytes
    from .learned import LearnedDetector
    from .training import recalibrate, set_metadata

    det = check_source(src, out)
    if not calibration:
        raise InputError("no calibration pictures: give the boxed pictures the detector was trained on")
    inputs = _calibration_inputs(det, list(calibration), pictures, seed)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"pixels": x}

    with tempfile.TemporaryDirectory(prefix="animeid-quantize-") as tmp:
        tmp_out, prepared = Path(tmp) / "int8.onnx", Path(tmp) / "prepared.onnx"
        # shapes inferred and the graph optimised first, as the quantizer expects (its symbolic shape
        # inference cannot follow the detector's dynamic picture size: skipped)
        quant_pre_process(os.fspath(det.path), os.fspath(prepared), skip_symbolic_shape=True)
        with _quiet_root_logger():  # its notes on folded batch-norm biases mean nothing to a user
            quantize_static(os.fspath(prepared), os.fspath(tmp_out), _Reader(), quant_format=QuantFormat.QOperator,
                            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QUInt8, nodes_to_exclude=_output_heads(prepared))
        _finish(det.path, tmp_out)
        refit = can_calibrate(held_out)
        set_metadata(tmp_out, {"quantized": "int8", "quantized_from": det.file_id,
                               "quantization": {"pictures": min(pictures, len(calibration)), "seed": seed,
                                                "format": "QOperator U8U8", "per_channel": True},
                               "recalibrated": refit})
        if refit:
            try:
                recalibrate(tmp_out, list(held_out))
            except InputError:   # nothing to fit on them: the source's calibration stays, as with few faces
                set_metadata(tmp_out, {"recalibrated": False})
        atomic_write_bytes(out, tmp_out.read_bytes())
    return LearnedDetector(out).meta


@contextlib.contextmanager
def _quiet_root_logger():
    """The root logger at ERROR for a while (ONNX Runtime's quantizer warns through it)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _output_heads(path: Path) -> list[str]:
    """Names of the nodes from the graph's outputs back to (and including) the last convolutions: the
    heads' last layers, the sigmoid and the peak picking, left in float32 (a few cheap operations on
    the stride-8 maps) so that scores and box sides come out continuous, not in 8-bit steps."""
    import onnx

    graph = onnx.load(os.fspath(path)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    keep: dict[str, None] = {}
    todo = [o.name for o in graph.output]
    while todo:
        node = made_by.get(todo.pop())
        if node is None or node.name in keep:
            continue
        keep[node.name] = None
        if node.op_type != "Conv":
            todo.extend(node.input)
    return list(keep)


def _finish(src: Path, dst: Path) -> None:
    """Copy ``src``'s ``animeid_detector`` metadata into ``dst`` (the quantizer drops it) and keep only
    the operator sets ``dst``'s nodes use: the quantizer declares every domain it knows (``ai.onnx.ml``
    5 among them), which ONNX Runtime 1.17 refuses to load."""
    import onnx

    meta = onnx.load(os.fspath(src), load_external_data=False).metadata_props
    model = onnx.load(os.fspath(dst))
    have = {p.key for p in model.metadata_props}
    for p in meta:
        if p.key not in have:
            model.metadata_props.append(p)
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, os.fspath(dst))


__all__ = ["quantize_detector", "check_source", "CALIBRATION_PICTURES"]
