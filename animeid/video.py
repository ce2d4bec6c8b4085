"""Frames from videos: probe a file, sample a frame every N seconds, write them out, make test videos.

The study behind animeid took one frame of each episode every 5 s (ffmpeg ``fps=1/5``); this
module does the same with PyAV, without an ffmpeg binary.

Structure
---------
* :data:`VIDEO_EXTS`, :func:`is_video_file` -- which file names are videos (by ending only).
* :func:`probe` -> :class:`VideoInfo` -- size, length, rate, codec, pixel aspect and rotation of
  a file's video stream; checks that the first frame decodes.
* :func:`orientation`, :func:`apply_orientation`, :func:`display_size` -- how a stored picture
  is shown (display matrix, sample aspect ratio).
* :func:`sample_frames` -> iterator of :class:`Frame` -- the sampler (semantics below).
* :func:`frame_name` / :func:`parse_frame_name` -- ``<stem>_t0001m05.000s.jpg`` file names.
* :func:`write_frames` -- sample several videos into one folder, atomically and resumably,
  and return a summary.
* :func:`write_video` -- build a video from pictures (tests, the demo, benchmarks).
* :class:`PartialVideoError`, :class:`SampleStats` -- how a caller learns what happened.

Sampling semantics (:func:`sample_frames`)
-------------------------------------------
* **Times** are presentation times in seconds from the start of the video stream
  (``(pts - stream.start_time) * stream.time_base``), as a player shows them and as ffmpeg
  reports them by default; a ``.ts`` file whose clock starts at 600 s reports 0 for its first
  frame. Frames are taken in presentation order; a frame whose time is not after the previous
  decoded frame's (duplicate or backwards timestamps) is ignored.
* **Sample times** are ``start + k * every`` for ``k = 0, 1, 2, ...``, exactly as ffmpeg's
  ``fps=1/every`` filter takes them: each sample time gets the frame *shown* then -- the last
  frame whose time is at or before it (1 microsecond tolerance) -- whether or not a new frame
  starts there. A picture held on screen over several sample times (variable frame rate: an
  MKV whose one frame lasts from 2 s to 14 s) is yielded at each of them; a sample time before
  the first frame gets the first frame. ``Frame.time`` is the sample time, ``Frame.index`` is
  ``k``, ``Frame.frame_time`` the shown frame's own time. Sampling runs while the sample time
  is before the end of the last frame (its time plus its duration, else one nominal frame);
  the container's duration is never trusted to stop it. A frame that starts at the sample time
  is taken without decoding the next one, so a constant-frame-rate file costs no more decoding
  than "the first frame at or after each sample time" did.
* **Seeking** (``seek=True``) gives the *same frames* as decoding every frame (``seek=False``),
  only faster. Rule: when the next target is more than :data:`SEEK_MIN_GAP` seconds after the
  last decoded frame, a second demuxer on the same file (it reads packets, decodes nothing)
  seeks to the target (``container.seek(pts, stream=s, backward=True, any_frame=False)``) and
  reads one packet: the keyframe at or before the target. Only when that keyframe lies after
  the last decoded frame (and not after the target) does the decoding demuxer seek there and
  decode forward (the frame shown at the target starts at or after that keyframe, so the
  frames jumped over cannot be it); otherwise it keeps decoding, as seeking would only decode
  frames again. No seek is needed while an already decoded frame lies after the target.
  So the keyframe interval decides, exactly and per target: sparse keyframes or a small
  ``every`` give linear decoding, dense keyframes give one seek per target. A container that
  cannot say (no index: MPEG-TS/PS; the packet found is not a keyframe) is decoded linearly.
  Safety net: if the decoder's first frame after a seek is not on a keyframe packet or lies
  after the target (the wanted frame could have been jumped over), or a seek raises, the file
  is reopened and decoded linearly from the top -- ``stats.linear_fallback`` tells. Frames are only converted to RGB when yielded.
  Identity holds for intact files; where the data itself is damaged, the concealed (damaged)
  frames may differ with and without seeking.
* ``skip_similar=d``: a sampled frame whose perceptual hash (``imagehash.dhash`` of a 64x64
  grey version, 64 bits) is within Hamming distance ``d`` (``<= d``) of the previous *kept*
  frame's is skipped -- static scenes repeat in anime. The first frame is always kept.
* ``skip_times``: times already handled by an earlier, interrupted run (compared after
  rounding to the millisecond, as :func:`frame_name` writes them). A sampled frame whose
  rounded time is in it is not converted to RGB nor yielded; it still counts as *kept* for
  ``skip_similar`` (hashed only if needed), so a resumed run yields exactly the frames the
  uninterrupted run would have.
* ``similar_restart=S``: the ``skip_similar`` chain starts again at each multiple of ``S`` seconds
  (the first sample time at or after it is always kept), so that a video cut into segments at those
  borders (``start=j*S, stop=(j+1)*S``, one segment per cluster task) gives exactly the frames one
  pass over the whole video gives.
* ``stop``: sampling ends before the first sample time at or after ``stop`` (a segment's end);
  a video that ends there is not reported as truncated (only damage met before ``stop`` is).

Bad input
---------
Missing, empty, unreadable, non-video (a text file, a picture named ``.mp4``, audio only) and
corrupt files raise :class:`~animeid.errors.InputError` naming the file, before any frame.
A video that breaks off part way (truncated download, damaged data) yields the frames that
decode and then raises :class:`PartialVideoError` (an ``InputError``) *after* the last frame;
nothing is logged as well (the caller reports it once). Its message says which happened: the
file *breaks off* (every sampled frame is from before the break), or damaged data was skipped
and decoding *went on* (sampled frames come from before and after the damage;
``damaged_at < time``). "Breaks off" means: reading or decoding failed
after some frames (FFmpeg mostly just stops at a cut, so also) the last frame lies more than
2 s + 2 frames before the end the header announces (its duration, or frame count / rate).
A caller that keeps the frames and counts the file as partly read catches it around the
loop; ``stats.partial`` tells the same. No raw PyAV error escapes::

    stats = SampleStats()
    try:
        for fr in sample_frames(path, 5, stats=stats):
            keep(fr)
    except PartialVideoError:
        pass  # the frames above are good; count the file as partly read
    # any other InputError: nothing could be read from the file

Pictures are what a player shows, as ffmpeg makes them by default: converted to RGB with the
colour matrix and range the stream declares (BT.601 and limited range when it declares none);
non-square pixels (an anamorphic DVD rip, 720x480 at 32:27) stretched to the display aspect
by scaling the width (``scale=iw*sar:ih``: 853x480), in the same swscale pass as the colour
conversion; then turned upright by the display matrix (phone recordings), as ffmpeg's
autorotation does (:func:`orientation`: quarter turns and mirroring; other angles are left
alone). Files with square pixels and no display matrix take none of these extra steps.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import av
import numpy as np
from PIL import Image

from ._util import check_file, plural, progress, save_image_atomic
from .names import fit_bytes, safe_stem
from .errors import InputError
from .images import VIDEO_EXTS, frame_count, iter_frames, to_array

__all__ = [
    "VIDEO_EXTS",
    "SEEK_MIN_GAP",
    "is_video_file",
    "VideoInfo",
    "probe",
    "Frame",
    "SampleStats",
    "PartialVideoError",
    "sample_frames",
    "orientation",
    "apply_orientation",
    "display_size",
    "frame_name",
    "parse_frame_name",
    "write_frames",
    "write_video",
]

#: Consider seeking only when the next target is more than this many seconds after the last
#: decoded frame.
SEEK_MIN_GAP = 1.0

_EPS = 1e-6  # seconds: tolerance when comparing frame times with targets
_MAX_BAD_PACKETS = 100  # consecutive undecodable packets before a file counts as broken off
# demuxers that read still pictures or text, not videos
_PICTURE_FORMATS = frozenset({"image2", "gif", "apng", "webp", "tty", "ico", "mpjpeg", "smjpeg"})


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name ends like a video (:data:`VIDEO_EXTS`); the file is not opened."""
    return Path(path).suffix.lower() in VIDEO_EXTS


# ----------------------------------------------------------------------------- opening files

def _av_message(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    # PyAV appends "; last error log: ..." and the file name; keep the first clause
    msg = msg.split(";")[0].strip()
    return msg or type(e).__name__


def _is_picture_format(fmt_name: str) -> bool:
    names = set(fmt_name.split(","))
    return bool(names & _PICTURE_FORMATS) or any(n.endswith("_pipe") for n in names)


def _open(p: Path) -> tuple[Any, Any]:
    """Open ``p`` and pick its video stream: ``(container, stream)`` or :class:`InputError`."""
    try:
        container = av.open(os.fspath(p), "r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable video ({_av_message(e)})", p) from None
    try:
        fmt = container.format.name or ""
        if _is_picture_format(fmt):
            raise InputError(f"is a picture or text, not a video (read as {fmt!r})", p)
        streams = [s for s in container.streams.video
                   if not (s.disposition & av.stream.Disposition.attached_pic)]  # not cover art
        if not streams:
            others = sorted({s.type for s in container.streams})
            what = f" (only {', '.join(others)})" if others else ""
            raise InputError(f"has no video stream{what}", p)
        streams = [s for s in streams if s.codec_context is not None]
        if not streams:
            raise InputError("no decoder for its video stream in this PyAV build", p)
        stream = max(streams, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0))
        stream.thread_type = "AUTO"
        return container, stream
    except BaseException:
        container.close()
        raise


def _origin(container: Any, stream: Any) -> int:
    """The stream's first timestamp (pts units): times are counted from it."""
    if stream.start_time is not None:
        return int(stream.start_time)
    if container.start_time is not None and stream.time_base:
        return int(Fraction(container.start_time, av.time_base) / stream.time_base)
    return 0


# ----------------------------------------------------------------------------- probe

@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found. ``None`` where the file does not say."""

    path: str
    duration: float | None  # seconds (the video stream's, else the container's)
    fps: float | None  # average frame rate
    width: int  # stored picture size
    height: int
    frames: int | None  # frame count from the header (not counted)
    codec: str  # decoder name, e.g. "h264"
    sar: Fraction | None = None  # sample (pixel) aspect ratio when pixels are not square (32/27: a DVD rip)
    rotation: int = 0  # the display matrix's rotation, degrees counter-clockwise (-90: a phone held upright)
    display_size: tuple[int, int] | None = None  # (W, H) of the sampled pictures: aspect and rotation applied


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe ``path``'s video stream; :class:`InputError` unless its first frame decodes."""
    p = check_file(path, "a video", InputError)
    container, stream = _open(p)
    try:
        tb = stream.time_base
        if stream.duration and tb:
            duration: float | None = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = None
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        first = None
        bad = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError:
                    bad += 1
                    if bad > _MAX_BAD_PACKETS:
                        break
                    continue
                if frames:
                    first = frames[0]
                    break
        except av.error.FFmpegError as e:
            raise InputError(f"corrupt video ({_av_message(e)})", p) from None
        if first is None:
            raise InputError("corrupt video: no frame decodes", p)
        cc = stream.codec_context
        width, height = int(cc.width or first.width), int(cc.height or first.height)
        sar = _sar(stream)
        matrix = _display_matrix(first)
        steps = orientation(first.rotation, matrix) if matrix is not None else ()
        dw, dh = display_size(width, height, sar)
        if any(step in ("cw", "ccw", "transpose", "antitranspose") for step in steps):
            dw, dh = dh, dw
        return VideoInfo(
            path=os.fspath(p), duration=duration, fps=fps, width=width, height=height,
            frames=int(stream.frames) or None, codec=cc.name, sar=sar,
            rotation=int(first.rotation) if matrix is not None else 0, display_size=(dw, dh))
    finally:
        container.close()


# ----------------------------------------------------------------------------- sampling

@dataclass
class Frame:
    """One sampled frame."""

    time: float  # the sample time in seconds from the start of the stream: start + index * every
    index: int  # target number: 0, 1, 2, ...
    image: np.ndarray  # (H, W, 3) uint8 RGB, as displayed (rotation and sample aspect ratio applied)
    frame_time: float | None = None  # presentation time of the frame shown at ``time`` (<= time, but
    #                                  for a target before the first frame, which shows the first frame)


@dataclass
class SampleStats:
    """Counters filled in by :func:`sample_frames` as it runs (pass one as ``stats=``)."""

    yielded: int = 0  # frames yielded
    skipped_similar: int = 0  # sampled frames dropped by skip_similar
    skipped_known: int = 0  # sampled frames dropped because their time was in skip_times
    decoded: int = 0  # frames the decoder produced (the work done)
    seeks: int = 0  # seeks made
    linear_fallback: bool = False  # the seek safety net fired: reopened and decoded linearly
    partial: bool = False  # the video broke off part way: see PartialVideoError
    error: str | None = None  # why it broke off
    last_time: float | None = None  # time of the last decoded frame
    damaged_at: float | None = None  # partial: time of the last good frame before the first error
    lost: int = 0  # sample times inside a stretch lost to damage (no frame decodes there): left out
    lost_span: tuple[float, float] | None = None  # (last frame before, first frame after) that stretch


class PartialVideoError(InputError):
    """The video broke off part way; raised by :func:`sample_frames` after its last good frame.

    ``frames``: frames yielded before; ``time``: time of the last decoded frame (``None`` when
    none decoded); ``damaged_at``: time of the last frame decoded before the first error (or
    ``time`` when the file just stops early). Where damaged data was skipped over and decoding
    went on, ``time > damaged_at`` and frames after the damage were yielded too.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, *,
                 frames: int = 0, time: float | None = None, damaged_at: float | None = None):
        super().__init__(message, path)
        self.frames = frames
        self.time = time
        self.damaged_at = time if damaged_at is None else damaged_at


class _Decoder:
    """Frames of one video stream, in presentation order, that survive errors and seeks."""

    def __init__(self, p: Path):
        self.path = p
        self.container, self.stream = _open(p)
        self.tb: Fraction = self.stream.time_base or Fraction(1, 1000)
        self.origin = _origin(self.container, self.stream)
        self.error: str | None = None  # set when reading stopped on an error
        self.error_time: float | None = None  # time of the last frame decoded before self.error
        self._last_time: float | None = None
        self.decoded = 0
        self.sar = _sar(self.stream)
        self.landed_on_key: bool | None = None  # after a seek: was the first packet a keyframe
        self._scout: tuple[Any, Any] | None = None  # second demuxer for keyframe_before()
        self.synthetic_pts = False  # some frame had no timestamp
        self._next_pts: int | None = None
        rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self._step = max(1, round(1 / (rate * self.tb)))  # one frame, in pts units

    def close(self) -> None:
        self.container.close()
        if self._scout is not None:
            self._scout[0].close()
            self._scout = None

    def keyframe_before(self, t: float) -> float | None:
        """Time of the keyframe that a seek to ``t`` lands on, found without disturbing the
        decoder: a second demuxer seeks and reads one packet (no decoding). ``None`` when the
        container cannot tell (no index, lands on a non-keyframe, error, end of file)."""
        try:
            if self._scout is None:
                c = av.open(os.fspath(self.path), "r", metadata_errors="ignore")
                self._scout = (c, c.streams[self.stream.index])
            c, s = self._scout
            c.seek(self._pts(t), stream=s, backward=True, any_frame=False)
            for packet in c.demux(s):
                if not packet.size or not packet.is_keyframe or packet.pts is None:
                    return None
                return float((packet.pts - self.origin) * self.tb)
        except (av.error.FFmpegError, OSError, ValueError, IndexError):
            return None
        return None

    def expected_end(self) -> float | None:
        """Where the stream should end (s, in frame-time terms) by the file's header: its duration,
        or its frame count / rate when that is later."""
        s, c = self.stream, self.container
        ends = []
        if s.duration and s.time_base:
            ends.append(float(s.duration * s.time_base))
        elif c.duration:
            ends.append(float((Fraction(c.start_time or 0) + c.duration) / av.time_base - self.origin * self.tb))
        if s.frames and s.average_rate:  # the frame count in the header (AVI, MP4)
            ends.append(s.frames / float(s.average_rate))
        return max(ends) if ends else None

    def end_tolerance(self) -> float:
        """How far before :meth:`expected_end` the last frame may be: 2 s + 2 frames."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        return 2.0 + (2 / float(rate) if rate else 0.0)

    def reopen(self) -> None:
        self.container.close()
        self.container, self.stream = _open(self.path)
        self.tb = self.stream.time_base or Fraction(1, 1000)
        self.origin = _origin(self.container, self.stream)
        self.error = None
        self.error_time = None
        self._last_time = None
        self._next_pts = None

    def _pts(self, t: float) -> int:
        return int(self.origin + math.floor(Fraction(t) / self.tb))

    def seek(self, t: float) -> None:
        self.landed_on_key = None
        self.container.seek(self._pts(t), stream=self.stream, backward=True, any_frame=False)

    def time(self, frame: Any) -> float:
        pts = frame.pts
        if pts is None:
            pts = frame.dts
        if pts is None:  # no timestamp at all: one frame duration after the previous one
            self.synthetic_pts = True
            pts = self._next_pts if self._next_pts is not None else self.origin
        self._next_pts = pts + self._step
        t = float((pts - self.origin) * self.tb)
        self._last_time = t
        return t

    def _fail(self, why: str, at: float | None = None) -> None:
        if self.error is None:
            self.error = why
            self.error_time = self._last_time if at is None else at

    def frame_duration(self, frame: Any) -> float:
        """How long ``frame`` is shown (s): its own duration, else one nominal frame."""
        d = frame.duration
        return float((d if d and d > 0 else self._step) * self.tb)

    def to_rgb(self, frame: Any) -> np.ndarray:
        """``frame`` as displayed: RGB, stretched to the display aspect, rotated/flipped upright."""
        return _to_rgb(frame, self.sar)

    def frames(self) -> Iterator[Any]:
        """Decoded frames from the current position to the end or to an unrecoverable error."""
        demux = self.container.demux(self.stream)
        bad = 0
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as e:
                self._fail(_av_message(e))
                yield from self._drain()
                return
            if self.landed_on_key is None and packet.size:
                self.landed_on_key = bool(packet.is_keyframe)
            try:
                out = self.stream.decode(packet)
            except av.error.FFmpegError as e:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    self._fail(f"{_av_message(e)} ({bad} packets in a row do not decode)")
                    yield from self._drain()
                    return
                self._fail(_av_message(e))  # damaged data; reading goes on
                continue
            bad = 0
            for frame in out:
                self.decoded += 1
                if frame.is_corrupt:     # damaged data concealed (e.g. an MKV's lost middle): PyAV raises nothing
                    self._fail("a frame decodes with errors: damaged data", self.time(frame))
                yield frame

    def _drain(self) -> Iterator[Any]:
        try:
            out = self.stream.decode(None)
        except av.error.FFmpegError:
            return
        for frame in out:
            self.decoded += 1
            yield frame


def _dhash(frame: Any) -> Any:
    import imagehash

    small = frame.reformat(width=64, height=64, format="gray", interpolation="AREA").to_ndarray()
    return imagehash.dhash(Image.fromarray(np.ascontiguousarray(small), "L"), hash_size=8)


def _sar(stream: Any) -> Fraction | None:
    """The stream's sample (pixel) aspect ratio when it is not square, else ``None``."""
    try:
        sar = stream.sample_aspect_ratio
    except (AttributeError, ValueError, ZeroDivisionError):
        return None
    if not sar or sar <= 0 or sar == 1 or not Fraction(1, 8) <= sar <= 8:
        return None
    return Fraction(sar)


def display_size(width: int, height: int, sar: Fraction | None) -> tuple[int, int]:
    """``(W, H)`` of a ``width`` x ``height`` picture with pixels ``sar`` wide (before any rotation):
    the width is scaled, as ffmpeg's ``scale=iw*sar:ih`` does (720x480 at 32:27 -> 853x480)."""
    if not sar or sar == 1:
        return width, height
    return max(1, int(Fraction(width) * sar + Fraction(1, 2))), height


def _display_matrix(frame: Any) -> np.ndarray | None:
    for sd in frame.side_data:
        if sd.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            raw = bytes(sd)
            if len(raw) >= 36:
                return np.frombuffer(raw[:36], dtype=np.int32)
    return None


def orientation(rotation: float, matrix: Sequence[int] | None = None) -> tuple[str, ...]:
    """The steps that turn a stored picture upright, as ffmpeg's autorotation does.

    ``rotation``: the display matrix's counter-clockwise angle (``VideoFrame.rotation``);
    ``matrix``: its 9 raw int32 entries (for flips). Returns steps applied in order, each one of
    ``"cw"`` (90 degrees clockwise), ``"ccw"``, ``"transpose"``, ``"antitranspose"``, ``"hflip"``,
    ``"vflip"``; ``()`` for none. Angles that are not a multiple of 90 degrees are ignored.
    """
    m = list(matrix) if matrix is not None else None
    theta = -round(rotation)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)  # ffmpeg's get_rotation: [0, 360)
    if abs(theta - 90) < 1.0:
        return ("transpose",) if m is not None and m[3] > 0 else ("cw",)
    if abs(theta - 180) < 1.0:
        if m is None:
            return ("hflip", "vflip")
        return tuple(step for step, neg in (("hflip", m[0] < 0), ("vflip", m[4] < 0)) if neg)
    if abs(theta - 270) < 1.0:
        return ("antitranspose",) if m is not None and m[3] < 0 else ("ccw",)
    if abs(theta) < 1.0 and m is not None and m[4] < 0:
        return ("vflip",)
    return ()


def apply_orientation(img: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """``img`` (H, W[, C]) turned by :func:`orientation`'s ``steps``; C-contiguous."""
    for step in steps:
        if step == "cw":
            img = np.rot90(img, -1)
        elif step == "ccw":
            img = np.rot90(img, 1)
        elif step == "transpose":  # ffmpeg transpose=cclock_flip
            img = img.swapaxes(0, 1)
        elif step == "antitranspose":  # ffmpeg transpose=clock_flip
            img = img[::-1, ::-1].swapaxes(0, 1)
        elif step == "hflip":
            img = img[:, ::-1]
        elif step == "vflip":
            img = img[::-1]
        else:
            raise ValueError(f"unknown orientation step {step!r}")
    return np.ascontiguousarray(img)


def _to_rgb(frame: Any, sar: Fraction | None = None) -> np.ndarray:
    # PyAV passes "unspecified" range to swscale (read as limited); say so when it is full ("pc")
    kw: dict[str, Any] = {"src_color_range": 2} if frame.color_range == 2 else {}
    if sar is not None:  # anamorphic: stretch to the display aspect in the same swscale pass
        kw["width"], kw["height"] = display_size(frame.width, frame.height, sar)
        kw["interpolation"] = "BICUBIC"
    img = frame.to_ndarray(format="rgb24", **kw)
    matrix = _display_matrix(frame)
    if matrix is not None:
        steps = orientation(frame.rotation, matrix)
        if steps:
            return apply_orientation(img, steps)
    return np.ascontiguousarray(img)


def _ms(t: float) -> int:
    return int(round(float(t) * 1000))


def _check_sampling(every: float, start: float, skip_similar: int | None) -> tuple[float, float, int | None]:
    """The sampling options checked by their rules (:mod:`animeid.options`; :class:`ConfigError`)."""
    from . import options as o

    return (o.SECONDS.check("every", every), o.number(0.0, what="seconds").check("start", start),
            o.whole(0, o.MAX_HASH_BITS, optional=True).check("skip_similar", skip_similar))


def sample_frames(path: str | os.PathLike, every: float = 5.0, *, start: float = 0.0,
                  skip_similar: int | None = None, seek: bool = True,
                  skip_times: Iterable[float] = (), stats: SampleStats | None = None,
                  stop: float | None = None, similar_restart: float | None = None) -> Iterator[Frame]:
    """Yield one :class:`Frame` per target time ``start, start + every, ...`` of ``path``.

    See the module docstring for the exact rule, seeking, ``skip_similar``, ``skip_times``,
    ``stop`` and ``similar_restart``. The file is opened by this call: a missing, empty or non-video file raises
    :class:`InputError` here; a file whose frames do not decode raises it at the first
    ``next()``; the file is closed when the iteration ends or the iterator is closed (or
    garbage-collected). Raises
    :class:`PartialVideoError` after the last frame when the video breaks off part way.
    ``stats`` (optional) is updated as frames are produced.
    """
    every, start, skip_similar = _check_sampling(every, start, skip_similar)
    from . import options as o

    stop = o.number(0.0, what="seconds", optional=True).check("stop", stop)
    similar_restart = o.number(0.0, lo_open=True, what="seconds", optional=True).check(
        "similar_restart", similar_restart)
    p = check_file(path, "a video", InputError)
    known = {_ms(t) for t in skip_times}
    st = stats if stats is not None else SampleStats()
    span = (None if stop is None else float(stop), None if similar_restart is None else float(similar_restart))
    if p.suffix.lower() not in VIDEO_EXTS and frame_count(p) > 1:
        # an animated picture (GIF, WebP, APNG, ...): its frames, read by Pillow, as a short video
        return _run_animation(p, float(every), float(start), skip_similar, known, st, span)
    dec = _Decoder(p)  # opened now, so that a bad file fails at the call; closed when the loop ends
    return _run(dec, p, float(every), float(start), skip_similar, seek, known, st, span)


def _chain_part(t: float, similar_restart: float | None) -> int:
    """Which part of the video sample time ``t`` lies in, for ``similar_restart`` (0 when None)."""
    return 0 if similar_restart is None else math.floor((t + _EPS) / similar_restart)


def _run_animation(p: Path, every: float, start: float, skip_similar: int | None, known: set[int],
                   st: SampleStats, span: tuple[float | None, float | None] = (None, None)) -> Iterator[Frame]:
    """:func:`sample_frames`' rule over an animated picture's frames (times from their durations): at
    each sample time, the frame on screen then (the last one starting at or before it), as for videos."""
    import imagehash

    stop, chain_every = span
    frames = [(t, np.array(img)) for _, t, img in iter_frames(p)]     # copies: iter_frames may reuse its picture
    st.decoded += len(frames)
    if not frames:
        return
    st.last_time = frames[-1][0]
    last_len = frames[-1][0] - frames[-2][0] if len(frames) > 1 else every
    end = frames[-1][0] + max(last_len, 1e-3)          # the last frame stays on screen as long as the one before
    prev_hash: Any = None
    part = None
    j = 0
    k = 0
    while True:
        target = start + k * every
        if target >= end - _EPS or (stop is not None and target >= stop - _EPS):
            break
        while j + 1 < len(frames) and frames[j + 1][0] <= target + _EPS:
            j += 1
        t, img = frames[j]
        index, k = k, k + 1
        if _chain_part(target, chain_every) != part:
            part, prev_hash = _chain_part(target, chain_every), None
        h = None
        if skip_similar is not None:
            small = Image.fromarray(img).convert("L").resize((64, 64), Image.BOX)
            h = imagehash.dhash(small, hash_size=8)
        if _ms(target) in known:
            st.skipped_known += 1
            prev_hash = h
            continue
        if h is not None:
            if prev_hash is not None and h - prev_hash <= skip_similar:
                st.skipped_similar += 1
                continue
            prev_hash = h
        st.yielded += 1
        yield Frame(time=target, index=index, image=img, frame_time=t)


def _in_lost_stretch(dec: _Decoder, held: tuple[Any, float] | None, ahead: tuple[Any, float] | None,
                     target: float) -> bool:
    """Whether ``target`` falls in a stretch lost to damage: the decoder met damaged data between the
    held frame and the next one, and the target lies past the held frame's own duration (showing it
    there would repeat a frame over a hole, as a held frame of an intact file may be shown)."""
    if dec.error is None or dec.error_time is None or held is None or ahead is None:
        return False
    step = dec.frame_duration(held[0])
    # the error came just before the held frame or after it (decoders hand out frames a little late),
    # before the next frame, and the two lie more than a few frames apart
    near = held[1] - max(2.0, 8 * step) <= dec.error_time < ahead[1] and ahead[1] - held[1] > 3 * step
    return near and target >= held[1] + step - _EPS


def _run(dec: _Decoder, p: Path, every: float, start: float, skip_similar: int | None, seek: bool,
         known: set[int], st: SampleStats, span: tuple[float | None, float | None] = (None, None)) -> Iterator[Frame]:
    stop, chain_every = span
    stopped = False  # sampling reached ``stop`` (a segment's end), not the video's end
    part = None  # the similar_restart part of the previous target
    try:
        seeking = seek
        last: float | None = None  # time of the last decoded frame (the held one or the one ahead)
        held: tuple[Any, float] | None = None  # (frame, time): the last decoded frame at or before the target
        ahead: tuple[Any, float] | None = None  # a decoded frame after the target, kept for later targets
        ended = False  # the decoder has nothing more (end of stream or of what could be read)
        k = 0  # number of the target
        prev_hash: Any = None  # hash of the previous kept frame
        prev_pending: Any = None  # or the previous kept frame itself, hashed when needed
        prev_shown: Any = None  # the frame shown at the previous target (a held frame repeats)
        prev_image: np.ndarray | None = None  # its picture, when it was converted
        frames = dec.frames()
        check_landing = False
        while True:
            target = start + k * every
            if stop is not None and target >= stop - _EPS:
                stopped = True
                break
            if ahead is None or ahead[1] <= target + _EPS:  # the frame shown at target is not decoded yet
                done = last if last is not None else 0.0
                if seeking and not ended and target - done > SEEK_MIN_GAP:
                    key = dec.keyframe_before(target)
                    if key is None:  # this file cannot seek to keyframes: decode every frame
                        seeking = False
                    elif done < key <= target + _EPS:  # else seeking would only re-decode frames
                        try:
                            dec.seek(target)
                        except (av.error.FFmpegError, OSError, ValueError):
                            seeking = False
                            st.linear_fallback = True
                            dec.reopen()
                            last = None
                        else:
                            st.seeks += 1
                            check_landing = True
                        held = ahead = None  # the frame shown at target lies at or after the keyframe
                        frames = dec.frames()
                if ahead is not None:
                    held, ahead = ahead, None
                restart = False
                got = False
                for avf in frames:
                    t = dec.time(avf)
                    if check_landing:
                        check_landing = False
                        if not dec.landed_on_key or dec.synthetic_pts or t > target + _EPS:
                            # not on a keyframe, or past the target (the frame shown at the target
                            # may lie before): start again from the top, decoding every frame
                            restart = True
                            break
                    if dec.synthetic_pts:
                        seeking = False
                    if last is not None and t <= last:
                        continue
                    last = t
                    st.last_time = t
                    if t > target + _EPS:
                        ahead = (avf, t)
                        got = True
                        break
                    held = (avf, t)
                    if t >= target - _EPS:  # starts at the target: shown there, whatever follows
                        got = True
                        break
                else:
                    ended = not restart
                st.decoded = dec.decoded
                if restart or check_landing:  # a bad landing, or nothing at all decoded after a seek
                    check_landing = False
                    seeking = False
                    st.linear_fallback = True
                    dec.reopen()
                    frames = dec.frames()
                    last = None
                    held = ahead = None
                    ended = False
                    continue
                if not got:
                    ended = True
            shown = held if held is not None else ahead  # before the first frame: the first frame
            if shown is None:
                break  # nothing decoded at all
            if ended and ahead is None and target >= held[1] + dec.frame_duration(held[0]) - _EPS:
                break  # past the end of the last frame
            k += 1
            if _in_lost_stretch(dec, held, ahead, target):   # the held frame would be repeated over the hole
                st.lost += 1
                st.lost_span = (held[1], ahead[1])
                continue
            avf = shown[0]
            if _chain_part(target, chain_every) != part:  # the skip_similar chain starts again here
                part, prev_hash, prev_pending = _chain_part(target, chain_every), None, None
            if _ms(target) in known:
                st.skipped_known += 1
                if skip_similar is not None:
                    prev_hash, prev_pending = None, avf
                prev_shown, prev_image = avf, None
                continue
            if skip_similar is not None:
                h = _dhash(avf)
                if prev_pending is not None:
                    prev_hash, prev_pending = _dhash(prev_pending), None
                if prev_hash is not None and h - prev_hash <= skip_similar:
                    st.skipped_similar += 1
                    prev_shown, prev_image = avf, None
                    continue
                prev_hash = h
            image = prev_image if avf is prev_shown and prev_image is not None else dec.to_rgb(avf)
            prev_shown, prev_image = avf, image
            st.yielded += 1
            yield Frame(time=target, index=k - 1, image=image, frame_time=shown[1])
        st.decoded = dec.decoded
        last = st.last_time
        if dec.decoded == 0 or last is None:
            why = f" ({dec.error})" if dec.error else ""
            raise InputError(f"corrupt video: no frame decodes{why}", p)
        why = dec.error
        end = dec.expected_end()
        if why is None and not stopped and end is not None and last < end - dec.end_tolerance():
            why = f"the file says it lasts {end:.3f} s: truncated?"
        if why is not None:
            st.partial = True
            st.error = why
            at = (dec.error_time if dec.error_time is not None else 0.0) if dec.error is not None else last
            st.damaged_at = at
            if at < last:  # damaged data was skipped over and decoding went on
                msg = (f"video is damaged ({why}): damaged data after {at:.3f} s was skipped and decoding "
                       f"went on to {last:.3f} s; {plural(st.yielded, 'frame')} sampled, from before and after "
                       f"the damage (those just after it may be garbled)")
                if st.lost_span is not None:
                    msg += (f"; no frame decodes from {st.lost_span[0]:.3f} to {st.lost_span[1]:.3f} s: "
                            f"{plural(st.lost, 'sample time')} there left out")
            else:
                msg = (f"video is truncated or damaged ({why}); it breaks off at {last:.3f} s: "
                       f"{plural(st.yielded, 'frame')} sampled, all from before the break")
            raise PartialVideoError(msg, p, frames=st.yielded, time=last, damaged_at=st.damaged_at)
    finally:
        dec.close()


# ----------------------------------------------------------------------------- file names

_MAX_STEM_BYTES = 180  # leaves room for "_t0000m00.000s.jpeg" and "~2" under the usual 255-byte limit
_FRAME_NAME = re.compile(r"^(?P<stem>.*)_t(?P<m>\d{4,})m(?P<s>\d{2})\.(?P<ms>\d{3})s(?P<ext>\.[^.]*)?$")


def _safe_stem(stem: str) -> str:
    """``stem`` made safe as (part of) a file name on Linux, macOS and Windows; Unicode kept
    (:func:`animeid.names.safe_stem`, at most 180 UTF-8 bytes)."""
    return safe_stem(stem, _MAX_STEM_BYTES, fallback="video")


def _name(stem: str, time: float, ext: str) -> str:
    if not math.isfinite(time) or time < 0:
        raise ValueError(f"a frame time must be a finite number >= 0, got {time!r}")
    ms = _ms(time)
    minutes, rest = divmod(ms, 60_000)
    if ext and not ext.startswith("."):
        ext = "." + ext
    return f"{stem}_t{minutes:04d}m{rest // 1000:02d}.{rest % 1000:03d}s{ext}"


def frame_name(source: str | os.PathLike, time: float, ext: str = ".jpg") -> str:
    """File name for the frame of ``source`` at ``time`` s: ``episode01_t0000m05.000s.jpg``.

    The source's stem (NFC-normalised Unicode; ``<>:"/\\|?*``, control characters and leading
    dots replaced or removed; cut to 180 UTF-8 bytes) + ``_t`` + minutes (4 digits or more) +
    ``m`` + seconds with milliseconds + ``s`` + ``ext``. Names of one source sort in time order
    up to 10,000 minutes. Times are rounded to the millisecond.
    """
    return _name(_safe_stem(Path(os.fspath(source)).stem), time, ext)


def parse_frame_name(name: str | os.PathLike) -> tuple[str, float] | None:
    """``(stem, time)`` from a name made by :func:`frame_name`, ``None`` for other names."""
    m = _FRAME_NAME.match(Path(os.fspath(name)).name)
    if m is None:
        return None
    ms = int(m["m"]) * 60_000 + int(m["s"]) * 1000 + int(m["ms"])
    return m["stem"], ms / 1000


# ----------------------------------------------------------------------------- writing frames

def write_frames(videos: Sequence[str | os.PathLike], every: float, out: str | os.PathLike, *,
                 skip_similar: int | None = None, start: float = 0.0, ext: str = ".jpg",
                 quality: int = 95, seek: bool = True, resume: bool = True) -> dict:
    """Sample each video every ``every`` seconds into the folder ``out`` (one flat folder).

    Files are named by :func:`frame_name` and written atomically. Two videos whose stems clash
    (also ignoring case) get ``~2``, ``~3``, ... after the stem, in the order given. With
    ``resume`` (default), frames already in ``out`` under a video's names are not redone (see
    ``skip_times`` in :func:`sample_frames`), so an interrupted run can simply be repeated.
    A video that cannot be read is recorded and the next one is done.

    Returns ``{"out", "every", "skip_similar", "written", "existing", "skipped_similar",
    "ok", "partial", "failed", "videos": [{"path", "stem", "status": "ok" | "partial" |
    "failed", "written", "existing", "skipped_similar", "error"}, ...]}``. A ``partial`` video
    broke off part way: its frames before the break are written.

    ``out`` is claimed by :func:`animeid.outputs.prepare_output_dir` first: a new or empty folder,
    or an earlier ``frames`` output holding nothing else (more frames are added to it); a folder
    holding files animeid did not write there, a workspace or a folder holding the videos is
    refused (:class:`~animeid.errors.OutputError`) before any video is read.
    """
    from .outputs import prepare_output_dir

    every, start, skip_similar = _check_sampling(every, start, skip_similar)   # before the folder is claimed
    videos = list(videos)
    made = not Path(out).exists()
    od = prepare_output_dir(out, "frames", replace=False, protect=videos)
    out = Path(out)
    done: dict[str, set[float]] = {}
    if resume:
        for f in out.iterdir():
            parsed = parse_frame_name(f.name)
            if parsed is not None and f.suffix.lower() == ext.lower() and f.is_file():
                done.setdefault(parsed[0], set()).add(parsed[1])
    taken: set[str] = set()
    rows = []
    for video in progress(list(videos), desc="videos", unit="video"):
        base = _safe_stem(Path(os.fspath(video)).stem)
        stem, n = base, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{base}~{n}"
        taken.add(stem.casefold())
        known = done.get(stem, set())
        st = SampleStats()
        row: dict[str, Any] = {"path": os.fspath(video), "stem": stem, "status": "ok", "written": 0,
                               "existing": 0, "skipped_similar": 0, "error": None}
        try:
            for fr in sample_frames(video, every, start=start, skip_similar=skip_similar, seek=seek,
                                    skip_times=known, stats=st):
                dest = out / _name(stem, fr.time, ext)
                od.record(dest.name)          # before writing: a run killed midway leaves no unlisted frame
                save_image_atomic(Image.fromarray(fr.image, "RGB"), dest,
                                  **({"quality": quality} if ext.lower() in (".jpg", ".jpeg", ".webp") else {}))
                row["written"] += 1
        except PartialVideoError as e:
            row["status"], row["error"] = "partial", e.message
        except InputError as e:
            row["status"], row["error"] = "failed", e.message   # reported by the caller, from the row
        row["existing"] = st.skipped_known
        row["skipped_similar"] = st.skipped_similar
        rows.append(row)
    if made and not any(r["written"] for r in rows) and not od.files:
        (out / ".animeid-output").unlink(missing_ok=True)      # nothing could be read: no empty folder left
        with contextlib.suppress(OSError):
            out.rmdir()
    return {
        "out": os.fspath(out), "every": every, "skip_similar": skip_similar,
        "written": sum(r["written"] for r in rows), "existing": sum(r["existing"] for r in rows),
        "skipped_similar": sum(r["skipped_similar"] for r in rows),
        "ok": sum(r["status"] == "ok" for r in rows), "partial": sum(r["status"] == "partial" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows), "videos": rows,
    }


# ----------------------------------------------------------------------------- writing videos

_DEFAULT_CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4", ".wmv": "wmv2", ".asf": "wmv2",
                   ".mpg": "mpeg2video", ".mpeg": "mpeg2video", ".vob": "mpeg2video", ".flv": "flv"}


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def write_video(frames: Iterable[Any], path: str | os.PathLike, *, fps: float = 1.0,
                size: tuple[int, int] | None = None, codec: str | None = None, gop: int | None = None,
                options: dict[str, str] | None = None, faststart: bool = False) -> None:
    """Encode ``frames`` (pictures: arrays, PIL images, paths) as a video at ``fps`` frames/s.

    ``size`` ``(W, H)``: picture size (default: the first frame's); frames of another size are
    resized; odd sizes are rounded down to even (4:2:0 chroma). ``codec``: default follows the
    file's ending: ``libx264`` for .mp4/.mkv/.mov/..., ``libvpx-vp9`` for .webm, ``mpeg4`` for
    .avi, and ``mpeg4`` when the default is not built in. ``gop``: largest keyframe interval in
    frames. ``options``: encoder options (libx264 defaults to ``preset=veryfast``).
    ``faststart``: put an mp4/mov index at the front. Frame ``i`` gets time ``i / fps``.
    The file appears complete or not at all (written beside, then renamed).
    """
    path = Path(path)
    ext = path.suffix.lower()
    rate = Fraction(fps).limit_denominator(100_000) if not isinstance(fps, Fraction) else fps
    if rate <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    codec = codec or _DEFAULT_CODECS.get(ext, "libx264")
    if not _encoder_available(codec):
        codec = "mpeg4"
    opts = {"preset": "veryfast"} if codec == "libx264" else {}
    if codec in ("libvpx-vp9", "libvpx"):
        opts = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}
    opts.update(options or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{fit_bytes(path.stem, 200)}.", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        try:
            container = av.open(tmp, "w", options={"movflags": "+faststart"} if faststart else {})
        except (av.error.FFmpegError, ValueError) as e:
            raise ValueError(f"{path}: cannot write a video with this name ({_av_message(e)})") from e
        try:
            stream = None
            w = h = 0
            for i, picture in enumerate(frames):
                arr = to_array(picture)
                if arr.ndim == 2:
                    arr = np.repeat(arr[:, :, None], 3, axis=2)
                if stream is None:
                    w, h = size if size is not None else (arr.shape[1], arr.shape[0])
                    w, h = max(2, int(w) // 2 * 2), max(2, int(h) // 2 * 2)
                    stream = container.add_stream(codec, rate=rate, options=opts)
                    stream.width, stream.height = w, h
                    stream.pix_fmt = "yuv420p"
                    if gop is not None:
                        stream.codec_context.gop_size = int(gop)
                    if codec not in ("libx264", "libvpx-vp9", "libvpx"):
                        stream.codec_context.bit_rate = max(2_000_000, int(w * h * float(rate) * 2))
                if arr.shape[:2] != (h, w):
                    arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR))
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                vf.pts = i
                vf.time_base = 1 / rate
                for packet in stream.encode(vf):
                    container.mux(packet)
            if stream is None:
                raise ValueError("write_video needs at least one frame")
            for packet in stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
