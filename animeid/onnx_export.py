"""Exporting a PyTorch network to ONNX, in one place: the opset, the input name, the exporter's
options and the resampling filters the exported networks expect their pictures resized with.

animeid exports three kinds of network, all through :func:`export`:

* frozen ImageNet backbones (:mod:`animeid.backbones`: ``pixels`` -> ``features``);
* fine-tuned recognisers (:mod:`animeid.finetune`: ``pixels`` -> ``probs``, ``embedding``[, ``identity``]);
* face detectors (:mod:`animeid.detect.training`: ``pixels`` -> ``peaks``, ``ltrb``; dynamic height
  and width; without constant folding, so that their weights can be read back from the file to
  fine-tune it, :func:`animeid.detect.training.load_onnx_weights`).

Prediction never imports torch: ONNX Runtime runs the files (:mod:`animeid.backbones`,
:mod:`animeid.detect.learned`).
"""
from __future__ import annotations

import io
import warnings
from typing import Any, Mapping, Sequence

from PIL import Image

__all__ = ["OPSET", "INPUT_NAME", "RESAMPLE", "export", "one_view_graph", "combine_views"]

#: The ONNX opset of every file animeid writes (ONNX Runtime >= 1.17 runs it).
OPSET = 17
#: The input of every exported network: ``(N, 3, H, W)`` float32, normalised.
INPUT_NAME = "pixels"
#: Resampling filters by the name a :class:`animeid.backbones.BackboneConfig` gives its ``interpolation``.
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}


def export(model: Any, example: Any, outputs: Sequence[str], *,
           dynamic_axes: Mapping[str, Mapping[int, str]] | None = None, constant_folding: bool = True) -> bytes:
    """``model`` (a torch module, or a TorchScript one) as ONNX bytes.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; called on ``example``.
    example : torch.Tensor
        An input ``(N, 3, H, W)``, float32, for tracing.
    outputs : sequence of str
        The names of the model's outputs, in order.
    dynamic_axes : mapping, optional
        ONNX dynamic axes; default: axis 0 (the batch) of the input and of every output.
    constant_folding : bool
        Fold constants (smaller, faster graphs); ``False`` keeps every weight an initializer of its
        own (the detector's, read back to fine-tune).

    Returns
    -------
    bytes
        The serialised ONNX model (legacy TorchScript exporter, ``dynamo=False``, opset :data:`OPSET`).
    """
    import torch

    axes = dict(dynamic_axes) if dynamic_axes is not None else {n: {0: "batch"} for n in (INPUT_NAME, *outputs)}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # legacy-exporter / TorchScript deprecation notices
        with torch.no_grad():
            torch.onnx.export(model, (example,), buf, dynamo=False, input_names=[INPUT_NAME],
                              output_names=list(outputs), opset_version=OPSET,
                              do_constant_folding=constant_folding, dynamic_axes=axes)
    return buf.getvalue()


#: Name suffix of the outputs :func:`one_view_graph` adds: the sum an output is the unit vector of.
SUM_SUFFIX = ":sum"


def _const(graph: Any, numpy_helper: Any) -> dict[str, Any]:
    """Every constant tensor of ``graph`` (Constant nodes and initializers) by name, as numpy."""
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def one_view_graph(onnx_bytes: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """A fine-tuned recogniser's flip-averaging graph (:mod:`animeid.finetune`) as a graph of one view,
    so that the mirror image can be run only where it matters (:meth:`animeid.features.FeaturePipeline.run_views`).

    The exported graph runs every picture and its mirror image as one batch ``[x, flip(x)]`` and
    averages the halves: ``probs`` as the mean of the two softmaxes, ``embedding`` and each block of
    ``identity`` as the unit vector of the two views' sum. The graph returned runs ``x`` alone: its
    ``probs``, ``embedding`` and ``identity`` are those of the one view, and it adds, for
    ``embedding`` and each later ``identity`` block, the sum before normalisation (twice the view's
    own; output ``NAME:sum``), from which two runs give exactly the flip-averaged outputs
    (:func:`combine_views`).

    Parameters
    ----------
    onnx_bytes : bytes
        An ONNX graph written by animeid's fine-tuning.

    Returns
    -------
    (bytes, dict) or None
        The one-view graph and its recipe ``{"sums": [output names...], "identity_scale": w or None,
        "outputs": [the graph's own outputs]}``; ``None`` when the graph does not average with the
        mirror image in the way animeid exports it, or when the ``onnx`` package is not installed
        (the graph is then run whole, as it is).
    """
    try:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        return None
    try:
        m = onnx.load_from_string(onnx_bytes)
    except Exception:  # noqa: BLE001 - not a graph onnx reads: run it as it is
        return None
    g = m.graph
    if len(g.input) != 1:
        return None
    inp = g.input[0].name
    const = _const(g, numpy_helper)
    made_by = {o: n for n in g.node for o in n.output}
    outputs = [o.name for o in g.output]

    def ints(name: str) -> list[int] | None:
        v = const.get(name)
        return None if v is None else [int(a) for a in np.asarray(v).ravel()]

    # 1. [x, flip(x)] -> x: the only Concat of the input with its mirror image along the width
    cats = [n for n in g.node if n.op_type == "Concat" and list(n.input[:1]) == [inp] and len(n.input) == 2]
    if len(cats) != 1 or "probs" not in outputs or "embedding" not in outputs:
        return None
    flip = made_by.get(cats[0].input[1])
    if (flip is None or flip.op_type != "Slice" or len(flip.input) != 5 or flip.input[0] != inp
            or ints(flip.input[3]) != [3] or ints(flip.input[4]) != [-1]):
        return None
    # 2. the halves' slices: [:n] (start 0, end computed) and [n:] (start computed, end the maximum)
    firsts = [n for n in g.node if n.op_type == "Slice" and len(n.input) == 5 and ints(n.input[1]) == [0]
              and n.input[2] not in const and ints(n.input[3]) == [0] and ints(n.input[4]) == [1]]
    seconds = [n for n in g.node if n.op_type == "Slice" and len(n.input) == 5 and n.input[1] not in const
               and (ints(n.input[2]) or [0])[0] >= 2 ** 62 and ints(n.input[3]) == [0] and ints(n.input[4]) == [1]]
    if not seconds or len(firsts) != len(seconds):
        return None
    # 3. the sums each unit-length output is made from: embedding = sum / |sum| (Div), identity =
    # Concat(embedding * w, block sums / |block sums|...)
    def sum_of(name: str) -> str | None:
        d = made_by.get(name)
        return d.input[0] if d is not None and d.op_type == "Div" else None

    sums = {"embedding": sum_of("embedding")}
    scale = None
    if "identity" in outputs:
        cat = made_by.get("identity")
        first = made_by.get(cat.input[0]) if cat is not None and cat.op_type == "Concat" else None
        if first is None or first.op_type != "Mul" or list(first.input[:1]) != ["embedding"]:
            return None
        w = const.get(first.input[1])
        if w is None or np.asarray(w).size != 1:
            return None
        scale = float(np.asarray(w).ravel()[0])
        for k, part in enumerate(cat.input[1:], 1):
            sums[f"identity.{k}"] = sum_of(part)
    if any(v is None for v in sums.values()):
        return None

    cats[0].ClearField("input")
    cats[0].input.extend([inp])
    g.node.remove(flip)
    g.node.insert(0, helper.make_node("Constant", [], ["one_view/zero"],
                                      value=numpy_helper.from_array(np.array([0], np.int64))))
    for n in seconds:
        n.input[1] = "one_view/zero"
    for name, tensor in sums.items():
        g.node.append(helper.make_node("Identity", [tensor], [name + SUM_SUFFIX]))
        g.output.append(helper.make_tensor_value_info(name + SUM_SUFFIX, onnx.TensorProto.FLOAT, None))
    recipe = {"sums": list(sums), "identity_scale": scale, "outputs": outputs}
    return m.SerializeToString(), recipe


def combine_views(one: Mapping[str, Any], mirrored: Mapping[str, Any] | None, recipe: Mapping[str, Any]
                  ) -> dict[str, Any]:
    """The outputs of the flip-averaging graph from the outputs of its :func:`one_view_graph` on
    pictures (``one``) and on their mirror images (``mirrored``; None: the one view's own outputs).

    Each mapping holds every output of the one-view graph, ``(n, d)`` arrays. Returns
    ``{"probs", "embedding"[, "identity"]}`` as ``(n, d)`` float32 arrays.
    """
    import numpy as np

    def unit(v):
        v = np.asarray(v, dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    if mirrored is None:
        return {k: np.asarray(one[k], np.float32) for k in recipe["outputs"]}
    sums = {k: np.asarray(one[k + SUM_SUFFIX], np.float32) + np.asarray(mirrored[k + SUM_SUFFIX], np.float32)
            for k in recipe["sums"]}
    out = {"probs": (np.asarray(one["probs"], np.float32) + np.asarray(mirrored["probs"], np.float32)) * 0.5,
           "embedding": unit(sums["embedding"])}
    if recipe.get("identity_scale") is not None:
        parts = [out["embedding"] * np.float32(recipe["identity_scale"])]
        parts += [unit(sums[k]) for k in recipe["sums"] if k != "embedding"]
        out["identity"] = np.concatenate(parts, axis=1)
    return {k: out[k] for k in recipe["outputs"] if k in out}
