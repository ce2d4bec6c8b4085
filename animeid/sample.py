"""A built-in, procedurally generated sample: simple anime-style characters drawn with PIL.

``animeid demo`` needs pictures to work on without downloading anything and without shipping
third-party art. This module draws its own: a handful of made-up characters, each defined by
data (:class:`CharacterSpec`: hair, eye and skin colours, hair style, fringe, accessory), drawn
in a flat anime style that the AnimeFace 2009 detector finds (large outlined eyes with pupils
and highlights, a fringe over the forehead, a small nose and mouth, a pointed chin).

As in real anime, a character is recognised mainly by hair and eye colour; every picture varies
pose (position, roll, slight yaw, scale), expression (eye openness, mouth), background and lighting.

Everything is deterministic for a given ``numpy.random.Generator`` seed.

* :data:`CHARACTERS` - the built-in characters;
* :func:`render_face` / :func:`render_face_with_box` - one picture of one character;
* :func:`render_scene` - a 640x360 frame with 0-3 characters and their true face boxes;
* :func:`make_sample` - a whole sample folder: illustrations per character, a short video
  (``episode.mp4``), ``truth.json`` and a ``README.txt``.

Face boxes are ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive, as in
:class:`animeid.detect.Face`; the box is the square the AnimeFace detector puts around such a
face (from the fringe to the chin), calibrated so that its boxes match these within a few percent.
"""
from __future__ import annotations

import colorsys
import math
import os
import textwrap
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ._util import atomic_write_json

__all__ = [
    "CharacterSpec",
    "CHARACTERS",
    "make_characters",
    "render_face",
    "render_face_with_box",
    "render_scene",
    "make_sample",
    "faces_at",
    "Box",
]

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

HAIR_STYLES = ("short", "bob", "long", "twintails", "ponytail")
FRINGES = ("straight", "spiky", "side", "parted")
ACCESSORIES = (None, "ribbon", "hairclip", "headband", "ahoge")


@dataclass(frozen=True)
class CharacterSpec:
    """One made-up character. Identity is carried mainly by ``hair`` and ``eyes``."""

    name: str
    hair: RGB
    eyes: RGB
    skin: RGB = (255, 228, 212)
    hair_style: str = "short"  # one of HAIR_STYLES
    fringe: str = "spiky"  # one of FRINGES
    accessory: str | None = None  # one of ACCESSORIES
    accent: RGB = (220, 40, 60)  # accessory colour
    clothes: RGB = (40, 50, 90)

    def __post_init__(self) -> None:
        if self.hair_style not in HAIR_STYLES:
            raise ValueError(f"hair_style must be one of {HAIR_STYLES}, got {self.hair_style!r}")
        if self.fringe not in FRINGES:
            raise ValueError(f"fringe must be one of {FRINGES}, got {self.fringe!r}")
        if self.accessory not in ACCESSORIES:
            raise ValueError(f"accessory must be one of {ACCESSORIES}, got {self.accessory!r}")


#: The built-in characters (fictional; names are folder-safe).
CHARACTERS: tuple[CharacterSpec, ...] = (
    CharacterSpec("akari", hair=(246, 150, 190), eyes=(200, 40, 90), hair_style="twintails", fringe="spiky",
                  accessory="ribbon", accent=(240, 240, 250), clothes=(60, 60, 120)),
    CharacterSpec("sora", hair=(70, 120, 220), eyes=(40, 170, 230), hair_style="short", fringe="side",
                  accessory="hairclip", accent=(250, 210, 60), clothes=(230, 230, 235)),
    CharacterSpec("kin", hair=(250, 214, 100), eyes=(60, 150, 70), hair_style="long", fringe="parted",
                  accessory=None, clothes=(150, 30, 40)),
    CharacterSpec("kuro", hair=(38, 34, 46), eyes=(150, 40, 40), skin=(250, 232, 222), hair_style="long",
                  fringe="straight", accessory="headband", accent=(200, 200, 210), clothes=(25, 25, 35)),
    CharacterSpec("hinata", hair=(235, 110, 40), eyes=(230, 160, 30), skin=(250, 215, 185), hair_style="ponytail",
                  fringe="spiky", accessory="ahoge", clothes=(240, 240, 240)),
    CharacterSpec("yuki", hair=(225, 230, 240), eyes=(120, 80, 200), hair_style="bob", fringe="straight",
                  accessory="ribbon", accent=(90, 60, 170), clothes=(70, 110, 160)),
    CharacterSpec("midori", hair=(70, 170, 110), eyes=(220, 120, 40), hair_style="bob", fringe="parted",
                  accessory="hairclip", accent=(240, 90, 120), clothes=(200, 170, 110)),
    CharacterSpec("ren", hair=(140, 80, 180), eyes=(40, 190, 170), hair_style="short", fringe="spiky",
                  accessory=None, clothes=(50, 40, 40)),
)


def make_characters(n: int, seed: int = 0) -> tuple[CharacterSpec, ...]:
    """``n`` characters: the built-in ones first, then made-up ones (``extra01``, ...) whose hair
    and eye colours are picked, one by one, as far as possible from those already taken."""
    if n < 1:
        raise ValueError("n must be at least 1")
    out = list(CHARACTERS[:n])
    if len(out) == n:
        return tuple(out)
    rng = np.random.default_rng(seed + 7919)
    # candidates: hair in HSV over the plausible range, eyes saturated
    m = 512
    hair_c = [_hsv(float(h), float(sv[0]), float(sv[1])) for h, sv in
              zip(rng.random(m), rng.uniform((0.0, 0.25), (0.9, 1.0), size=(m, 2)))]
    eye_c = [_hsv(float(h), float(sat), float(v)) for h, sat, v in
             zip(rng.random(m), rng.uniform(0.55, 0.95, m), rng.uniform(0.55, 0.95, m))]
    cand = np.array([h + e for h, e in zip(hair_c, eye_c)], np.float32)
    weight = np.array([1, 1, 1, 0.6, 0.6, 0.6], np.float32)
    taken = np.array([c.hair + c.eyes for c in out], np.float32)
    dist = np.sqrt((((cand[:, None] - taken[None]) * weight) ** 2).sum(-1)).min(1)
    k = 0
    while len(out) < n:
        i = int(dist.argmax())
        hair, eyes = tuple(int(v) for v in cand[i, :3]), tuple(int(v) for v in cand[i, 3:])
        out.append(CharacterSpec(
            f"extra{k + 1:02d}", hair=hair, eyes=eyes,  # type: ignore[arg-type]
            hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
            fringe=FRINGES[int(rng.integers(len(FRINGES)))],
            accessory=ACCESSORIES[int(rng.integers(len(ACCESSORIES)))],
            accent=_hsv(float(rng.random()), 0.7, 0.9), clothes=_hsv(float(rng.random()), 0.5, 0.5)))
        dist = np.minimum(dist, np.sqrt((((cand - cand[i]) * weight) ** 2).sum(-1)))
        k += 1
    return tuple(out)


# --------------------------------------------------------------------------------------------
# colour helpers

def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5))


def _mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _shade(c: Sequence[int], f: float) -> RGB:
    """f < 0 darkens towards black, f > 0 lightens towards white."""
    return _mix(c, (0, 0, 0), -f) if f < 0 else _mix(c, (255, 255, 255), f)


def _line_color(hair: Sequence[int]) -> RGB:
    """Line-art colour: very dark, a little of the hair hue."""
    return _mix(hair, (20, 12, 16), 0.85)


# --------------------------------------------------------------------------------------------
# drawing in face units

@dataclass
class _Pose:
    cx: float  # face centre on the (supersampled) canvas, px
    cy: float
    fw: float  # face width, px (supersampled)
    roll: float  # radians, positive = clockwise on screen
    yaw: float  # -1..1, shifts features sideways
    flip: bool = False  # mirror left/right (side fringe, ponytail, hair clip change sides)


class _Pen:
    """Maps face units (face width 1, origin at the face centre, y down) to canvas pixels."""

    def __init__(self, draw: ImageDraw.ImageDraw, pose: _Pose):
        self.d = draw
        self.p = pose
        self.c = math.cos(pose.roll)
        self.s = math.sin(pose.roll)

    def pt(self, x: float, y: float) -> tuple[float, float]:
        p = self.p
        x, y = (-x if p.flip else x) * p.fw, y * p.fw
        return (p.cx + x * self.c - y * self.s, p.cy + x * self.s + y * self.c)

    def pts(self, seq) -> list[tuple[float, float]]:
        return [self.pt(x, y) for x, y in seq]

    def w(self, units: float) -> int:
        return max(1, int(round(units * self.p.fw)))

    def poly(self, seq, fill=None, outline=None, width: float = 0.0) -> None:
        q = self.pts(seq)
        if fill is not None:
            self.d.polygon(q, fill=fill)
        if outline is not None and width > 0:
            self.d.line(q + [q[0]], fill=outline, width=self.w(width), joint="curve")

    def line(self, seq, fill, width: float) -> None:
        self.d.line(self.pts(seq), fill=fill, width=self.w(width), joint="curve")

    def ellipse(self, x, y, rx, ry, fill=None, outline=None, width=0.0, n: int = 40, a0=0.0, a1=2 * math.pi):
        self.poly(_ellipse_pts(x, y, rx, ry, n, a0, a1), fill=fill, outline=outline, width=width)


def _ellipse_pts(x, y, rx, ry, n=40, a0=0.0, a1=2 * math.pi):
    return [(x + rx * math.cos(t), y + ry * math.sin(t)) for t in np.linspace(a0, a1, n, endpoint=a1 - a0 < 2 * math.pi - 1e-9)]


def _bezier(p0, p1, p2, n=12):
    out = []
    for t in np.linspace(0.0, 1.0, n):
        a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
        out.append((a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]))
    return out


@dataclass
class _Expr:
    eye_open: float  # 0.15 (nearly shut) .. 1.0
    gaze: float  # -1..1 sideways
    mouth: str  # smile / open / flat / o / grin
    blush: float  # 0..1
    brows: float  # -1 (angry) .. 1 (raised)


def _random_expr(rng: np.random.Generator) -> _Expr:
    r = rng.random()
    eye_open = 1.0 - 0.35 * rng.random() if r > 0.06 else 0.4
    return _Expr(
        eye_open=float(eye_open),
        gaze=float(rng.uniform(-0.8, 0.8)),
        mouth=str(rng.choice(["smile", "open", "flat", "o", "grin"], p=[0.35, 0.25, 0.2, 0.1, 0.1])),
        blush=float(rng.random() if rng.random() < 0.6 else 0.0),
        brows=float(rng.uniform(-0.8, 1.0)),
    )


def _draw_character(draw: ImageDraw.ImageDraw, spec: CharacterSpec, pose: _Pose, ex: _Expr,
                    rng: np.random.Generator) -> None:
    pen = _Pen(draw, pose)
    hair, skin = spec.hair, spec.skin
    ink = _line_color(hair)
    hair_dark = _shade(hair, -0.28)
    hair_light = _shade(hair, 0.35)
    skin_shadow = _mix(skin, (215, 140, 140), 0.35)
    lw = 0.014  # outline width, face units
    yaw = pose.yaw
    fx = 0.07 * yaw  # sideways shift of the features

    # ---- back hair -------------------------------------------------------------------------
    style = spec.hair_style
    if style == "long":
        back = [(-0.66, -0.25), (-0.74, 0.6), (-0.78, 1.45), (-0.5, 1.38), (-0.25, 1.5), (0.0, 1.4),
                (0.25, 1.5), (0.5, 1.38), (0.78, 1.45), (0.74, 0.6), (0.66, -0.25)]
        pen.poly(back, fill=_shade(hair, -0.15), outline=ink, width=lw)
    elif style == "bob":
        back = [(-0.68, -0.25), (-0.7, 0.42), (-0.55, 0.5), (0.0, 0.52), (0.55, 0.5), (0.7, 0.42), (0.68, -0.25)]
        pen.poly(back, fill=hair_dark, outline=ink, width=lw)
    elif style == "twintails":
        for s in (-1, 1):
            tail = [(s * 0.55, -0.45), (s * 0.95, -0.35), (s * 1.12, 0.2), (s * 1.05, 0.85), (s * 0.92, 1.25),
                    (s * 0.86, 0.8), (s * 0.74, 0.2), (s * 0.6, -0.15)]
            pen.poly(tail, fill=hair, outline=ink, width=lw)
            pen.line(_bezier((s * 0.8, -0.2), (s * 1.0, 0.3), (s * 0.93, 0.95)), fill=hair_dark, width=0.012)
    elif style == "ponytail":
        tail = [(0.35, -0.6), (0.8, -0.7), (1.05, -0.3), (1.02, 0.3), (0.9, 0.8), (0.8, 0.3), (0.65, -0.2)]
        pen.poly(tail, fill=hair, outline=ink, width=lw)
        pen.line(_bezier((0.78, -0.4), (0.98, 0.0), (0.88, 0.6)), fill=hair_dark, width=0.012)
    # skull: top of the head, behind the face
    pen.ellipse(0.0, -0.17, 0.66, 0.66, fill=hair_dark, outline=ink, width=lw)

    # ---- neck and clothes --------------------------------------------------------------------
    pen.poly([(-0.16, 0.3), (-0.16, 0.9), (0.16, 0.9), (0.16, 0.3)], fill=skin_shadow)
    # the torso turns less than the head (its own pen, pivoting at the bottom of the neck), and runs
    # far down so that characters never float in a scene
    nb = pen.pt(0.0, 0.8)
    body_pen = _Pen(draw, _Pose(cx=nb[0], cy=nb[1], fw=pose.fw, roll=pose.roll * 0.25, yaw=yaw,
                                     flip=pose.flip))
    body = [(-1.0, 12.0), (-0.96, 2.2), (-0.9, 1.1), (-0.55, 0.82), (-0.15, 0.78), (0.0, 0.95), (0.15, 0.78),
            (0.55, 0.82), (0.9, 1.1), (0.96, 2.2), (1.0, 12.0)]
    # usually the character's own outfit, sometimes another one
    clothes = spec.clothes if rng.random() < 0.7 else _hsv(float(rng.random()), float(rng.uniform(0, 0.7)),
                                                            float(rng.uniform(0.2, 0.95)))
    body_pen.poly([(x, y - 0.8) for x, y in body], fill=clothes, outline=ink, width=lw)
    body_pen.line([(-0.15, -0.02), (0.0, 0.15), (0.15, -0.02)], fill=_shade(clothes, 0.5), width=0.03)

    # ---- face ---------------------------------------------------------------------------------
    chin = (0.0 + 0.06 * yaw, 0.56)
    face = _ellipse_pts(0.0, -0.05, 0.5, 0.5, 24, math.pi, 2 * math.pi)  # top half (left -> right)
    right = [(0.5, 0.02), (0.47, 0.18)] + _bezier((0.44, 0.28), (0.3 + 0.04 * yaw, 0.5), chin, 8)
    left = _bezier(chin, (-0.3 + 0.04 * yaw, 0.5), (-0.44, 0.28), 8) + [(-0.47, 0.18), (-0.5, 0.02)]
    face_pts = face + right + left[1:]
    # ears
    for s in (-1, 1):
        pen.ellipse(s * 0.5, 0.08, 0.07, 0.11, fill=skin, outline=ink, width=lw * 0.8)
    pen.poly(face_pts, fill=skin, outline=ink, width=lw * 1.1)

    # blush
    if ex.blush > 0.05:
        a = int(60 + 80 * ex.blush)
        for s in (-1, 1):
            pen.ellipse(fx + s * 0.27, 0.27, 0.09, 0.04, fill=(240, 110, 130, a))

    # ---- eyes -----------------------------------------------------------------------------------
    eye_y = 0.1
    for s in (-1, 1):
        near = 1.0 + 0.18 * yaw * s  # the eye on the turned-towards side looks wider
        _draw_eye(pen, spec, ex, cx=fx + s * 0.205 * (1.0 + 0.1 * yaw * s), cy=eye_y, side=s, scale=near, ink=ink)

    # eyebrows (mostly under the fringe)
    by = -0.1 - 0.03 * ex.brows
    frown = 0.03 * max(0.0, -ex.brows)  # a frown lowers the inner ends
    for s in (-1, 1):
        pen.line(_bezier((fx + s * 0.1, by + frown), (fx + s * 0.22, by - 0.035), (fx + s * 0.33, by + 0.015), 8),
                 fill=_shade(hair, -0.45), width=0.022)

    # nose and mouth
    nx = fx * 1.4
    pen.line([(nx + 0.012, 0.27), (nx - 0.005, 0.305)], fill=_mix(skin, ink, 0.55), width=0.014)
    _draw_mouth(pen, ex.mouth, nx, 0.41, skin, ink)

    # ---- fringe and side locks -------------------------------------------------------------------
    for s in (-1, 1):
        lock = [(s * 0.44, -0.3), (s * 0.56, -0.25), (s * 0.54, 0.2), (s * 0.48, 0.5), (s * 0.42, 0.22),
                (s * 0.38, -0.1)]
        pen.poly(lock, fill=hair, outline=ink, width=lw)
    pen.poly(_fringe_pts(spec.fringe, yaw), fill=hair, outline=ink, width=lw)
    # hair shine ("angel ring") and a few strand lines
    shine = _ellipse_pts(0.0, -0.22, 0.46, 0.3, 16, math.pi * 1.12, math.pi * 1.88)
    pen.line(shine, fill=hair_light, width=0.045)
    for x0 in (-0.3, -0.08, 0.14, 0.33):
        pen.line(_bezier((x0 * 0.6, -0.62), (x0 * 0.95, -0.45), (x0, -0.24), 6), fill=hair_dark, width=0.01)

    # ---- accessory -------------------------------------------------------------------------------
    acc = spec.accessory
    if acc == "ribbon":
        bx, by2 = (-0.45, -0.62) if style != "twintails" else (-0.55, -0.45)
        for s in (-1, 1):
            pen.poly([(bx, by2), (bx + s * 0.2, by2 - 0.12), (bx + s * 0.22, by2 + 0.1)], fill=spec.accent,
                     outline=ink, width=lw)
        pen.ellipse(bx, by2, 0.045, 0.045, fill=_shade(spec.accent, -0.2), outline=ink, width=lw)
        if style == "twintails":
            for s in (-1, 1):
                pen.ellipse(s * 0.62, -0.38, 0.06, 0.06, fill=spec.accent, outline=ink, width=lw)
    elif acc == "hairclip":
        for k in range(2):
            x0 = 0.28 + 0.06 * k
            pen.poly([(x0, -0.42), (x0 + 0.03, -0.43), (x0 + 0.07, -0.24), (x0 + 0.04, -0.23)], fill=spec.accent,
                     outline=ink, width=lw * 0.6)
    elif acc == "headband":
        band = _ellipse_pts(0.0, -0.17, 0.62, 0.6, 24, math.pi * 1.05, math.pi * 1.95)
        pen.line(band, fill=spec.accent, width=0.06)
    elif acc == "ahoge":
        pen.poly(_bezier((-0.02, -0.8), (0.05, -1.05), (0.2, -1.0), 8) + _bezier((0.2, -1.0), (0.06, -0.98), (0.06, -0.8), 8),
                 fill=hair, outline=ink, width=lw)


def _fringe_pts(kind: str, yaw: float) -> list[tuple[float, float]]:
    """Outline of the fringe: top of the head, then the lower edge right -> left."""
    top = _ellipse_pts(0.0, -0.17, 0.62, 0.62, 28, math.pi, 2 * math.pi)  # left -> right over the top
    sh = 0.05 * yaw
    if kind == "straight":
        edge = [(0.62, -0.1), (0.5, -0.12)]
        for i, x in enumerate(np.linspace(0.42, -0.42, 9)):
            edge.append((x + sh, -0.12 if i % 2 == 0 else -0.15))
        edge += [(-0.5, -0.12), (-0.62, -0.1)]
    elif kind == "spiky":
        tips = [(0.6, 0.05), (0.42, -0.3), (0.32, -0.06), (0.22, -0.28), (0.08, -0.04), (-0.02, -0.3),
                (-0.14, -0.05), (-0.24, -0.3), (-0.34, -0.07), (-0.44, -0.3), (-0.6, 0.05)]
        edge = [(x + sh * (1 - abs(x)), y) for x, y in tips]
    elif kind == "side":
        # swept to the viewer's left, with one long lock
        tips = [(0.62, -0.08), (0.48, -0.32), (0.36, -0.16), (0.2, -0.33), (0.02, -0.12), (-0.12, -0.3),
                (-0.3, -0.02), (-0.4, -0.22), (-0.58, 0.12), (-0.62, -0.1)]
        edge = [(x + sh * (1 - abs(x)), y) for x, y in tips]
    else:  # parted: curtains from a middle parting
        edge = ([(0.62, 0.1)] + _bezier((0.5, -0.05), (0.2, -0.18), (0.04, -0.42), 7)
                + _bezier((-0.04, -0.42), (-0.2, -0.18), (-0.5, -0.05), 7) + [(-0.62, 0.1)])
        edge = [(x + sh * (1 - abs(x)), y) for x, y in edge]
    return top + edge


def _draw_eye(pen: _Pen, spec: CharacterSpec, ex: _Expr, cx: float, cy: float, side: int, scale: float,
              ink: RGB) -> None:
    a = 0.125 * scale  # half width
    b = 0.13 * max(ex.eye_open, 0.15)  # half height
    s = side  # +1: outer corner at +x
    if ex.eye_open < 0.3:
        # shut / smiling eye: a thick arc
        pen.line(_bezier((cx - s * a, cy + 0.02), (cx, cy - 0.07), (cx + s * a * 1.1, cy + 0.02), 10), fill=ink,
                 width=0.03)
        return
    # white, slightly tilted: outer corner a bit higher
    white = [(cx + s * a * math.cos(t), cy + b * math.sin(t) - 0.02 * math.cos(t) * 1.0)
             for t in np.linspace(0, 2 * math.pi, 36, endpoint=False)]
    pen.poly(white, fill=(252, 252, 255), outline=_mix(ink, (255, 255, 255), 0.4), width=0.008)
    # iris (dark top, eye colour, light bottom), pupil, highlights
    ix = cx + ex.gaze * a * 0.25
    iy = cy + 0.06 * b
    ia, ib = 0.62 * a, 0.92 * b
    pen.ellipse(ix, iy, ia, ib, fill=_shade(spec.eyes, -0.55), outline=_shade(spec.eyes, -0.75), width=0.008)
    pen.ellipse(ix, iy + 0.16 * ib, ia * 0.86, ib * 0.78, fill=spec.eyes)
    pen.ellipse(ix, iy + 0.5 * ib, ia * 0.6, ib * 0.35, fill=_shade(spec.eyes, 0.35))
    pen.ellipse(ix, iy - 0.05 * ib, ia * 0.4, ib * 0.5, fill=_shade(spec.eyes, -0.7))
    pen.ellipse(ix - s * 0.3 * ia, iy - 0.42 * ib, ia * 0.3, ib * 0.22, fill=(255, 255, 255))
    pen.ellipse(ix + s * 0.35 * ia, iy + 0.45 * ib, ia * 0.13, ib * 0.1, fill=(255, 255, 255))
    # upper lid: thick, heavier towards the outer corner, with a lash flick
    ts = np.linspace(math.pi, 2 * math.pi, 16)  # along the top of the white, inner -> outer for s=+1
    lid_top, lid_bot = [], []
    for t in ts:
        ux = math.cos(t)  # -1 inner .. +1 outer (for s=+1)
        x = cx - s * a * math.cos(t) * -1
        y = cy + b * math.sin(t) - 0.02 * math.cos(t)
        th = 0.018 + 0.022 * (ux + 1) / 2
        lid_bot.append((x, y + 0.004))
        lid_top.append((x, y - th))
    flick = [(cx + s * a * 1.28, cy - 0.055 - 0.2 * b), (cx + s * a * 1.12, cy - 0.005)]
    pen.poly(lid_top + flick + lid_bot[::-1], fill=ink)
    # lower lid: a thin line under the outer half
    low = [(cx + s * a * math.cos(t), cy + b * math.sin(t) - 0.02 * math.cos(t) + 0.006)
           for t in np.linspace(0.15, 1.2, 6)]
    pen.line(low, fill=_mix(ink, spec.skin, 0.3), width=0.012)


def _draw_mouth(pen: _Pen, kind: str, x: float, y: float, skin: RGB, ink: RGB) -> None:
    dark = (150, 40, 50)
    if kind == "smile":
        pen.line(_bezier((x - 0.07, y - 0.01), (x, y + 0.045), (x + 0.07, y - 0.01), 8), fill=ink, width=0.014)
    elif kind == "flat":
        pen.line([(x - 0.045, y + 0.005), (x + 0.045, y)], fill=ink, width=0.013)
    elif kind == "o":
        pen.ellipse(x, y + 0.01, 0.03, 0.035, fill=dark, outline=ink, width=0.01)
    elif kind == "grin":
        pts = [(x - 0.08, y - 0.015), (x + 0.08, y - 0.015)] + _bezier((x + 0.08, y - 0.015), (x, y + 0.09),
                                                                    (x - 0.08, y - 0.015), 8)
        pen.poly(pts, fill=(250, 250, 250), outline=ink, width=0.012)
    else:  # open: a D shape with a tongue
        pts = [(x - 0.065, y - 0.015), (x + 0.065, y - 0.015)] + _bezier((x + 0.065, y - 0.015), (x, y + 0.08),
                                                                      (x - 0.065, y - 0.015), 8)
        pen.poly(pts, fill=dark, outline=ink, width=0.012)
        pen.ellipse(x, y + 0.04, 0.035, 0.018, fill=(235, 120, 130))


# --------------------------------------------------------------------------------------------
# face box convention and backgrounds

#: The true face box relative to the face, in face units: centre offset and side length.
#: Calibrated against the AnimeFace 2009 detector (see tests/test_sample.py).
_BOX_CY = 0.174
_BOX_SIDE = 0.95


def _face_box(pose: _Pose, ss: int) -> tuple[float, float, float, float]:
    """Axis-aligned true face box (x0, y0, x1, y1) on the final (not supersampled) canvas."""
    c, s = math.cos(pose.roll), math.sin(pose.roll)
    bx, by = 0.0, _BOX_CY * pose.fw
    x = pose.cx + bx * c - by * s
    y = pose.cy + bx * s + by * c
    half = _BOX_SIDE * pose.fw / 2
    return ((x - half) / ss, (y - half) / ss, (x + half) / ss, (y + half) / ss)


def _background(rng: np.random.Generator, w: int, h: int, kind: str | None = None) -> Image.Image:
    """A simple background: gradient sky, room wall, or pattern, with a few soft shapes."""
    kind = kind or str(rng.choice(["sky", "room", "plain", "pattern"]))
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    c1 = np.array(_hsv(float(rng.random()), float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.6, 1.0))), np.float32)
    c2 = np.array(_hsv(float(rng.random()), float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.3, 1.0))), np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    t = (xx * math.cos(ang) + yy * math.sin(ang))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    arr = c1 * (1 - t) + c2 * t
    if kind == "pattern":
        period = rng.uniform(0.03, 0.12)
        stripes = (np.floor((xx + yy * rng.uniform(-1, 1)) / period) % 2).astype(np.float32)
        arr = arr * (1 - 0.12 * stripes)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img, "RGBA")
    if kind == "sky":
        for _ in range(int(rng.integers(2, 6))):  # clouds
            x, y, r = rng.uniform(0, w), rng.uniform(0, h * 0.6), rng.uniform(0.04, 0.12) * w
            for k in range(3):
                d.ellipse([x + k * r * 0.7 - r, y - r * 0.6, x + k * r * 0.7 + r, y + r * 0.6],
                          fill=(255, 255, 255, 170))
        gy = int(h * rng.uniform(0.65, 0.85))
        d.rectangle([0, gy, w, h], fill=_hsv(float(rng.uniform(0.2, 0.4)), 0.5, 0.6) + (255,))
    elif kind == "room":
        fy = int(h * rng.uniform(0.6, 0.8))
        d.rectangle([0, fy, w, h], fill=_hsv(float(rng.uniform(0.05, 0.12)), 0.5, 0.55) + (255,))
        for _ in range(int(rng.integers(1, 3))):  # windows / shelves / posters
            x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, fy * 0.5)
            ww, hh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.15, 0.4) * h
            d.rectangle([x0, y0, x0 + ww, y0 + hh], fill=_hsv(float(rng.random()), 0.25, 0.9) + (255,),
                        outline=(90, 70, 60, 255), width=max(2, w // 160))
            d.line([x0 + ww / 2, y0, x0 + ww / 2, y0 + hh], fill=(90, 70, 60, 255), width=max(2, w // 200))
    elif kind == "plain":
        for _ in range(int(rng.integers(3, 9))):  # soft bokeh circles
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.1) * max(w, h)
            col = _hsv(float(rng.random()), 0.3, 1.0) + (int(rng.integers(40, 110)),)
            d.ellipse([x - r, y - r, x + r, y + r], fill=col)
    return img


def _lighting(img: Image.Image, rng: np.random.Generator, strength: float = 0.18) -> Image.Image:
    """Global lighting: a soft brightness gradient and a slight colour cast."""
    w, h = img.size
    arr = np.asarray(img, dtype=np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    g = 1.0 + strength * rng.uniform(0.3, 1.0) * 2 * (xx * math.cos(ang) + yy * math.sin(ang))
    cast = 1.0 + rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
    b = rng.uniform(0.88, 1.06)
    arr = arr * (g[..., None] * cast * b)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# public rendering

_SS = 3  # supersampling factor


def _random_pose(rng: np.random.Generator, cx: float, cy: float, fw: float) -> _Pose:
    return _Pose(cx=cx, cy=cy, fw=fw, roll=float(np.deg2rad(rng.uniform(-14, 14))),
                 yaw=float(np.clip(rng.normal(0, 0.35), -0.7, 0.7)), flip=bool(rng.random() < 0.5))


def render_face(spec: CharacterSpec, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """One ``size`` x ``size`` picture of ``spec`` (head and shoulders) with random pose,
    expression, background and lighting."""
    img, _box = render_face_with_box(spec, rng, size)
    return img


def render_face_with_box(spec: CharacterSpec, rng: np.random.Generator, size: int = 256
                         ) -> tuple[Image.Image, Box]:
    """:func:`render_face` and the true face box ``(x0, y0, x1, y1)``; the same picture for the
    same ``rng`` state. The face box is 0.38-0.52 of the picture's side, so at ``size`` under
    ~115 it can be smaller than the detector's smallest face (~43 px)."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    ss = _SS
    big = size * ss
    bg = _background(rng, size, size, kind=str(rng.choice(["sky", "room", "plain", "pattern", "plain"])))
    canvas = bg.resize((big, big), Image.Resampling.NEAREST)
    fw = big * rng.uniform(0.4, 0.55)
    cx = big / 2 + rng.uniform(-0.06, 0.06) * big
    cy = big * rng.uniform(0.38, 0.48)
    pose = _random_pose(rng, cx, cy, fw)
    _draw_character(ImageDraw.Draw(canvas, "RGBA"), spec, pose, _random_expr(rng), rng)
    img = _lighting(canvas.reduce(ss), rng)
    return img, _clip_box(_face_box(pose, ss), size, size)


def _clip_box(b: tuple[float, float, float, float], w: int, h: int) -> Box:
    x0, y0 = min(w - 1, max(0, int(round(b[0])))), min(h - 1, max(0, int(round(b[1]))))
    x1, y1 = min(w, int(round(b[2]))), min(h, int(round(b[3])))
    return (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))


def render_scene(specs: Sequence[CharacterSpec], rng: np.random.Generator, size: tuple[int, int] = (640, 360),
                 n_faces: int | None = None) -> tuple[Image.Image, list[tuple[str, Box]]]:
    """An illustration / video frame of ``size`` = (W, H) with ``n_faces`` (default: random 0-3)
    characters picked from ``specs`` (distinct while there are enough), at various sizes and
    places on a background.

    Returns the picture and the true faces as ``(name, (x0, y0, x1, y1))``, every box
    inside the picture (``x1 <= W``, ``y1 <= H``). Faces are never smaller than ~50 px (the detector's limit is ~43 px)
    unless the picture itself is tiny.
    """
    W, H = int(size[0]), int(size[1])
    if W < 16 or H < 16:
        raise ValueError(f"scene size {size} is too small")
    if n_faces is None:
        n_faces = int(rng.choice([0, 1, 1, 2, 2, 3]))
    if n_faces < 0:
        raise ValueError("n_faces must be >= 0")
    if n_faces and not specs:
        raise ValueError("no characters to draw")
    ss = _SS
    bg = _background(rng, W, H)
    canvas = bg.resize((W * ss, H * ss), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas, "RGBA")

    # choose characters
    if n_faces <= len(specs):
        idx = rng.choice(len(specs), size=n_faces, replace=False)
    else:
        idx = rng.choice(len(specs), size=n_faces, replace=True)
    chosen = [specs[int(i)] for i in idx]

    # place faces: sizes from the frame height, boxes inside the frame, and no face hidden behind
    # a nearer (bigger, drawn later) character's hair or body
    short = min(W, H)
    min_fw = min(56.0 / _BOX_SIDE, short / (_BOX_SIDE * 1.15) * 0.98)
    max_fw = max(min_fw, short * (0.62 if n_faces == 1 else 0.42) / _BOX_SIDE)
    placed: list[tuple[float, float, float, CharacterSpec]] = []  # box centre x, y, face width, spec
    for spec in chosen:
        for attempt in range(80):
            hi = max(min_fw, max_fw * (1.0 - attempt / 100))
            fw = float(rng.uniform(min_fw, hi))
            half = _BOX_SIDE * fw / 2 * 1.15  # room for roll
            bx = float(rng.uniform(half, W - half))
            by = float(rng.uniform(half, H - half))
            cand = (bx, by, fw, spec)
            if all(_apart(cand, o) for o in placed):
                placed.append(cand)
                break
    # draw far (small) ones first so that near ones overlap them
    placed.sort(key=lambda p: p[2])
    truth: list[tuple[str, Box]] = []
    for bx, by, fw, spec in placed:
        pose = _random_pose(rng, bx * ss, (by - _BOX_CY * fw) * ss, fw * ss)
        _draw_character(draw, spec, pose, _random_expr(rng), rng)
        truth.append((spec.name, _clip_box(_face_box(pose, ss), W, H)))
    img = _lighting(canvas.reduce(ss), rng, strength=0.12)
    return img, truth


def _apart(a, b) -> bool:
    """True when the smaller character's face is clear of the bigger one's silhouette (hair and
    body, a column from the top of the head down), which is drawn over it."""
    small, big = (a, b) if a[2] <= b[2] else (b, a)
    sx, sy, sfw, _ = small
    bx, by, bfw, bspec = big
    sh = _BOX_SIDE * sfw / 2 * 1.15
    col = (1.17 if bspec.hair_style in ("twintails", "ponytail") else 1.02) * bfw
    top = (by - _BOX_CY * bfw) - (1.08 if bspec.accessory == "ahoge" else 0.86) * bfw
    return abs(sx - bx) >= col + sh or sy + sh <= top


# --------------------------------------------------------------------------------------------
# the sample folder

_README = """\
animeid built-in sample
=======================

Everything in this folder was drawn procedurally by animeid ({module}, seed {seed}).
It is NOT real anime and contains no third-party pictures. The {n} characters

{names}

are made up, drawn from simple shapes with PIL, and told apart mainly by their
hair and eye colours.

  illustrations/<name>/*.png  {ipc} single-character pictures per character (for `animeid import`)
  episode.mp4                 {secs:g} s video at {w}x{h}, {fps} fps, a new scene every {every:g} s,
                              0-3 characters per scene ({codec})
  truth.json                  ground truth: which character appears where and when

Face boxes in truth.json are [x0, y0, x1, y1] in pixels (x1, y1 exclusive).
"""


def _pick_codec() -> str:
    import av

    avail = av.codecs_available
    for name in ("libx264", "mpeg4"):
        if name in avail:
            try:
                av.Codec(name, "w")
                return name
            except Exception:
                continue
    raise RuntimeError("PyAV has neither libx264 nor mpeg4 encoders")


def make_sample(out_dir: str | os.PathLike, *, n_characters: int = 6, illustrations_per_character: int = 8,
                video_seconds: float = 60, every: float = 3.0, seed: int = 0, fps: int = 12,
                size: tuple[int, int] = (640, 360), face_size: int = 256) -> dict:
    """Write the built-in sample into ``out_dir`` and return its ground truth.

    * ``out_dir/illustrations/<name>/<name>_NN.png``: ``illustrations_per_character`` pictures
      of one character each (``face_size`` square);
    * ``out_dir/episode.mp4``: ``video_seconds`` of ``size`` video at ``fps``, a new scene
      (0-3 characters) every ``every`` seconds;
    * ``out_dir/truth.json``: the returned dict; ``out_dir/README.txt``: what this is.

    The returned dict has ``characters`` (names), ``illustrations`` ({name: [relative paths]}),
    ``illustration_boxes`` ({relative path: [x0, y0, x1, y1]}), ``video`` (relative path),
    ``fps``, ``duration``, ``size`` ([W, H]), ``every`` and ``scenes``: a list of
    ``{"start": s, "end": s, "faces": [{"name": str, "box": [x0, y0, x1, y1]}]}`` covering the
    video (``end`` exclusive; see :func:`faces_at`). The same bytes are written for the same
    arguments. With the defaults this takes a few seconds.
    """
    import av

    if illustrations_per_character < 0:
        raise ValueError("illustrations_per_character must be >= 0")
    if video_seconds <= 0 or every <= 0 or fps <= 0:
        raise ValueError("video_seconds, every and fps must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = make_characters(n_characters, seed=0)
    ss = np.random.SeedSequence(seed)
    rng_ill, rng_vid = (np.random.default_rng(s) for s in ss.spawn(2))

    illustrations: dict[str, list[str]] = {}
    ill_boxes: dict[str, list[int]] = {}
    for spec in specs:
        folder = out / "illustrations" / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(illustrations_per_character):
            img, box = render_face_with_box(spec, rng_ill, face_size)
            rel = f"illustrations/{spec.name}/{spec.name}_{i:02d}.png"
            img.save(out / rel, format="PNG", optimize=False, compress_level=3)
            paths.append(rel)
            ill_boxes[rel] = list(box)
        illustrations[spec.name] = paths

    # the video: scenes of `every` seconds, frames held still within a scene
    W, H = int(size[0]) // 2 * 2, int(size[1]) // 2 * 2
    n_frames = int(round(video_seconds * fps))
    frames_per_scene = max(1, int(round(every * fps)))
    codec = _pick_codec()
    scenes = []
    tmp = out / ".episode.mp4.tmp"
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = W, H
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"preset": "veryfast", "crf": "20", "g": str(frames_per_scene)}
            else:
                stream.bit_rate = 2_000_000
                stream.gop_size = frames_per_scene
            frame_i = 0
            while frame_i < n_frames:
                img, truth = render_scene(specs, rng_vid, size=(W, H))
                n = min(frames_per_scene, n_frames - frame_i)
                scenes.append({"start": round(frame_i / fps, 6), "end": round((frame_i + n) / fps, 6),
                               "faces": [{"name": name, "box": list(box)} for name, box in truth]})
                vf = av.VideoFrame.from_image(img)
                for _ in range(n):
                    for packet in stream.encode(vf):
                        container.mux(packet)
                frame_i += n
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, out / "episode.mp4")
    finally:
        if tmp.exists():
            tmp.unlink()

    result = {
        "generator": "animeid.sample",
        "seed": seed,
        "characters": [s.name for s in specs],
        "specs": [asdict(s) for s in specs],
        "illustrations": illustrations,
        "illustration_boxes": ill_boxes,
        "video": "episode.mp4",
        "fps": fps,
        "duration": n_frames / fps,
        "size": [W, H],
        "every": every,
        "scenes": scenes,
    }
    atomic_write_json(out / "truth.json", result)
    names = textwrap.fill(", ".join(s.name for s in specs), 88, initial_indent="  ", subsequent_indent="  ")
    (out / "README.txt").write_text(_README.format(
        module=__name__, seed=seed, n=len(specs), names=names,
        ipc=illustrations_per_character, secs=n_frames / fps, w=W, h=H, fps=fps, every=every, codec=codec),
        encoding="utf-8")
    return result


def faces_at(truth: dict, t: float) -> list[tuple[str, Box]]:
    """The true faces ``(name, (x0, y0, x1, y1))`` shown at time ``t`` (seconds) of the sample
    video described by ``truth`` (what :func:`make_sample` returned, or its ``truth.json``)."""
    for sc in truth["scenes"]:
        if sc["start"] <= t < sc["end"]:
            return [(f["name"], tuple(f["box"])) for f in sc["faces"]]  # type: ignore[misc]
    return []
