"""One loader for every picture animeid reads.

Every function in animeid that takes a picture accepts :data:`ImageTyping` and goes through
:func:`load_image`, so that the same checks apply everywhere:

* a path (``str`` / ``os.PathLike``), raw ``bytes``, a binary file object, a ``PIL.Image.Image``,
  or a ``numpy.ndarray`` holding an image (``(H, W, 3)`` RGB or ``(H, W)`` grey, ``uint8``).
  In animeid an ndarray is always a picture, never a feature vector;
* pictures larger than :data:`MAX_PIXELS` are refused *before* decoding (decompression bombs);
* truncated or corrupt files raise :class:`~animeid.errors.InputError` naming the file;
* EXIF orientation is applied, transparency is composed onto white.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Union

import numpy as np
from PIL import Image, ImageOps

from ._util import check_file
from .errors import InputError

__all__ = [
    "ImageTyping",
    "IMAGE_EXTS",
    "MAX_PIXELS",
    "load_image",
    "to_array",
    "describe",
    "iter_image_files",
    "walk_files",
    "is_image_file",
]

ImageTyping = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, np.ndarray]

#: File name endings treated as pictures when a folder is scanned.
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

#: Largest picture animeid decodes (width x height). 8K UHD is 33 Mpx; 20000x20000 is refused.
MAX_PIXELS = 64_000_000


def describe(image: ImageTyping) -> str:
    """A short name for ``image`` to put in messages (its path when it has one)."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    name = getattr(image, "name", None) or getattr(image, "filename", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(image, np.ndarray):
        return f"<array {image.shape} {image.dtype}>"
    return f"<{type(image).__name__}>"


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise InputError(f"an image array must be uint8, got {arr.dtype}", describe(arr))
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Image.fromarray(np.ascontiguousarray(arr), "RGBA")
    raise InputError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}", describe(arr))


def _open(image: ImageTyping, max_pixels: int) -> Image.Image:
    name = describe(image)
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (str, os.PathLike)):
        p = check_file(image, "a picture", InputError)
        try:
            src: BinaryIO = open(p, "rb")
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror or e}", name) from None
    elif isinstance(image, (bytes, bytearray)):
        src = io.BytesIO(bytes(image))
    elif hasattr(image, "read"):
        src = image  # type: ignore[assignment]
    else:
        raise TypeError(f"Unknown image type - {image!r}.")
    try:
        with warnings.catch_warnings():
            # we do our own size check below, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(src)
    except Image.DecompressionBombError:
        raise InputError("picture is too large to decode safely (decompression bomb?)", name) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"not a readable picture ({type(e).__name__}: {e})", name) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError(f"picture has no pixels ({w}x{h})", name)
    if w * h > max_pixels:
        raise InputError(
            f"picture is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(decompression bomb?)", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError:
        raise InputError("picture is too large to decode safely (decompression bomb?)", name) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated picture ({e})", name) from None
    if isinstance(image, (str, os.PathLike)):
        src.close()
    return img


def load_image(image: ImageTyping, mode: str | None = "RGB", *, max_pixels: int = MAX_PIXELS,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open ``image`` (any :data:`ImageTyping`) as a fully decoded ``PIL.Image``.

    ``mode``: convert to this mode (``"RGB"`` by default, ``None`` keeps the file's mode).
    Transparent pictures are composed onto ``background``. Raises
    :class:`~animeid.errors.InputError` with the file's name for anything unreadable.
    """
    img = _open(image, max_pixels)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not make a good picture unreadable
        pass
    if mode is None or img.mode == mode:
        return img
    if mode == "RGB" and (img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert(mode)


def to_array(image: ImageTyping) -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` ``uint8`` RGB array."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    return np.asarray(load_image(image, "RGB"))


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def walk_files(root: str | os.PathLike, exts: frozenset[str] | None = None) -> list[Path]:
    """Files below folder ``root``, sorted, hidden files and folders skipped; folders reached through
    symbolic links are searched too (each real folder once, so a link loop ends). ``exts``: keep only
    these suffixes (lower case, with the dot)."""
    root = Path(root)
    out: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            f = Path(dirpath) / name
            if (exts is None or f.suffix.lower() in exts) and f.is_file():
                out.append(f)
    return sorted(out)


def iter_image_files(paths: Iterable[str | os.PathLike], exts: frozenset[str] = IMAGE_EXTS) -> Iterator[Path]:
    """Pictures named by ``paths``: files as given, folders searched recursively (sorted).

    A missing path raises :class:`InputError`; hidden files and folders are skipped.
    """
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError("no such file or folder", p)
        if p.is_file():
            yield p
            continue
        yield from walk_files(p, exts)
