"""Names: file names derived from other names, and character names.

Every file name animeid derives from something else (a crop from its picture's name, a frame from
its episode's, a preview, an export folder from a character) goes through :func:`safe_filename`
or :func:`safe_stem`, and every character name that enters animeid (a workspace folder,
``--character``, ``enroll``, ``forget``, the manifest, the API) through :func:`normalize_name` /
:func:`check_character_name`, so that the rules below hold everywhere:

* Names are Unicode in NFC (macOS writes folder names in NFD; both spellings are one name).
* A derived file name is at most :data:`MAX_NAME_BYTES` (255) UTF-8 bytes, the limit of ext4,
  APFS and NTFS, whatever the script: a stem too long is cut on a character boundary and gets a
  short hash of the whole stem (``~1a2b3c4d``), so two long names that differ only at the end stay
  two names.
* A derived file name is portable: characters Windows refuses (``<>:"/\\|?*``, control
  characters) become ``_``, it neither starts with a dot (hidden) nor ends with a dot or a space,
  and Windows' device names (``CON``, ``AUX``, ``COM1``, ...) get a ``_``.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["MAX_NAME_BYTES", "MAX_CHARACTER_BYTES", "WINDOWS_RESERVED", "normalize_name", "fit_bytes", "safe_stem", "safe_filename",
           "check_character_name"]

#: Longest file name (one path component) in UTF-8 bytes on ext4, APFS, NTFS (255 UTF-16 units), ...
MAX_NAME_BYTES = 255

WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                              *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10)),
                              *(f"COM{c}" for c in "¹²³"), *(f"LPT{c}" for c in "¹²³")})
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f\ud800-\udfff]')   # surrogates: undecodable bytes
_HASH_LEN = 8


def normalize_name(name: str) -> str:
    """``name`` in Unicode NFC with surrounding white space removed: the one spelling of a name."""
    return unicodedata.normalize("NFC", str(name)).strip()


def fit_bytes(s: str, max_bytes: int) -> str:
    """``s`` cut to at most ``max_bytes`` UTF-8 bytes, on a character boundary."""
    b = s.encode("utf-8")
    if len(b) <= max_bytes:
        return s
    return b[:max(0, max_bytes)].decode("utf-8", "ignore")


def _short_hash(s: str) -> str:
    return hashlib.sha1(s.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def _portable(s: str, fallback: str) -> str:
    s = _UNSAFE.sub("_", normalize_name(s))
    s = s.lstrip(". ").rstrip(". ")
    if not s:
        s = fallback
    if s.split(".")[0].rstrip(" ").upper() in WINDOWS_RESERVED:
        s += "_"
    return s


def safe_stem(stem: str, max_bytes: int = MAX_NAME_BYTES, *, fallback: str = "file") -> str:
    """``stem`` as a portable stem of at most ``max_bytes`` UTF-8 bytes (see the module's rules).

    Cut stems end in ``~`` + 8 hex digits of a hash of the whole original ``stem``.
    """
    if max_bytes < _HASH_LEN + 2:
        raise ValueError(f"max_bytes must be at least {_HASH_LEN + 2}, got {max_bytes}")
    s = _portable(stem, fallback)
    if len(s.encode("utf-8")) <= max_bytes:
        return s
    cut = fit_bytes(s, max_bytes - _HASH_LEN - 1).rstrip(". ")
    return f"{cut}~{_short_hash(normalize_name(stem))}"


def safe_filename(stem: str, suffix: str = "", *, max_bytes: int = MAX_NAME_BYTES, fallback: str = "file") -> str:
    """A portable file name ``<stem><suffix>`` of at most ``max_bytes`` UTF-8 bytes.

    ``suffix`` (``".png"``, ``"_3.png"``) is kept whole; ``stem`` is made portable and, when the
    name would be too long, cut on a character boundary with a hash of the whole stem so that
    names stay unique: ``safe_filename("長い" * 100, "_0.png")`` is 255 bytes or fewer.
    """
    room = max_bytes - len(suffix.encode("utf-8"))
    if room < _HASH_LEN + 2:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name within {max_bytes} bytes")
    return safe_stem(stem, room, fallback=fallback) + suffix


#: The longest character name in UTF-8 bytes: a workspace's folder for the character bears it.
MAX_CHARACTER_BYTES = 240


def check_character_name(name: str, *, reserved: frozenset[str] | set[str] = frozenset(),
                         error: type[Exception] = ValueError, max_chars: int = 200) -> str:
    """A character name, normalised (:func:`normalize_name`), or ``error(message)`` when it cannot be one.

    Refused: empty names, ``.`` and ``..``, names starting with a dot, holding ``/``, ``\\`` or a
    control character, longer than ``max_chars`` or :data:`MAX_CHARACTER_BYTES` UTF-8 bytes, and ``reserved``
    ones (compared case-insensitively).
    Anything else is a name, in any script, also ``x:y`` or ``CON``: the exact name is what models and
    manifests keep; file and folder names derived from it go through :func:`safe_filename`.
    """
    clean = normalize_name(name)
    if not clean or clean in (".", "..") or clean.startswith(".") or "/" in clean or "\\" in clean \
            or any(unicodedata.category(c) in ("Cc", "Cs") for c in clean):
        raise error(f"invalid character name {name!r}")
    if len(clean) > max_chars:
        raise error(f"character name is longer than {max_chars} characters")
    if len(clean.encode("utf-8")) > MAX_CHARACTER_BYTES:     # a workspace folder is named after it (255 bytes at most)
        raise error(f"character name is {len(clean.encode('utf-8'))} bytes in UTF-8; at most {MAX_CHARACTER_BYTES} "
                    "(a workspace folder is named after it)")
    if clean.casefold() in {r.casefold() for r in reserved}:
        raise error(f"character name {clean!r} is reserved")
    return clean
