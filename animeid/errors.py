"""Errors animeid raises for the user's own input.

Every error that a user can cause (a missing file, a corrupt picture, a model file that is
not one) is an :class:`AnimeidError` whose message names the file and the problem. The CLI
prints such errors on one line, without a traceback, and exits with status 1 (2 for usage).
"""
from __future__ import annotations

import os

__all__ = ["AnimeidError", "InputError", "DatasetError", "ModelFileError", "OutputError", "ConfigError",
           "UnknownNameError", "CannotEnrollError"]


class AnimeidError(Exception):
    """Base class. ``path`` (when given) is put in front of the message."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputError(AnimeidError):
    """A picture, video or folder given by the user cannot be used."""


class DatasetError(AnimeidError):
    """A dataset or workspace is unusable (empty, one character only, ...)."""


class ModelFileError(AnimeidError):
    """A model file is missing, corrupt, foreign or from a newer animeid."""


class OutputError(InputError):
    """An output folder or file cannot be used: it holds something animeid did not write, is a
    workspace or holds the command's inputs, or is an earlier output and ``--overwrite`` was not given."""


class ConfigError(AnimeidError, ValueError):
    """An option with a value it cannot take (``top=0``, ``detect="bogus"``, a negative margin).

    ``option`` names it as the Python API does (a config field or a keyword argument, e.g.
    ``"top"``, ``"dedupe_distance"``; None when the message names it already), ``problem`` says
    what it must be: ``str(e)`` is ``"top: must be a whole number from 1 to 50, got 0"``. The CLI
    reports it with the flag's name and exit status 2; the web API answers 422. The rules live in
    :mod:`animeid.options`.
    """

    def __init__(self, option: str | None, problem: str):
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}" if option else problem)


class UnknownNameError(ConfigError):
    """A name that is not in a registry (a detector, backbone or method); the message lists the known ones.

    A :class:`ConfigError` (so also an :class:`AnimeidError` and a :class:`ValueError`); ``option``,
    when given, is the option that held the name."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(option, message)


class CannotEnrollError(ModelFileError):
    """The model cannot enrol or forget characters (it has no open-set layer: made by an older
    animeid, or its calibration failed). The web API answers 501."""
