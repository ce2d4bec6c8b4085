"""One small registry for everything animeid names: backbones, training methods, classification heads
and face detectors (as timm registers its models).

A :class:`Registry` maps names to entries (a factory, a class, a config), keeps the order they were
registered in (the CLI lists choices in it), lists names matching a pattern, and refuses an unknown
name with :class:`~animeid.errors.UnknownNameError` listing the known ones (a ``ValueError``, so the
CLI prints one line and the web API answers 422).

    >>> from animeid.train import METHODS
    >>> METHODS.list("fine*")                         # doctest: +SKIP
    ['finetune']

Where a new one goes: a backbone, :func:`animeid.backbones.register_backbone`; a training method,
the ``@_method`` decorator in :mod:`animeid.train`; a head, :data:`animeid.heads.HEADS`; a face
detector, :data:`animeid.detect.DETECTORS`.
"""
from __future__ import annotations

import fnmatch
import threading
from typing import Any, Callable, Generic, Iterator, Mapping, MutableMapping, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")
_MISSING = object()


class Registry(MutableMapping[str, T], Generic[T]):
    """Names to entries, in registration order, thread-safe to add to.

    Parameters
    ----------
    kind : str
        What the entries are, for messages ("backbone", "face detector").
    option : str, optional
        The option that names one (``"backbone"``, ``"method"``, ``"detector"``), put on the
        :class:`~animeid.errors.UnknownNameError` so the CLI names the flag.
    hint : str
        Added to the message for an unknown name (e.g. "or the path of a detector file").
    """

    def __init__(self, kind: str, *, option: str | None = None, hint: str = "",
                 entries: Mapping[str, T] | None = None):
        self.kind, self.option, self.hint = kind, option, hint
        self._entries: dict[str, T] = dict(entries or {})
        self._lock = threading.Lock()

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``name``; ``ValueError`` when the name is taken (unless ``overwrite``)."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        with self._lock:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
        return entry

    def decorator(self, name: str, make: Callable[[Callable], T] | None = None) -> Callable[[Callable], Callable]:
        """``@registry.decorator(name)``: registers the decorated function (or ``make(fn)``)."""
        def deco(fn: Callable) -> Callable:
            self.register(name, make(fn) if make is not None else fn)
            return fn
        return deco

    def get(self, name: str, default: Any = _MISSING) -> T:  # type: ignore[override]
        """The entry of ``name``; :class:`~animeid.errors.UnknownNameError` listing the known names
        (or ``default`` when one is given, as a dict does)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            from .errors import UnknownNameError

            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}"
                                   + (f", {self.hint}" if self.hint else ""), self.option) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Names matching the shell-style ``pattern``, in registration order."""
        return [n for n in self._entries if fnmatch.fnmatchcase(n, pattern)]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:    # a dict's way: replaces
        self.register(name, entry, overwrite=True)

    def __delitem__(self, name: str) -> None:
        with self._lock:
            del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
