"""animeid: recognise anime characters by their faces.

The Python API is the library the CLI and the web app both call::

    import animeid
    model = animeid.load("characters.animeid")
    result = model.predict("screenshot.png")      # faces found, each with its top characters

Modules, one per pipeline stage: :mod:`animeid.video` (frames), :mod:`animeid.detect` (faces),
:mod:`animeid.dataset` (workspaces, export), :mod:`animeid.augment`, :mod:`animeid.backbones`
(feature extractors), :mod:`animeid.heads` (recognisers), :mod:`animeid.evaluate`,
:mod:`animeid.predict`, :mod:`animeid.serve`. Heavy modules are imported on first use.
"""
from __future__ import annotations

from ._version import __version__
from .errors import AnimeidError, DatasetError, InputError, ModelFileError

__all__ = ["__version__", "AnimeidError", "InputError", "DatasetError", "ModelFileError", "load"]


def load(path):
    """Load a saved recogniser (``.animeid`` file); see :class:`animeid.predict.Recognizer`."""
    from .predict import Recognizer

    return Recognizer.load(path)
