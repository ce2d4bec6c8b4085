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
           "log"]

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
             disable: bool | None = None) -> Iterable[T]:
    """A tqdm progress bar on stderr, shown only on a terminal (``disable=None``)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)
