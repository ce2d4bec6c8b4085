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
    """Load a saved recogniser.

    Parameters
    ----------
    path : path
        An ``.animeid`` model file (``animeid train`` writes one).

    Returns
    -------
    animeid.predict.Recognizer
        The model: ``predict``, ``predict_batch``, ``identify_faces``, ``enroll``, ``forget``, ``save``.

    Raises
    ------
    ModelFileError
        The file is missing, unreadable, damaged, not an animeid model or from a newer animeid.

    Examples
    --------
    >>> import animeid
    >>> model = animeid.load("characters.animeid")
    >>> model.predict("screenshot.png")["faces"][0]["name"]
    'aoba'
    """
    from .predict import Recognizer

    return Recognizer.load(path)
