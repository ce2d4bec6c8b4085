"""animeid.video: probing, sampling (times, content, seek == linear), names, bad input, writing.

Videos are built in temporary folders with write_video. Each frame shows its own number in
binary as 10 vertical stripes (dark = 0, light = 1), so a test can read back WHICH frame the
sampler took, whatever the codec did to the pixels.
"""
from __future__ import annotations

import logging
import math
import os
import unicodedata
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from animeid.errors import InputError
from animeid.outputs import MARKER
from animeid.video import (
    VIDEO_EXTS,
    Frame,
    PartialVideoError,
    SampleStats,
    VideoInfo,
    frame_name,
    is_video_file,
    parse_frame_name,
    probe,
    sample_frames,
    write_frames,
    write_video,
)

W, H = 320, 240
BITS = 10


def counter(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A picture that shows the number ``i`` (< 1024) as stripes."""
    a = np.full((h, w, 3), 30, np.uint8)
    sw = w // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            a[:, b * sw:(b + 1) * sw] = 225
    a[:, :, 2] = 128  # some colour, so RGB order matters
    return a


def read_counter(img: np.ndarray) -> int:
    sw = img.shape[1] // BITS
    return sum(1 << b for b in range(BITS) if img[:, b * sw:(b + 1) * sw, 0].mean() > 128)


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def expected(n_frames: int, fps: float, every: float, start: float = 0.0) -> list[tuple[int, int]]:
    """The documented rule (ffmpeg's fps=1/every), on frames at i / fps, each shown for 1 / fps:
    [(frame number, index), ...] -- at sample time start + k * every, the last frame whose time is
    at or before it, for every sample time before the end of the last frame."""
    out, k = [], 0
    while (t := start + k * every) < n_frames / fps - 1e-6:
        out.append((min(n_frames - 1, math.floor(t * fps + 1e-6)), k))
        k += 1
    return out


def summary(frames: list[Frame]) -> list[tuple[float, int, int]]:
    return [(f.time, f.index, read_counter(f.image)) for f in frames]


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> Path:
    """Videos shared by the tests of this module (built once, ~1 s)."""
    d = tmp_path_factory.mktemp("videos")
    write_video((counter(i) for i in range(23)), d / "sec23.mp4", fps=1)  # 23 s, one picture a second
    write_video((counter(i) for i in range(23)), d / "sec23.mkv", fps=1)
    write_video((counter(i) for i in range(20 * 24)), d / "f24.mp4", fps=24, gop=12)  # 20 s at 24 fps
    write_video((counter(i) for i in range(20 * 4)), d / "q4.mkv", fps=4, gop=8)
    write_video((counter(i) for i in range(20 * 4)), d / "q4fs.mp4", fps=4, gop=8, faststart=True)
    write_video((counter(i) for i in range(20 * 4)), d / "q4.mp4", fps=4, gop=8)
    return d


# ----------------------------------------------------------------------------- names, probe

def test_is_video_file():
    for ext in (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".wmv", ".ts", ".mpg", ".mpeg"):
        assert ext in VIDEO_EXTS
        assert is_video_file(f"a/b/episode{ext.upper()}")
    assert not is_video_file("x.jpg") and not is_video_file("x.txt") and not is_video_file("mp4")


def test_probe_fields(vids):
    info = probe(vids / "sec23.mp4")
    assert isinstance(info, VideoInfo)
    assert info.path == os.fspath(vids / "sec23.mp4")
    assert (info.width, info.height, info.codec) == (W, H, "h264")
    assert info.duration == pytest.approx(23.0, abs=0.05)
    assert info.fps == pytest.approx(1.0)
    assert info.frames == 23
    mkv = probe(vids / "sec23.mkv")
    assert mkv.duration == pytest.approx(23.0, abs=0.05) and mkv.frames is None  # mkv has no count
    with pytest.raises(Exception):
        info.width = 1  # frozen


def test_frame_name_format_and_order():
    assert frame_name("videos/episode01.mkv", 5) == "episode01_t0000m05.000s.jpg"
    assert frame_name(Path("ep.02.mp4"), 61.5, ".png") == "ep.02_t0001m01.500s.png"
    assert frame_name("ep", 3725.0004, "webp") == "ep_t0062m05.000s.webp"  # ms rounding, dot added
    times = [0, 0.001, 5, 9.999, 10, 59.9994, 60, 61.5, 599, 3600, 7325.25, 36000]
    names = [frame_name("ep01.mkv", t) for t in times]
    assert sorted(names) == names  # sorts in time order
    assert [parse_frame_name(n) for n in names] == [("ep01", round(t, 3)) for t in times]
    assert parse_frame_name("holiday.jpg") is None
    with pytest.raises(ValueError):
        frame_name("ep.mkv", -1)


def test_frame_name_unicode_and_unsafe_stems():
    jp = frame_name("アニメ/第1話「始まり」.mkv", 5)
    assert jp == "第1話「始まり」_t0000m05.000s.jpg"
    decomposed = unicodedata.normalize("NFD", "Pokémon.mp4")
    assert frame_name(decomposed, 0) == unicodedata.normalize("NFC", "Pokémon_t0000m00.000s.jpg")
    for bad in ['ep:1?.mkv', 'a<b>c|d*e".mp4', "tab\there.mp4", ".hidden.mp4", "...mp4", "CON.mp4", "nul.avi"]:
        name = frame_name(bad, 1)
        assert not any(c in name for c in '<>:"/\\|?*\t'), name
        assert not name.startswith(".") and name.split("_t")[0] not in ("", "CON", "nul"), name
    assert frame_name("CON.mp4", 1).startswith("CON_")
    long = frame_name("話" * 200 + ".mkv", 1)
    assert len(long.encode("utf-8")) <= 255
    long.encode("utf-8").decode("utf-8")  # no cut character


# ----------------------------------------------------------------------------- sampling rule

def test_sample_times_and_content(vids):
    frames = list(sample_frames(vids / "sec23.mp4", every=5))
    assert summary(frames) == [(0.0, 0, 0), (5.0, 1, 5), (10.0, 2, 10), (15.0, 3, 15), (20.0, 4, 20)]
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 and f.image.flags["C_CONTIGUOUS"]
        assert f.image[..., 2].mean() == pytest.approx(128, abs=8)  # RGB, not BGR
    # every second, and an `every` that does not divide the length
    assert [f.time for f in sample_frames(vids / "sec23.mkv", 1)] == [float(i) for i in range(23)]
    assert summary(list(sample_frames(vids / "sec23.mkv", 7))) == [(0.0, 0, 0), (7.0, 1, 7), (14.0, 2, 14), (21.0, 3, 21)]


@pytest.mark.parametrize("every,start", [(5, 0), (2.5, 1.3), (0.3, 0), (1 / 3, 2), (7, 12)])
def test_sample_rule_at_24fps(vids, every, start):
    frames = list(sample_frames(vids / "f24.mp4", every, start=start))
    got = summary(frames)
    want = expected(20 * 24, 24, every, start)
    assert [(n, i) for _, i, n in got] == [(n, i) for n, i in want]
    for f in frames:
        assert f.time == pytest.approx(start + f.index * every)  # the sample time
        assert f.frame_time == pytest.approx(read_counter(f.image) / 24, abs=1e-4)  # the frame shown then
        assert f.frame_time <= f.time + 1e-6


def test_frame_held_over_several_targets_repeats(tmp_path):
    """A frame every 10 s, sampled every 5 s: each frame is shown at two sample times (ffmpeg's fps
    filter duplicates it too), up to the end of the last frame (40 s)."""
    p = tmp_path / "slow.mkv"
    write_video((counter(i) for i in range(4)), p, fps=0.1)
    got = summary(list(sample_frames(p, 5)))
    assert got == [(5.0 * k, k, k // 2) for k in range(8)]
    for every in (5, 10, 3):  # the rule holds for seek and linear alike
        assert summary(list(sample_frames(p, every))) == summary(list(sample_frames(p, every, seek=False)))


def test_start_past_the_end_yields_nothing(vids):
    assert list(sample_frames(vids / "sec23.mp4", 5, start=30)) == []


def test_bad_arguments(vids):
    for kw in ({"every": 0}, {"every": -1}, {"every": float("nan")}, {"start": -1}, {"skip_similar": -1}):
        with pytest.raises(ValueError):
            sample_frames(vids / "sec23.mp4", **{"every": 5, **kw})


# ----------------------------------------------------------------------------- seek == linear

CONTAINERS = [
    (".mp4", "libx264"),
    (".mkv", "libx264"),
    (".webm", "libvpx-vp9"),
    (".avi", "mpeg4"),
    (".mov", "mpeg4"),
    (".ts", "libx264"),
]


@pytest.mark.parametrize("ext,codec", CONTAINERS)
def test_seek_equals_linear(tmp_path, ext, codec):
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    p = tmp_path / f"v{ext}"
    n = 16 * 24
    write_video((counter(i) for i in range(n)), p, fps=24, gop=12, codec=codec)
    for every, start in [(5, 0), (2.5, 1.3), (1.7, 0.5)]:
        s_seek, s_lin = SampleStats(), SampleStats()
        a = list(sample_frames(p, every, start=start, seek=True, stats=s_seek))
        b = list(sample_frames(p, every, start=start, seek=False, stats=s_lin))
        assert [(f.time, f.index) for f in a] == [(f.time, f.index) for f in b]
        assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))  # bit-identical pictures
        want = expected(n, 24, every, start)
        assert [(read_counter(f.image), f.index) for f in b] == want
        assert s_lin.seeks == 0 and s_lin.decoded == n
        assert s_seek.decoded <= n and not s_seek.linear_fallback  # seeking never costs extra work
        if ext in (".mp4", ".mkv", ".webm", ".avi", ".mov"):  # containers with a keyframe index
            assert s_seek.seeks > 0
            assert s_seek.decoded < n / 2  # seeking really skipped work
        else:  # MPEG-TS: no index, decoded linearly from the start
            assert s_seek.seeks == 0


def test_seek_with_sparse_keyframes_is_still_identical(tmp_path):
    p = tmp_path / "sparse.mp4"
    n = 20 * 24
    write_video((counter(i) for i in range(n)), p, fps=24, gop=200)  # a keyframe every 8.3 s
    for every in (2.5, 9):
        st = SampleStats()
        a = list(sample_frames(p, every, seek=True, stats=st))
        b = list(sample_frames(p, every, seek=False))
        assert summary(a) == summary(b)
        assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
        assert st.decoded <= n  # seeks only where a keyframe lies past the last decoded frame


def test_seek_safety_net(vids, monkeypatch):
    """A container whose index is off (the seek lands past the target): reopen, decode linearly."""
    from animeid import video

    real_seek = video._Decoder.seek
    monkeypatch.setattr(video._Decoder, "seek", lambda self, t: real_seek(self, t + 2.0))
    st = SampleStats()
    a = list(sample_frames(vids / "f24.mp4", 5, start=1, stats=st))
    monkeypatch.undo()
    b = list(sample_frames(vids / "f24.mp4", 5, start=1, seek=False))
    assert st.linear_fallback and st.seeks == 1
    assert summary(a) == summary(b) and all(np.array_equal(x.image, y.image) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- skip_similar / skip_times

@pytest.fixture(scope="module")
def scenes_video(tmp_path_factory) -> Path:
    """23 s at 1 fps: scene A for 0-9 s, B 10-14 s, A again 15-19 s, C 20-22 s."""
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1) for _ in range(3)]
    plan = [0] * 10 + [1] * 5 + [0] * 5 + [2] * 3
    p = tmp_path_factory.mktemp("scenes") / "scenes.mkv"
    write_video([scenes[s] for s in plan], p, fps=1)
    return p


def test_skip_similar_drops_static_repeats(scenes_video):
    assert len(list(sample_frames(scenes_video, 1))) == 23
    st = SampleStats()
    kept = list(sample_frames(scenes_video, 1, skip_similar=4, stats=st))
    # compared with the previous KEPT frame: A comes back at 15 s after B, so it is kept again
    assert [f.time for f in kept] == [0.0, 10.0, 15.0, 20.0]
    assert [f.index for f in kept] == [0, 10, 15, 20]
    assert st.skipped_similar == 19 and st.yielded == 4
    assert [f.time for f in sample_frames(scenes_video, 5, skip_similar=0)] == [0.0, 10.0, 15.0, 20.0]


@pytest.mark.parametrize("skip_similar", [None, 4])
def test_skip_times_resumes_exactly(scenes_video, vids, skip_similar):
    for p, every in ((scenes_video, 1), (vids / "f24.mp4", 0.75)):
        full = list(sample_frames(p, every, skip_similar=skip_similar))
        done = {f.time for f in full[::2]}  # an earlier run wrote every other frame
        st = SampleStats()
        rest = list(sample_frames(p, every, skip_similar=skip_similar, skip_times=done, stats=st))
        assert [(f.time, f.index) for f in rest] == [(f.time, f.index) for f in full if f.time not in done]
        assert st.skipped_known == len(done)
    # rounded to the millisecond, like the file names
    got = [f.time for f in sample_frames(vids / "f24.mp4", 5, skip_times=[5.0002, 9.9996])]
    assert got == [0.0, 15.0]


# ----------------------------------------------------------------------------- bad input

def _assert_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert isinstance(exc.value, InputError)
    assert exc.value.path == os.fspath(path) and os.fspath(path) in str(exc.value)
    assert not isinstance(exc.value, av.error.FFmpegError)


def _cut(src: Path, dst: Path, frac: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * frac)])
    return dst


def _audio_only(path: Path) -> Path:
    with av.open(os.fspath(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def bad_files(d: Path, vids: Path) -> dict[str, Path]:
    files = {"missing": d / "nope.mp4", "folder": d, "empty": d / "empty.mp4", "text": d / "notes.mp4",
             "text_txt": d / "notes.txt", "jpeg": d / "pic.mp4", "png": d / "pic2.mkv", "random": d / "random.mkv"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a video\n" * 50)
    files["text_txt"].write_text("not a video\n" * 50)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(files["jpeg"], format="JPEG")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(files["png"], format="PNG")
    files["random"].write_bytes(np.random.default_rng(1).bytes(20_000))
    files["audio"] = _audio_only(d / "audio.mkv")
    files["mp4_cut"] = _cut(vids / "q4.mp4", d / "cut.mp4", 0.5)  # index at the end: nothing readable
    files["mkv_stub"] = _cut(vids / "q4.mkv", d / "stub.mkv", 0.02)  # header only, no frame
    return files


@pytest.mark.parametrize("case", ["missing", "folder", "empty", "text", "text_txt", "jpeg", "png", "random",
                                  "audio", "mp4_cut", "mkv_stub"])
def test_bad_input_raises_input_error(tmp_path, vids, case):
    p = bad_files(tmp_path, vids)[case]
    with pytest.raises(InputError) as e:
        probe(p)
    _assert_names(e, p)
    with pytest.raises(InputError) as e:
        list(sample_frames(p, 1))
    _assert_names(e, p)
    assert not isinstance(e.value, PartialVideoError)
    with pytest.raises(InputError) as e:
        list(sample_frames(p, 1, seek=False))
    _assert_names(e, p)


@pytest.mark.parametrize("name", ["q4.mkv", "q4fs.mp4"])
def test_truncated_video_keeps_its_first_part(tmp_path, vids, caplog, name):
    p = _cut(vids / name, tmp_path / f"half_{name}", 0.5)
    for seek in (True, False):
        got: list[Frame] = []
        st = SampleStats()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="animeid"):
            with pytest.raises(PartialVideoError) as e:
                for f in sample_frames(p, 2, seek=seek, stats=st):
                    got.append(f)
        _assert_names(e, p)
        assert len(got) >= 2 and e.value.frames == len(got) and st.partial
        assert [(f.time, read_counter(f.image)) for f in got] == [(2.0 * k, 8 * k) for k in range(len(got))]
        assert e.value.time is not None and e.value.time < 15
        assert e.value.damaged_at == pytest.approx(e.value.time, abs=0.5)  # cut: nothing after the break
        # the exception is the report: nothing is logged as well (a CLI would print it twice)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_whole_video_is_not_partial(vids):
    for name in ("q4.mkv", "q4fs.mp4", "q4.mp4", "sec23.mp4"):
        st = SampleStats()
        list(sample_frames(vids / name, 2, stats=st))
        assert not st.partial and st.error is None


# ----------------------------------------------------------------------------- write_frames, write_video

def test_write_frames_summary_and_resume(tmp_path, vids, scenes_video):
    other = tmp_path / "season2"
    other.mkdir()
    (other / "sec23.mp4").write_bytes((vids / "sec23.mp4").read_bytes())  # same stem, other folder
    (tmp_path / "broken.mp4").write_text("nope")
    half = _cut(vids / "q4.mkv", tmp_path / "half.mkv", 0.5)
    videos = [vids / "sec23.mp4", other / "sec23.mp4", scenes_video, tmp_path / "broken.mp4", half]
    out = tmp_path / "frames"
    r = write_frames(videos, 5, out, skip_similar=None)
    rows = {v["stem"]: v for v in r["videos"]}
    assert list(rows) == ["sec23", "sec23~2", "scenes", "broken", "half"]
    assert rows["sec23"]["written"] == rows["sec23~2"]["written"] == 5
    assert rows["broken"]["status"] == "failed" and "not a readable video" in rows["broken"]["error"]
    assert rows["half"]["status"] == "partial" and rows["half"]["written"] >= 1
    assert (r["ok"], r["partial"], r["failed"]) == (3, 1, 1)
    files = sorted(f.name for f in out.iterdir() if f.name != MARKER)   # the marker: outputs.prepare_output_dir
    assert not any(f.startswith(".") for f in files)  # no temporary files left
    assert "sec23_t0000m05.000s.jpg" in files and "sec23~2_t0000m20.000s.jpg" in files
    assert len(files) == r["written"]
    img = np.asarray(Image.open(out / "sec23_t0000m10.000s.jpg"))
    assert img.shape == (H, W, 3) and read_counter(img) == 10
    # interrupted run: remove some frames, run again: only those are written
    for f in files[1:6]:
        (out / f).unlink()
    r2 = write_frames(videos, 5, out)
    assert r2["written"] == 5 and r2["existing"] == len(files) - 5
    assert sorted(f.name for f in out.iterdir() if f.name != MARKER) == files


def test_unicode_video_name(tmp_path, vids):
    p = tmp_path / "第1話「始まり」.mkv"
    p.write_bytes((vids / "sec23.mkv").read_bytes())
    assert probe(p).width == W
    r = write_frames([p], 10, tmp_path / "out")
    assert r["written"] == 3
    assert sorted(f.name for f in (tmp_path / "out").iterdir() if f.name != MARKER) == [
        "第1話「始まり」_t0000m00.000s.jpg", "第1話「始まり」_t0000m10.000s.jpg", "第1話「始まり」_t0000m20.000s.jpg"]


def test_write_frames_skip_similar(tmp_path, scenes_video):
    r = write_frames([scenes_video], 1, tmp_path / "o", skip_similar=4)
    assert r["written"] == 4 and r["skipped_similar"] == 19
    again = write_frames([scenes_video], 1, tmp_path / "o", skip_similar=4)
    assert again["written"] == 0 and again["existing"] == 4 and again["skipped_similar"] == 19


def test_write_video_sizes_and_inputs(tmp_path):
    p = tmp_path / "mixed.mp4"
    pics = [counter(0), Image.fromarray(counter(1)), counter(2, 160, 120), counter(3)[:, :, 0]]
    write_video(pics, p, fps=2, size=(321, 241))  # odd: rounded down to even
    info = probe(p)
    assert (info.width, info.height) == (320, 240) and info.frames == 4
    got = list(sample_frames(p, 0.5))
    assert [f.time for f in got] == [0.0, 0.5, 1.0, 1.5]
    assert [read_counter(f.image) for f in got[:3]] == [0, 1, 2]
    with pytest.raises(ValueError):
        write_video([], tmp_path / "none.mp4")
    assert sorted(os.listdir(tmp_path)) == ["mixed.mp4"]  # nothing left by the failed write


def test_write_video_fractional_rate(tmp_path):
    p = tmp_path / "ntsc.mkv"
    write_video((counter(i) for i in range(48)), p, fps=Fraction(24000, 1001))
    info = probe(p)
    assert info.fps == pytest.approx(23.976, abs=1e-3)
    got = list(sample_frames(p, 1))
    # frame 24 starts at 1.001 s, so frame 23 is shown at 1 s; frame 47 is shown until 2.002 s
    assert [read_counter(f.image) for f in got] == [0, 23, 47]
    for f in got:
        assert f.frame_time == pytest.approx(read_counter(f.image) * 1001 / 24000, abs=2e-3)
        assert f.time == f.index and f.frame_time <= f.time


# ----------------------------------------------------------------------------- variable frame rate

def write_timed(path: Path, shows: list[tuple[float, np.ndarray]], *, codec: str = "libx264",
                rotation: int | None = None, hflip: bool = False, sar: Fraction | None = None) -> Path:
    """A video whose pictures start at the given times (s, in a 1/1000 time base): a variable frame
    rate. ``rotation``/``hflip``: a display matrix (PyAV's set_display_rotation); ``sar``: pixel shape."""
    tb = Fraction(1, 1000)
    with av.open(os.fspath(path), "w") as c:
        h, w = shows[0][1].shape[:2]
        s = c.add_stream(codec, rate=1)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = tb
        s.time_base = tb
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        if rotation is not None or hflip:
            s.set_display_rotation(rotation or 0, hflip=hflip)
        for t, img in shows:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts, vf.time_base = round(t * 1000), tb
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def test_variable_frame_rate_takes_the_frame_shown_at_each_sample_time(tmp_path):
    """The issue's file: frame 1 is shown from 2 s to 14 s. Sampled every 5 s, it is the picture at
    5 s and at 10 s, as ffmpeg's fps=1/5 gives it (formerly 0, 14, 15 s: it never appeared)."""
    times = [0, 2, 14, 15, 16, 17, 18, 19]
    p = write_timed(tmp_path / "vfr.mkv", [(t, counter(i)) for i, t in enumerate(times)])
    for seek in (True, False):
        got = list(sample_frames(p, 5, seek=seek))
        assert [(f.time, f.index, read_counter(f.image)) for f in got] == [
            (0.0, 0, 0), (5.0, 1, 1), (10.0, 2, 1), (15.0, 3, 3)]
        assert [f.frame_time for f in got] == [0.0, 2.0, 2.0, 15.0]
    # every 2 s: the held frame fills 2..12 s; a sample time that falls on a frame takes that frame
    got = [read_counter(f.image) for f in sample_frames(p, 2)]
    assert got == [0, 1, 1, 1, 1, 1, 1, 2, 4, 6]        # t = 0, 2, 4, ..., 18
    # write_frames names them by sample time; the held frame is written at each sample time it covers
    r = write_frames([p], 5, tmp_path / "out")
    assert r["written"] == 4
    assert sorted(f.name for f in (tmp_path / "out").iterdir() if f.name != MARKER) == [
        f"vfr_t0000m{s:02d}.000s.jpg" for s in (0, 5, 10, 15)]


def test_variable_frame_rate_seek_equals_linear(tmp_path):
    """Dense keyframes and long gaps: the seeking path and linear decoding give the same frames."""
    times, t = [], 0.0
    for i in range(120):                      # 0.25 s steps with a few long holds
        times.append(round(t, 3))
        t += 6.0 if i % 40 == 39 else 0.25
    p = tmp_path / "vfr_gaps.mp4"
    write_timed(p, [(t, counter(i)) for i, t in enumerate(times)])
    for every, start in [(5, 0), (1.7, 0.3), (0.5, 0)]:
        st = SampleStats()
        a = list(sample_frames(p, every, start=start, stats=st))
        b = list(sample_frames(p, every, start=start, seek=False))
        assert [(f.time, f.frame_time) for f in a] == [(f.time, f.frame_time) for f in b]
        assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
        assert not st.linear_fallback
        for f in b:                          # the rule: the last frame starting at or before the sample time
            want = max(i for i, ft in enumerate(times) if ft <= f.time + 1e-6)
            assert read_counter(f.image) == want


# ----------------------------------------------------------------------------- rotation, anamorphic pixels

def _marked(w: int = 320, h: int = 240) -> np.ndarray:
    """Grey with a red block in the top-left corner and a blue one in the top-right corner."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[: h // 4, : w // 4] = (230, 20, 20)
    a[: h // 4, -w // 4:] = (20, 20, 230)
    return a


def _corners(img: np.ndarray) -> dict[str, str]:
    """Which colour sits in each corner: tl, tr, bl, br -> 'red', 'blue' or 'grey'."""
    h, w = img.shape[:2]
    out = {}
    for name, (ys, xs) in {"tl": (slice(0, h // 10), slice(0, w // 10)), "tr": (slice(0, h // 10), slice(-w // 10, None)),
                           "bl": (slice(-h // 10, None), slice(0, w // 10)),
                           "br": (slice(-h // 10, None), slice(-w // 10, None))}.items():
        r, _, b = img[ys, xs].reshape(-1, 3).mean(0)
        out[name] = "red" if r > 180 else "blue" if b > 180 else "grey"
    return out


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv"])
@pytest.mark.parametrize("rotation,hflip,size,corners", [
    # a phone held upright records sideways with "rotate 90 degrees clockwise" (-90 counter-clockwise)
    (-90, False, (240, 320), {"tl": "grey", "tr": "red", "bl": "grey", "br": "blue"}),
    (90, False, (240, 320), {"tl": "blue", "tr": "grey", "bl": "red", "br": "grey"}),
    (180, False, (320, 240), {"tl": "grey", "tr": "grey", "bl": "blue", "br": "red"}),
    (0, True, (320, 240), {"tl": "blue", "tr": "red", "bl": "grey", "br": "grey"}),     # mirrored
])
def test_rotation_metadata_is_applied(tmp_path, ext, rotation, hflip, size, corners):
    p = write_timed(tmp_path / f"phone{ext}", [(t, _marked()) for t in (0, 1, 2)], rotation=rotation, hflip=hflip)
    for seek in (True, False):
        got = list(sample_frames(p, 1, seek=seek))
        assert len(got) == 3
        for f in got:
            assert f.image.shape == (size[1], size[0], 3) and f.image.flags["C_CONTIGUOUS"]
            assert _corners(f.image) == corners
    info = probe(p)
    assert (info.width, info.height) == (320, 240) and info.display_size == size


def test_orientation_steps_follow_ffmpeg_autorotate():
    from animeid.video import apply_orientation, orientation

    one = 1 << 16
    assert orientation(0) == () and orientation(0, [one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == ()
    assert orientation(-90) == ("cw",) and orientation(90) == ("ccw",)
    assert orientation(180) == orientation(-180) == ("hflip", "vflip")
    assert orientation(0, [one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]) == ("vflip",)
    assert orientation(-90, [0, one, 0, one, 0, 0, 0, 0, 1 << 30]) == ("transpose",)
    assert orientation(90, [0, -one, 0, -one, 0, 0, 0, 0, 1 << 30]) == ("antitranspose",)
    assert orientation(45) == ()                                   # not a multiple of 90 degrees: left alone
    a = np.arange(6).reshape(2, 3)
    assert apply_orientation(a, ("cw",)).tolist() == [[3, 0], [4, 1], [5, 2]]
    assert apply_orientation(a, ("ccw",)).tolist() == [[2, 5], [1, 4], [0, 3]]
    assert apply_orientation(a, ("transpose",)).tolist() == [[0, 3], [1, 4], [2, 5]]
    assert apply_orientation(a, ("antitranspose",)).tolist() == [[5, 2], [4, 1], [3, 0]]
    assert apply_orientation(a, ("hflip", "vflip")).tolist() == [[5, 4, 3], [2, 1, 0]]


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_anamorphic_video_is_stretched_to_its_display_aspect(tmp_path, ext):
    """A DVD rip: 720x480 stored, pixels 32:27 wide, shown 16:9 (853x480)."""
    img = np.full((480, 720, 3), 128, np.uint8)
    img[180:300, 300:420] = (230, 20, 20)                  # a 120x120 stored square, 142 wide on screen
    p = write_timed(tmp_path / f"dvd{ext}", [(0, img), (1, img)], sar=Fraction(32, 27))
    got = list(sample_frames(p, 1))
    assert len(got) == 2
    f = got[0].image
    assert f.shape == (480, 853, 3)
    red = np.argwhere(f[:, :, 0] > 180)
    assert red[:, 1].max() - red[:, 1].min() + 1 == pytest.approx(120 * 32 / 27, abs=3)
    assert red[:, 0].max() - red[:, 0].min() + 1 == pytest.approx(120, abs=2)
    info = probe(p)
    assert (info.width, info.height, info.display_size, info.sar) == (720, 480, (853, 480), Fraction(32, 27))
    # square pixels: no resampling at all (the common path does no extra work)
    sq = write_timed(tmp_path / f"square{ext}", [(0, img), (1, img)])
    assert list(sample_frames(sq, 1))[0].image.shape == (480, 720, 3) and probe(sq).sar is None


# ----------------------------------------------------------------------------- damaged data in the middle

def damage_packets(src: Path, dst: Path, t0: float, t1: float) -> Path:
    """A copy of ``src`` whose video packets from t0 to t1 s are overwritten with random bytes (the
    container's structure intact, so decoding can go on after them)."""
    data = bytearray(src.read_bytes())
    with av.open(os.fspath(src)) as c:
        s = c.streams.video[0]
        spans = [(pkt.pos, pkt.size) for pkt in c.demux(s)
                 if pkt.size and pkt.pts is not None and t0 <= float(pkt.pts * pkt.time_base) < t1]
    rng = np.random.default_rng(7)
    for pos, size in spans:
        data[pos:pos + size] = rng.bytes(size)
    dst.write_bytes(bytes(data))
    return dst


def test_damaged_middle_says_frames_after_the_damage_were_read(tmp_path):
    src = tmp_path / "src.mp4"
    write_video((counter(i) for i in range(40)), src, fps=2, gop=4)
    p = damage_packets(src, tmp_path / "damaged.mp4", 8, 10)
    got: list[Frame] = []
    with pytest.raises(PartialVideoError) as e:
        for f in sample_frames(p, 1, seek=False):
            got.append(f)
    assert got[-1].time == 19.0                                  # decoding went on after the damage
    assert e.value.time == 19.5 and 5 <= e.value.damaged_at < 8
    assert "went on to 19.500 s" in e.value.message and "after the damage" in e.value.message
    # a file cut short says the opposite
    mkv = tmp_path / "src.mkv"
    write_video((counter(i) for i in range(40)), mkv, fps=2, gop=4)
    with pytest.raises(PartialVideoError) as e:
        list(sample_frames(_cut(mkv, tmp_path / "cut.mkv", 0.5), 1))
    assert "breaks off" in e.value.message and "all from before the break" in e.value.message
    assert e.value.damaged_at == e.value.time < 15


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_mkv_with_its_middle_bytes_lost_says_so(tmp_path, codec):
    """A Matroska file with a stretch of bytes cut out of its middle: the demuxer only *logs* the damage
    (PyAV raises nothing), skips to the next cluster, and the decoder conceals the loss. The note says
    frames after the gap were read; the intact file gets none. (With mpeg4 no error is raised at all: only
    the frames' corrupt flag tells.)"""
    src = tmp_path / "src.mkv"
    write_video((counter(i) for i in range(100)), src, fps=5, gop=10, codec=codec)
    assert [f.time for f in sample_frames(src, 1)] == [float(t) for t in range(20)]    # intact: no note
    b = src.read_bytes()
    lost = tmp_path / "lost.mkv"
    lost.write_bytes(b[:len(b) * 4 // 10] + b[len(b) * 6 // 10:])
    for seek in (True, False):
        got: list[Frame] = []
        with pytest.raises(PartialVideoError) as e:
            for f in sample_frames(lost, 1, seek=seek):
                got.append(f)
        times = [f.time for f in got]
        assert times[-1] == 19.0 and e.value.damaged_at < 9 and e.value.time > 19
        assert "video is damaged (" in e.value.message and "after the damage" in e.value.message
        # the samples in the lost stretch are left out, not filled with the last frame before it
        missing = [t for t in range(20) if float(t) not in times]
        assert missing == list(range(missing[0], missing[-1] + 1)) and 7 <= missing[0] and missing[-1] <= 15
        assert len(got) == 20 - len(missing)
        assert f"{len(missing)} sample times there left out" in e.value.message


def test_animated_gif_is_sampled_like_a_variable_frame_rate_video(tmp_path):
    # frames of 2 s, 12 s, 1 s, 1 s: the red one is on screen from 2 s to 14 s, so at the samples 5 s and 10 s
    from animeid.video import sample_frames

    colours = ((0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 255))
    frames = [Image.new("RGB", (32, 32), c) for c in colours]
    gif = tmp_path / "vfr.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[2000, 12000, 1000, 1000], loop=0)
    got = [(f.time, f.frame_time, tuple(int(v) for v in f.image[0, 0])) for f in sample_frames(gif, every=5)]
    assert got == [(0.0, 0.0, colours[0]), (5.0, 2.0, colours[1]), (10.0, 2.0, colours[1]), (15.0, 15.0, colours[3])]
