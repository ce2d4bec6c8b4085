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

__all__ = ["OPSET", "INPUT_NAME", "RESAMPLE", "export"]

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
