"""One rule per option: what values an option may take, checked once, the same for the Python API,
the CLI and the web API.

A :class:`Rule` describes an option's values (a whole number from 1 to 50, a share from 0 to 1,
one of a few words, ...). The config dataclasses (:class:`animeid.predict.PredictConfig`,
:class:`animeid.dataset.CollectConfig`, :class:`animeid.features.FeatureSpec`,
:class:`animeid.finetune.FinetuneConfig`) hold a table ``{field: Rule}`` and check every field in
``__post_init__`` (:func:`check_fields`); functions with such options (``dataset.export``,
``cluster.cluster_workspace``, ``video.write_frames``, ...) check theirs with :meth:`Rule.check`
before any work. A value a rule refuses raises :class:`~animeid.errors.ConfigError` (an
:class:`~animeid.errors.AnimeidError` and a :class:`ValueError`) naming the option:
``top: must be a whole number from 1 to 50, got 0``.

The CLI parses its flags with :meth:`Rule.arg` (the same rule, so a bad value is refused before
any file is read, with the flag's name), and the web API answers a :class:`ConfigError` with 422.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, fields
from typing import Any, Sequence

from .errors import ConfigError

__all__ = ["Rule", "whole", "number", "share", "choice", "name_or_path", "detector", "check_fields", "MAX_HASH_BITS"]

#: bits of a perceptual hash (dedupe distances and similar-frame distances are 0..64)
MAX_HASH_BITS = 64


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Rule:
    """The values one option may take. ``kind``: ``"int"``, ``"float"``, ``"choice"`` or ``"name"``
    (a name or a file path: text). ``lo``/``hi``: bounds (``lo_open``/``hi_open``: excluded);
    ``choices``: the words allowed; ``optional``: None is allowed too (meaning the default).
    ``what``: how a value is described in messages (e.g. ``"seconds"``)."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    what: str = ""

    # -- description
    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "name":
            return "a name or a file path"
        if self.kind == "detector":
            return "a face detector's name or a detector file"
        base = "a whole number" if self.kind == "int" else "a number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if self.lo_open or self.hi_open:
                s = (f"{base} greater than {_fmt(lo)}" if self.lo_open else f"{base} from {_fmt(lo)}") + \
                    (f" and below {_fmt(hi)}" if self.hi_open else f" up to {_fmt(hi)}")
            else:
                s = f"{base} from {_fmt(lo)} to {_fmt(hi)}"
        elif lo is not None:
            s = (f"{base} greater than {_fmt(lo)}" if self.lo_open else
                 f"a positive whole number" if self.kind == "int" and lo == 1 else f"{base} of at least {_fmt(lo)}")
        elif hi is not None:
            s = f"{base} below {_fmt(hi)}" if self.hi_open else f"{base} of at most {_fmt(hi)}"
        else:
            s = f"a finite number" if self.kind == "float" else base
        return s + (f" ({self.what})" if self.what else "")

    def _refuse(self, option: str, value: Any) -> ConfigError:
        return ConfigError(option, f"must be {self.describe()}, got {value!r}")

    # -- checking
    def check(self, option: str, value: Any) -> Any:
        """``value`` (an int as int, a number as float, a word as str) or :class:`ConfigError`."""
        if value is None:
            if self.optional:
                return None
            raise self._refuse(option, value)
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise self._refuse(option, value)
            return value
        if self.kind in ("name", "detector"):
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise self._refuse(option, value)
            if self.kind == "detector":      # a registered detector or a detector file's path
                from .detect.base import check_detector_name

                check_detector_name(value, option)
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._refuse(option, value)
        if self.kind == "int":
            if isinstance(value, numbers.Integral):
                v: float = int(value)
            elif math.isfinite(value) and float(value).is_integer():
                v = int(value)
            else:
                raise self._refuse(option, value)
        else:
            v = float(value)
            if not math.isfinite(v):
                raise self._refuse(option, value)
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            raise self._refuse(option, value)
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            raise self._refuse(option, value)
        return v

    def parse(self, text: str) -> Any:
        """The value of a command-line word (``ValueError`` for one that is not a number)."""
        if self.kind in ("choice", "name", "detector"):
            return text
        if self.optional and text.strip().lower() in ("none", "default"):
            return None
        return int(text) if self.kind == "int" else float(text)

    def arg(self, option: str):
        """An ``argparse`` ``type=`` for the flag ``option``: the word parsed and checked by this rule;
        ``argparse`` reports a refusal as ``argument --top: must be ...``."""
        import argparse

        def convert(text: str):
            try:
                value = self.parse(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
            try:
                return self.check(option, value)
            except ConfigError as e:         # said with the word as typed: got '-1', not got -1.0
                raise argparse.ArgumentTypeError(
                    f"must be {self.describe()}, got {text!r}" if self.kind in ("int", "float") else e.problem) from None

        convert.__name__ = self.kind       # argparse names the type in some messages
        return convert


def whole(lo: int | None = None, hi: int | None = None, *, optional: bool = False, what: str = "") -> Rule:
    return Rule("int", lo, hi, optional=optional, what=what)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           optional: bool = False, what: str = "") -> Rule:
    return Rule("float", lo, hi, lo_open=lo_open, hi_open=hi_open, optional=optional, what=what)


def share(*, hi_open: bool = False, optional: bool = False, what: str = "") -> Rule:
    """A share or probability, 0..1 (``hi_open``: 1 excluded)."""
    return Rule("float", 0.0, 1.0, hi_open=hi_open, optional=optional, what=what)


def choice(words: Sequence[str], *, optional: bool = False) -> Rule:
    return Rule("choice", choices=tuple(words), optional=optional)


def name_or_path(*, optional: bool = True) -> Rule:
    return Rule("name", optional=optional)


def detector(*, optional: bool = True) -> Rule:
    """A face detector: a name of :data:`animeid.detect.DETECTORS` or the path of a detector file
    (whether the file is one is found when it is opened); an unknown name raises
    :class:`~animeid.errors.UnknownNameError`."""
    return Rule("detector", optional=optional)


def check_fields(obj: Any, rules: dict[str, Rule]) -> None:
    """Check every field of the dataclass ``obj`` that ``rules`` names (in field order); the first
    bad one raises :class:`ConfigError`. Checked values are stored back (``3.0`` -> ``3`` for whole
    numbers), also into frozen dataclasses."""
    for f in fields(obj):
        rule = rules.get(f.name)
        if rule is None:
            continue
        value = getattr(obj, f.name)
        checked = rule.check(f.name, value)
        if checked is not value and type(checked) is not type(value):
            object.__setattr__(obj, f.name, checked)


# ------------------------------------------------------------------------ rules several options share

#: a face detector's score threshold (None: the detector's own default)
DETECTOR_SCORE = share(optional=True, what="a detector score")
#: a square crop's margin around the face, as a share of the face's size
MARGIN = number(0.0, 4.0, what="share of the face's size")
#: the side of square face crops and resized faces
SIDE = whole(1, 4096, what="pixels")
#: time between sampled video frames
SECONDS = number(0.001, what="seconds")      # a millisecond at least: frame names and sample times are in ms
#: a perceptual-hash distance
HASH_BITS = whole(0, MAX_HASH_BITS, what="bits of 64")
#: a size limit in megabytes
MEGABYTES = number(0.0, lo_open=True, what="MB")
