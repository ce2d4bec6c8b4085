"""Finding anime faces: the shared machinery (boxes, crops, previews, the :class:`Detector`
protocol and the table of detectors) and one module per detector.

* :mod:`animeid.detect.base` - :class:`Face`, detection on any picture (passes, merging), crops,
  previews, :func:`detect_files`;
* :mod:`animeid.detect.animeface` - the study's AnimeFace 2009 detector (ctypes on ``libnvxs``);
* :mod:`animeid.detect.learned` - animeid's own learned detector (ONNX Runtime), the default;
* :mod:`animeid.detect.annotations` - face boxes in animeid's ``boxes.json``, COCO, YOLO and VOC;
* :mod:`animeid.detect.metrics` - precision, recall, F1 and AP at an IoU;
* :mod:`animeid.detect.training` - training a learned detector (needs torch);
* :mod:`animeid.detect.quantize` - int8 copies of a learned detector (needs the ``onnx`` package).
"""
from .base import *  # noqa: F401,F403
from .base import __all__ as _base_all
from .animeface import AnimeFaceDetector  # noqa: F401

__all__ = [*_base_all, "AnimeFaceDetector"]
