"""Shared drawing machinery: fonts that show character names in any script, and PNG writing.

Character names are often Japanese or Chinese, which DejaVu Sans (matplotlib's font) and PIL's
default font lack: without a CJK font they come out as empty boxes.

* :func:`cjk_font_file` -- an installed CJK font file (``fonts-ipafont-gothic`` on Debian, which
  setup.sh installs), or ``None``.
* :func:`plot_fonts` -- an ``rc_context`` for matplotlib plotting functions: DejaVu Sans first,
  then the installed CJK fonts (matplotlib falls back glyph by glyph). Nothing is changed globally.
* :func:`save_png` -- write a matplotlib figure as a PNG, atomically; logs one warning when some
  characters had no glyph in any font.
* :func:`pil_font` -- a CJK font for PIL text that needs one, else ``None`` (the caller's own font).
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

from ._util import atomic_write, log

__all__ = ["cjk_font_file", "plot_fonts", "save_png", "needs_cjk", "pil_font"]

#: Font families tried for CJK text in plots, in this order.
CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans JP", "Source Han Sans", "IPAexGothic",
                "IPAGothic", "IPAPGothic", "WenQuanYi Zen Hei", "Droid Sans Fallback", "Unifont")

#: Known places of CJK font files (Debian/Ubuntu packages first), tried before asking fontconfig.
CJK_FILES = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",                 # fonts-ipafont-gothic
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",             # fonts-ipaexfont-gothic
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",            # fonts-noto-cjk
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",                      # fonts-wqy-zenhei
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",         # fonts-droid-fallback
)


@functools.lru_cache(maxsize=1)
def cjk_font_file() -> str | None:
    """Path of an installed font with Japanese (and most Chinese) glyphs, or ``None``."""
    for p in CJK_FILES:
        if os.path.isfile(p):
            return p
    fc_list, fc_match = shutil.which("fc-list"), shutil.which("fc-match")
    if not fc_list:
        return None
    try:
        ja = [f for f in _run([fc_list, "-f", "%{file}\n", ":lang=ja"]).splitlines() if os.path.isfile(f)]
        best = _run([fc_match, "-f", "%{file}", "sans-serif:lang=ja"]).strip() if fc_match else ""
    except (OSError, subprocess.SubprocessError):
        return None
    if best in ja:
        return best
    return sorted(ja)[0] if ja else None


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout


@functools.lru_cache(maxsize=1)
def _families() -> tuple[str, ...]:
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in CJK_FAMILIES if f in have]
    path = None if cjk else cjk_font_file()
    if path:
        # matplotlib's font cache may predate the font's installation: register the file itself
        try:
            font_manager.fontManager.addfont(path)
            cjk = [font_manager.FontProperties(fname=path).get_name()]
        except Exception as e:  # a font matplotlib cannot read: names may show as boxes
            log.debug("matplotlib cannot use %s: %s", path, e)
    return ("DejaVu Sans", *cjk)


def plot_fonts() -> contextlib.AbstractContextManager:
    """``matplotlib.rc_context`` with the font fallback list; make and save figures inside it."""
    import matplotlib

    return matplotlib.rc_context({"font.family": list(_families())})


_GLYPH_MISSING = r"(Glyph .* missing from|.*missing from font)"


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Write the matplotlib ``fig`` to ``path`` as a PNG (100 dpi, tight box) atomically; return it."""
    path = Path(path)
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=_GLYPH_MISSING)
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": "animeid"})
    missing = [w for w in caught if re.match(_GLYPH_MISSING, str(w.message))]
    for w in caught:
        if w not in missing:    # other warnings go on as usual
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        log.warning("%s: some characters have no glyph in the installed fonts and show as boxes "
                    "(install a CJK font, e.g. Debian's fonts-ipafont-gothic)", path)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def needs_cjk(text: str) -> bool:
    """Whether ``text`` has CJK characters (kana, kanji, hangul, full-width forms, ...)."""
    return any(ord(c) >= 0x2E80 for c in text)


@functools.lru_cache(maxsize=32)
def _cjk_pil_font(size: int) -> Any:
    from PIL import ImageFont

    path = cjk_font_file()
    if path is None:
        return None
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return None


def label_font(size: int) -> Any:
    """A PIL font of ``size`` px for labels on pictures (boxes, sheets): DejaVu Sans or another common
    TrueType font when one is installed, else Pillow's own (scalable with FreeType, else its bitmap)."""
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "NotoSansCJK-Regular.ttc", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # an older Pillow (no size) or one without FreeType: the small bitmap font
        return ImageFont.load_default()


def pil_font(size: int, text: str) -> Any:
    """A PIL FreeType font of ``size`` px able to draw ``text`` when it needs a CJK font and one is
    installed; ``None`` otherwise (use the usual font)."""
    return _cjk_pil_font(size) if needs_cjk(text) else None
