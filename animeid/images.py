"""One loader for every picture animeid reads.

Every function in animeid that takes a picture accepts :data:`ImageTyping` and goes through
:func:`load_image`, so that the same checks apply everywhere:

* a path (``str`` / ``os.PathLike``), raw ``bytes``, a binary file object, a ``PIL.Image.Image``,
  or a ``numpy.ndarray`` holding an image (``(H, W, 3)`` RGB or ``(H, W)`` grey, ``uint8``).
  In animeid an ndarray is always a picture, never a feature vector;
* pictures larger than :func:`max_pixels` (64 Mpx, or ``ANIMEID_MAX_PIXELS``) are refused *before*
  decoding (decompression bombs);
* truncated or corrupt files raise :class:`~animeid.errors.InputError` naming the file;
* EXIF orientation is applied; every mode Pillow opens becomes 8-bit RGB the right way: 16- and
  32-bit grey (``I;16``, ``I``) and float (``F``) are scaled, not clipped to white; transparency
  (``RGBA``, ``LA``, ``P`` with a transparent colour) is composed onto :data:`BACKGROUND`; CMYK,
  YCbCr, LAB, HSV and 1-bit pictures are converted;
* animated pictures (GIF, WebP, APNG, ...): :func:`load_image` reads one frame (``frame=``, the
  first by default), :func:`iter_frames` and :func:`frame_count` read them all.

Which files are pictures is one list, :data:`IMAGE_EXTS`: every ending Pillow opens here
(``.jfif``, ``.avif`` when this Pillow has AVIF, ``.apng``, ``.qoi``, ...), less video endings.
"""
from __future__ import annotations

import io
import logging
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
    "ANIMATION_FRAMES",
    "VIDEO_EXTS",
    "MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "BACKGROUND",
    "max_pixels",
    "load_image",
    "iter_frames",
    "frame_count",
    "frame_picks",
    "to_rgb",
    "to_array",
    "describe",
    "iter_image_files",
    "walk_files",
    "is_image_file",
]

ImageTyping = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, np.ndarray]


def _picture_exts() -> frozenset[str]:
    """Endings of the formats this Pillow can open, less formats it cannot decode alone (header-only
    stubs, MPEG (.mpg: a video), EPS (needs Ghostscript), WMF (Windows only))."""
    Image.init()
    stubs = {"BUFR", "GRIB", "HDF5", "MPEG", "EPS", "WMF", "PDF"}
    return frozenset(e.lower() for e, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in stubs)


#: File name endings treated as pictures, by every command that scans folders (one list). Files
#: with other endings are skipped (and counted where a command summarises); a file named directly
#: is always tried.
IMAGE_EXTS = _picture_exts()

#: Largest picture animeid decodes (width x height) by default. 8K UHD is 33 Mpx; 20000x20000 is
#: refused. Raise it with the environment variable ``ANIMEID_MAX_PIXELS`` (or ``animeid
#: --max-pixels N``, which sets it for the command and its worker processes).
MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "ANIMEID_MAX_PIXELS"

#: What transparent pixels are composed onto: a neutral mid grey (line art stays visible, as do
#: white and black hair).
BACKGROUND = (128, 128, 128)


def max_pixels() -> int:
    """The picture size limit in force: ``ANIMEID_MAX_PIXELS`` when set (a positive whole number,
    ``_`` and ``,`` allowed as separators), else :data:`MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_PIXELS
    try:
        n = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels")
    return n


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


def _open(image: ImageTyping, max_pixels: int, frame: int = 0, max_side: int | None = None) -> Image.Image:
    name = describe(image)
    if isinstance(image, Image.Image):
        if frame:
            image.seek(frame)
            image.load()
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
            if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
                Image.MAX_IMAGE_PIXELS = max_pixels    # Pillow's own guard follows a raised limit
            img = Image.open(src)
    except Image.DecompressionBombError:
        raise InputError("picture is too large to decode safely (decompression bomb?)", name) from None
    except Image.UnidentifiedImageError:
        raise InputError("not a readable picture (no picture format animeid reads recognises its contents)",
                         name) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"not a readable picture ({e or 'damaged or unsupported'})", name) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError(f"picture has no pixels ({w}x{h})", name)
    if w * h > max_pixels:
        raise InputError(
            f"picture is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            f"(decompression bomb?); to read it, raise the limit: animeid --max-pixels {w * h} ... "
            f"or {MAX_PIXELS_ENV}={w * h}", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if frame:
                n = getattr(img, "n_frames", 1)
                if frame >= n:
                    raise InputError(f"has {n} frame(s), no frame {frame}", name)
                img.seek(frame)
            if max_side and max(w, h) > max_side and img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
            img.load()
    except Image.DecompressionBombError:
        raise InputError("picture is too large to decode safely (decompression bomb?)", name) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:   # IndexError: Pillow on a cut GIF
        raise InputError(f"corrupt or truncated picture ({e})", name) from None
    if isinstance(image, (str, os.PathLike)):
        try:
            animated = getattr(img, "n_frames", 1) > 1
        except (OSError, SyntaxError, ValueError, EOFError, IndexError):   # an animation cut short:
            animated = True                                                 # its decoded frame stands
        if animated:
            img = img.copy()            # an animated picture keeps reading its file: detach it
        src.close()
    if max_side and max(img.size) > max_side:
        f = max(img.size) // max_side   # whole-number reduction: fast, no resampling blur
        if f >= 2:
            img = img.reduce(f)
    return img


def load_image(image: ImageTyping, mode: str | None = "RGB", *, max_pixels: int | None = None,
               background: tuple[int, int, int] = BACKGROUND, frame: int = 0,
               max_side: int | None = None) -> Image.Image:
    """Open ``image`` (any :data:`ImageTyping`) as a fully decoded ``PIL.Image``.

    ``mode``: ``"RGB"`` (default) gives 8-bit RGB from any mode (see the module docstring),
    ``None`` keeps the file's mode, anything else is Pillow's ``convert``. Transparent pictures are
    composed onto ``background``. ``max_pixels``: the size limit (default :func:`max_pixels`).
    ``frame``: which frame of an animated picture. ``max_side``: a picture whose longer side is
    more than twice this is decoded reduced by a whole factor (JPEG: at decode time, with
    ``draft``), its longer side staying at least ``max_side``: for uses that need no more detail.
    Raises :class:`~animeid.errors.InputError` with the file's name for anything unreadable.
    """
    img = _open(image, max_pixels if max_pixels is not None else globals()["max_pixels"](), frame, max_side)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not make a good picture unreadable
        pass
    if mode is None or img.mode == mode:
        return img
    if mode == "RGB":
        return to_rgb(img, background)
    return img.convert(mode)


def _scale_to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """Grey values of a 16/32-bit integer or float picture as uint8: 16-bit (and ``I`` pictures whose
    values fit in 16 bits, as 16-bit PNG and TIFF open) by their top byte, floats in [0, 1] times 255,
    anything else stretched from its minimum to its maximum."""
    a = np.asarray(arr)
    if mode.startswith("I;16"):
        return (a.astype(np.uint32) >> 8).astype(np.uint8)
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    if not finite.size:
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if mode == "F" and lo >= 0 and hi <= 1:
        out = a * 255
    elif lo >= 0 and hi <= 255:
        out = a
    elif mode == "I" and lo >= 0 and hi <= 65535:
        out = a / 257
    else:
        out = (a - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.nan_to_num(out), 0, 255).round().astype(np.uint8)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """``img`` in any Pillow mode as 8-bit RGB: high bit depths scaled, transparency composed onto
    ``background``."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_scale_to_8bit(np.asarray(img), mode), "L").convert("RGB")
    if mode in ("RGBa", "La"):                         # premultiplied alpha
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info) \
            or (mode in ("L", "RGB", "I") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, tuple(background))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode == "CMYK" and img.info.get("icc_profile"):
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:                              # a broken profile: the plain conversion below
            pass
    return img.convert("RGB")


def frame_count(image: ImageTyping) -> int:
    """How many frames a picture holds (1 for a still picture); the pixels are not decoded."""
    if isinstance(image, Image.Image):
        return int(getattr(image, "n_frames", 1))
    if isinstance(image, np.ndarray):
        return 1
    src = check_file(image, "a picture", InputError) if isinstance(image, (str, os.PathLike)) else image
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(bytes(src))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                return int(getattr(im, "n_frames", 1))
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.DecompressionBombError):
        return 1                                       # load_image reports what is wrong with it
    finally:
        if hasattr(src, "seek"):
            src.seek(0)


#: File name endings treated as videos when a folder is scanned (:mod:`animeid.video` reads them).
VIDEO_EXTS = frozenset({
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".flv", ".f4v", ".wmv", ".asf", ".ts",
    ".m2ts", ".mts", ".mpg", ".mpeg", ".vob", ".ogv", ".3gp", ".3g2", ".rm", ".rmvb", ".divx",
})

#: Frames of an animated picture (GIF, WebP, APNG, ...) searched for faces, evenly spaced (collect,
#: import, detect, predict).
ANIMATION_FRAMES = 16


def frame_picks(n: int, max_frames: int | None) -> list[int]:
    """Which of ``n`` frames to read when at most ``max_frames`` are wanted: evenly spaced, the first
    and the last included (all of them when ``max_frames`` is None or at least ``n``)."""
    if max_frames is None or n <= max_frames:
        return list(range(n))
    if max_frames <= 1:
        return [0]
    return sorted({round(i * (n - 1) / (max_frames - 1)) for i in range(max_frames)})


class _Named(io.BytesIO):
    """Bytes with the name of the file they came from, for messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


def iter_frames(image: ImageTyping, *, max_frames: int | None = None, max_pixels: int | None = None
                ) -> Iterator[tuple[int, float, Image.Image]]:
    """``(index, time in seconds, RGB picture)`` for the frames of an animated picture (GIF, WebP,
    APNG, multi-page TIFF, ...); one frame for a still picture. ``max_frames``: at most this many,
    evenly spaced over the animation (first and last included). Times add up each frame's
    ``duration`` (100 ms where the file gives none)."""
    limit = max_pixels if max_pixels is not None else globals()["max_pixels"]()
    if isinstance(image, (str, os.PathLike)):
        p = check_file(image, "a picture", InputError)
        try:
            data: ImageTyping = _Named(p.read_bytes(), os.fspath(image))
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror or e}", image) from None
    elif not isinstance(image, Image.Image) and hasattr(image, "read"):
        data = _Named(image.read(), describe(image))
    else:
        data = image
    img = _open(data, limit)            # frame 0, decoded; later frames are read by seeking on
    try:
        n = int(getattr(img, "n_frames", 1))    # Pillow reads the frames' headers: a cut file fails here
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        raise InputError(f"corrupt or truncated animation ({e})", describe(image)) from None
    want = set(frame_picks(n, max_frames))
    t = 0.0
    for i in range(n):
        if i:
            try:
                img.seek(i)
                img.load()
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise InputError(f"corrupt or truncated animation at frame {i} ({e})", describe(image)) from None
        if i in want:
            yield i, t, to_rgb(img)
        d = img.info.get("duration")
        t += (float(d) if isinstance(d, (int, float)) and d > 0 else 100.0) / 1000


def to_array(image: ImageTyping) -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` ``uint8`` RGB array."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    return np.asarray(load_image(image, "RGB"))


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def path_within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or lies below it (both real, absolute paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk_files(root: str | os.PathLike, exts: frozenset[str] | None = None,
               problems: list[tuple[Path, str]] | None = None,
               within: str | os.PathLike | None = None) -> list[Path]:
    """Files below folder ``root``, sorted, hidden files and folders skipped.

    Symbolic links are followed: a linked file is read where it points, a linked folder is searched
    (each real folder once). A link to a folder that holds ``root`` itself (a link loop such as
    ``char/all -> ..``) is not followed: it would pull the folders beside ``root`` in. Such links and
    broken links (their target is missing) are left out and, when ``problems`` is given, appended to it
    as ``(path, reason)`` so the caller can say so. ``within`` (a dataset's folder, ``root`` being one
    character's): links to files or folders elsewhere in it (another character's) are left out and
    named too. ``exts``: keep only these suffixes (lower case, with the dot)."""
    root = Path(root)
    out: list[Path] = []
    top = os.path.realpath(root)
    fence = os.path.realpath(within) if within is not None else None
    seen: set[str] = set()

    def elsewhere(target: str) -> bool:          # inside the dataset, outside this character's folder
        return fence is not None and path_within(target, fence) and not path_within(target, top)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            link = Path(dirpath) / d
            target = os.path.realpath(link)
            if link.is_symlink() and path_within(top, target):
                if problems is not None:
                    problems.append((link, f"a link to {target}, a folder that holds {root}: not followed"))
                continue
            if link.is_symlink() and elsewhere(target):
                if problems is not None:
                    problems.append((link, f"a link to {target}, another character's folder: not followed"))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            f = Path(dirpath) / name
            if exts is not None and f.suffix.lower() not in exts:
                continue
            if f.is_file() and f.is_symlink() and elsewhere(os.path.realpath(f)):
                if problems is not None:
                    problems.append((f, f"a link to {os.path.realpath(f)}, another character's picture: left out"))
            elif f.is_file():
                out.append(f)
            elif f.is_symlink() and not f.exists() and problems is not None:
                problems.append((f, f"a broken link (its target {os.readlink(f)} is missing)"))
    return sorted(out)


def iter_image_files(paths: Iterable[str | os.PathLike], exts: frozenset[str] = IMAGE_EXTS,
                     problems: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """Pictures named by ``paths``: files as given, folders searched recursively (sorted).

    A missing path raises :class:`InputError`; hidden files and folders are skipped. Files left out
    inside folders (broken links, link loops: see :func:`walk_files`) are appended to ``problems``
    when given, else logged as warnings naming each.
    """
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError("a broken link (its target is missing)" if p.is_symlink() else "no such file or folder", p)
        if p.is_file():
            yield p
            continue
        left: list[tuple[Path, str]] = [] if problems is None else problems
        yield from walk_files(p, exts, left)
        if problems is None:
            for f, why in left:
                logging.getLogger("animeid").warning("%s: skipped, %s", f, why)
