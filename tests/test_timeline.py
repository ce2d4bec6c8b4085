"""animeid.timeline: merging sightings into ranges, unknown faces, progress, partial and bad videos,
the PNG, the CLI; a real model on a video made of real faces.

The helpers :func:`face_frame`, :func:`face_video`, :func:`small_model` and :func:`pick_faces` are
also used by test_serve.py and test_web_e2e.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.errors import InputError
from animeid.timeline import UNKNOWN, build_timeline, face_identity, format_time, merge_sightings, plot_timeline
from animeid.video import write_video

# --------------------------------------------------------------------------- shared helpers

CHARS = ("suzukaze_aoba", "takimoto_hifumi", "yagami_kou")


def face_frame(face: Path | None, size: tuple[int, int] = (640, 360), face_px: int = 180) -> np.ndarray:
    """A 640x360 'screenshot': a plain background with one real face crop pasted (scaled) in the middle."""
    bg = Image.new("RGB", size, (200, 210, 225))
    if face is not None:
        crop = Image.open(face).convert("RGB").resize((face_px, face_px), Image.Resampling.BICUBIC)
        bg.paste(crop, ((size[0] - face_px) // 2, (size[1] - face_px) // 2))
    return np.asarray(bg)


def face_video(path: Path, seq: list[Path | None], fps: float = 2.0) -> Path:
    """A video showing ``seq[i]`` (a face crop, or nothing) as frame ``i``."""
    frames = {}
    write_video([frames.setdefault(f, face_frame(f)) for f in seq], path, fps=fps)
    return path


def small_model(newgame8: Path, out_dir: Path, per_character: int = 16) -> Path:
    """A logistic model trained on the first faces of each newgame8 character (~15 s, features cached)."""
    from animeid.train import train

    data = out_dir / "ng8-small"
    for d in sorted(newgame8.iterdir()):
        if d.is_dir():
            (data / d.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(d.iterdir())[:per_character]:
                shutil.copy(f, data / d.name / f.name)
    return train(data, out_dir / "small.animeid", method="logistic", progress=False).model_path


def pick_faces(rec, faces: Path, chars=CHARS, *, composite: bool = True, min_p: float = 0.6,
               detector: str | None = None) -> dict[str, Path]:
    """For each character, a face crop (of ``faces/<character>/``) the model finds (in a composite
    frame, with ``detector``) and names right with p >= min_p.

    The tests check that the timeline / the server give what the library gives, not the model's accuracy.
    """
    from animeid.predict import PredictConfig

    out = {}
    for ch in chars:
        for f in sorted((faces / ch).iterdir()):
            res = rec.predict(face_frame(f) if composite else f,
                              PredictConfig(detect="always" if composite else "auto", detector=detector))
            if len(res["faces"]) == 1 and res["faces"][0]["candidates"][0]["name"] == ch \
                    and res["faces"][0]["candidates"][0]["p"] >= min_p:
                out[ch] = f
                break
        else:
            pytest.fail(f"the small model names no face of {ch} right")
    return out


# --------------------------------------------------------------------------- merging (pure)

def _frames(spec: dict[float, list[tuple[str, float]]]) -> list[dict]:
    return [{"time": t, "faces": [{"name": n, "p": p, "box": [0, 0, 1, 1]} for n, p in faces]}
            for t, faces in spec.items()]


def test_consecutive_sightings_merge_and_a_missed_sample_splits():
    frames = _frames({0: [("a", 0.9)], 2: [("a", 0.7)], 4: [("a", 0.8)], 6: [], 8: [("a", 1.0)],
                      10: [("b", 0.5)]})
    got = merge_sightings(frames, every=2)
    assert got == {
        "a": [{"start": 0.0, "end": 4.0, "n": 3, "mean_p": 0.8}, {"start": 8.0, "end": 8.0, "n": 1, "mean_p": 1.0}],
        "b": [{"start": 10.0, "end": 10.0, "n": 1, "mean_p": 0.5}],
    }
    # a larger tolerance bridges the missed sample
    assert merge_sightings(frames, every=2, gap=4)["a"] == [{"start": 0.0, "end": 8.0, "n": 4, "mean_p": 0.85}]


def test_jittered_sample_times_still_merge():
    # times given by hand (build_timeline's are exact sample times; merging tolerates others)
    frames = _frames({0: [("a", 1)], 2.04: [("a", 1)], 3.98: [("a", 1)], 6.1: [("a", 1)]})
    assert merge_sightings(frames, every=2)["a"] == [{"start": 0.0, "end": 6.1, "n": 4, "mean_p": 1.0}]


def test_two_faces_of_one_character_in_a_frame_count_once_and_order_is_first_sighting():
    frames = _frames({4: [("b", 0.4), ("b", 0.8)], 0: [("c", 0.9)], 2: [("c", 0.9), ("b", 0.6)]})
    got = merge_sightings(frames, every=2)
    assert list(got) == ["c", "b"]
    assert got["b"] == [{"start": 2.0, "end": 4.0, "n": 2, "mean_p": 0.7}]
    with pytest.raises(ValueError):
        merge_sightings(frames, every=0)


@pytest.mark.parametrize("face, expected", [
    ({"candidates": [{"name": "aoba", "p": 0.9}]}, ("aoba", 0.9)),
    ({"candidates": [{"name": "unknown", "p": 0.4}]}, (UNKNOWN, 0.4)),
    ({"candidates": [{"name": None, "p": 0.3}]}, (UNKNOWN, 0.3)),
    ({"unknown": True, "candidates": [{"name": "aoba", "p": 0.2}]}, (UNKNOWN, 0.2)),
    ({"candidates": [{"name": "aoba", "p": 0.2, "unknown": True}]}, (UNKNOWN, 0.2)),
    ({"candidates": []}, (UNKNOWN, 0.0)),
])
def test_face_identity_groups_open_set_answers_as_unknown(face, expected):
    assert face_identity(face) == expected


def test_format_time():
    assert [format_time(t) for t in (0, 5, 75.5, 600, 3725)] == ["0:00", "0:05", "1:15.5", "10:00", "1:02:05"]


# --------------------------------------------------------------------------- build_timeline, no model needed

RED, BLUE, GREY = (220, 30, 30), (30, 30, 220), (128, 128, 128)


class ColorRecognizer:
    """Stands in for a Recognizer: a red frame shows 'red', a blue one an unknown face, grey nobody."""

    def __init__(self):
        self.batches = []

    def predict_batch(self, images, cfg=None):
        self.batches.append(len(images))
        out = []
        for im in images:
            r, g, b = np.asarray(im).reshape(-1, 3).mean(0)
            faces = []
            if r > 150 and b < 100:
                faces = [{"box": [1, 2, 3, 4], "candidates": [{"name": "red", "p": 0.9}, {"name": "x", "p": 0.1}]}]
            elif b > 150 and r < 100:
                faces = [{"box": [1, 2, 3, 4], "candidates": [{"name": "unknown", "p": 0.3}]}]
            out.append({"path": "", "width": 64, "height": 48, "faces": faces})
        return out


def _color_video(path: Path, colors, fps=2.0, **kw) -> Path:
    write_video([np.full((48, 64, 3), c, np.uint8) for c in colors], path, fps=fps, **kw)
    return path


def test_build_timeline_ranges_batches_progress_and_unknown(tmp_path):
    # 1 frame per 0.5 s; sampled every 1 s: t = 0..9
    colors = [RED] * 8 + [GREY] * 4 + [BLUE] * 4 + [RED] * 4
    video = _color_video(tmp_path / "c.mp4", colors)
    rec = ColorRecognizer()
    calls = []
    tl = build_timeline(rec, video, every=1, batch_frames=4, progress=lambda *a: calls.append(a))
    assert tl["every"] == 1.0 and tl["duration"] == pytest.approx(10, abs=0.6)
    assert [f["time"] for f in tl["frames"]] == [float(t) for t in range(10)]
    assert tl["characters"]["red"] == [{"start": 0.0, "end": 3.0, "n": 4, "mean_p": 0.9},
                                       {"start": 8.0, "end": 9.0, "n": 2, "mean_p": 0.9}]
    assert tl["characters"][UNKNOWN] == [{"start": 6.0, "end": 7.0, "n": 2, "mean_p": 0.3}]
    assert list(tl["characters"]) == ["red", UNKNOWN]
    assert tl["frames"][0]["faces"] == [{"box": [1, 2, 3, 4], "name": "red", "p": 0.9}]
    assert rec.batches == [4, 4, 2]                                   # frames named in batches
    assert calls[0] == (0.0, tl["duration"], 0)
    assert [c[2] for c in calls] == [0, 4, 8, 10]                     # after each batch
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert not tl["partial"] and not tl["truncated"] and tl["error"] is None
    json.dumps(tl)                                                    # plain JSON
    # a face per named character (never for unknown), cut from a frame where it was named
    assert list(tl["thumbnails"]) == ["red"] and tl["thumbnails"]["red"].startswith("data:image/jpeg;base64,")
    import base64
    import io

    face = Image.open(io.BytesIO(base64.b64decode(tl["thumbnails"]["red"].split(",", 1)[1])))
    r, g, b = np.asarray(face.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
    assert face.size == (64, 64) and r > 180 and g < 80 and b < 80
    assert "thumbnails" not in build_timeline(rec, video, every=1, thumbnails=False)


def test_build_timeline_max_frames_and_progress_can_stop_it(tmp_path):
    video = _color_video(tmp_path / "c.mp4", [RED] * 20)
    tl = build_timeline(ColorRecognizer(), video, every=1, max_frames=3)
    assert tl["truncated"] and len(tl["frames"]) == 3

    class Stop(Exception):
        pass

    def stop(done, duration, frames):
        if frames >= 2:
            raise Stop()

    with pytest.raises(Stop):
        build_timeline(ColorRecognizer(), video, every=1, batch_frames=2, progress=stop)


def test_partial_video_keeps_the_frames_before_the_break(tmp_path):
    video = _color_video(tmp_path / "c.mkv", [RED] * 60, fps=2, gop=4)
    data = video.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    tl = build_timeline(ColorRecognizer(), cut, every=1)
    assert tl["partial"] and tl["error"]
    assert 3 <= len(tl["frames"]) < 30
    assert tl["characters"]["red"][0]["start"] == 0.0
    assert "breaks off" in tl["error"] and "all from before the break" in tl["error"]


def test_variable_frame_rate_held_frame_is_seen_at_each_sample_time(tmp_path):
    """A red picture held from 2 s to 14 s (one frame) between grey ones: seen at 2, 4, ..., 12 s."""
    from test_video import write_timed

    pic = {c: np.full((48, 64, 3), c, np.uint8) for c in (RED, GREY)}
    video = write_timed(tmp_path / "vfr.mkv", [(0, pic[GREY]), (2, pic[RED]), (14, pic[GREY]), (15, pic[GREY])])
    tl = build_timeline(ColorRecognizer(), video, every=2)
    assert [f["time"] for f in tl["frames"]] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    assert tl["characters"] == {"red": [{"start": 2.0, "end": 12.0, "n": 6, "mean_p": 0.9}]}


class UprightRecognizer(ColorRecognizer):
    """'red' only for an upright portrait picture whose top half is red (a phone video shown right)."""

    def predict_batch(self, images, cfg=None):
        out = []
        for im in images:
            a = np.asarray(im)
            h, w = a.shape[:2]
            top, bottom = a[: h // 2].reshape(-1, 3).mean(0), a[h // 2:].reshape(-1, 3).mean(0)
            upright = h > w and top[0] > 150 and top[2] < 100 and bottom[0] < 150
            faces = [{"box": [0, 0, w, h // 2], "candidates": [{"name": "red", "p": 0.9}]}] if upright else []
            out.append({"path": "", "width": w, "height": h, "faces": faces})
        return out


def test_rotated_phone_video_is_read_upright(tmp_path):
    from test_video import write_timed

    upright = np.full((64, 48, 3), GREY, np.uint8)
    upright[:32] = RED                                   # portrait: red on top
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # how the phone stores it: sideways, 64x48
    video = write_timed(tmp_path / "phone.mp4", [(t, stored) for t in range(4)], rotation=-90)
    tl = build_timeline(UprightRecognizer(), video, every=1)
    assert tl["characters"] == {"red": [{"start": 0.0, "end": 3.0, "n": 4, "mean_p": 0.9}]}


def test_damaged_video_note_tells_which_frames_were_read(tmp_path):
    from test_video import damage_packets

    src = _color_video(tmp_path / "src.mp4", [RED] * 40, fps=2, gop=4)
    tl = build_timeline(ColorRecognizer(), damage_packets(src, tmp_path / "damaged.mp4", 8, 10), every=1)
    assert tl["partial"]
    assert tl["characters"]["red"][-1]["end"] == 19.0            # ranges after the damage ...
    assert "went on to 19.500 s" in tl["error"] and "after the damage" in tl["error"]   # ... and the note says so
    assert "breaks off" not in tl["error"]


def test_bad_input(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(InputError, match="notes.mp4"):
        build_timeline(ColorRecognizer(), text)
    with pytest.raises(InputError, match="no such file"):
        build_timeline(ColorRecognizer(), tmp_path / "missing.mp4")
    pic = tmp_path / "pic.mp4"
    Image.new("RGB", (32, 32)).save(pic, format="PNG")
    with pytest.raises(InputError, match="picture"):
        build_timeline(ColorRecognizer(), pic)
    video = _color_video(tmp_path / "c.mp4", [RED] * 4)
    for every in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            build_timeline(ColorRecognizer(), video, every=every)


def test_plot_timeline_draws_one_row_per_character(tmp_path):
    tl = {"video": "ep01.mkv", "duration": 120.0, "every": 2.0, "frames": [{"time": 0, "faces": []}] * 60,
          "characters": {"aoba": [{"start": 0, "end": 30, "n": 16, "mean_p": 0.9}],
                         UNKNOWN: [{"start": 50, "end": 50, "n": 1, "mean_p": 0.2}],
                         "青葉": [{"start": 40, "end": 110, "n": 30, "mean_p": 0.8}]}}
    png = plot_timeline(tl, tmp_path / "t.png")
    img = Image.open(png)
    assert img.size[0] > 600 and img.size[1] > 120
    empty = plot_timeline({**tl, "characters": {}}, tmp_path / "empty.png")
    assert Image.open(empty).size[1] < img.size[1]
    # each row's face is drawn left of the bars: a pure green face shows as green pixels there only
    import base64
    import io

    b = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 255, 0)).save(b, "PNG")
    green = "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()
    with_faces = np.asarray(Image.open(plot_timeline({**tl, "thumbnails": {"aoba": green}}, tmp_path / "f.png"))
                            .convert("RGB")).astype(int)
    is_green = (with_faces[..., 1] > 200) & (with_faces[..., 0] < 60) & (with_faces[..., 2] < 60)
    cols = np.flatnonzero(is_green.any(axis=0))
    assert is_green.sum() > 200 and cols.max() < with_faces.shape[1] * 0.3     # in the names' margin
    plain = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert not ((plain[..., 1] > 200) & (plain[..., 0] < 60) & (plain[..., 2] < 60)).any()


# --------------------------------------------------------------------------- a real model on real faces

@pytest.fixture(scope="module")
def model_and_faces(newgame8, tmp_path_factory):
    from animeid.predict import Recognizer

    path = small_model(newgame8, tmp_path_factory.mktemp("tl-model"))
    rec = Recognizer.load(path)
    return path, rec, pick_faces(rec, newgame8, CHARS[:2])


@pytest.fixture(scope="module")
def real_video(model_and_faces, tmp_path_factory) -> Path:
    _, _, faces = model_and_faces
    a, h = faces[CHARS[0]], faces[CHARS[1]]
    # 2 frames/s; sampled every 1 s: a at 0-4 s, nobody 5-6, h at 7-11, nobody 12-13, a at 14-15
    seq = [a] * 10 + [None] * 4 + [h] * 10 + [None] * 4 + [a] * 4
    return face_video(tmp_path_factory.mktemp("tl-video") / "episode.mp4", seq)


def test_real_faces_give_the_expected_ranges(model_and_faces, real_video):
    _, rec, _ = model_and_faces
    tl = build_timeline(rec, real_video, every=1)
    ranges = {n: [(r["start"], r["end"], r["n"]) for r in rs] for n, rs in tl["characters"].items()}
    assert ranges == {CHARS[0]: [(0.0, 4.0, 5), (14.0, 15.0, 2)], CHARS[1]: [(7.0, 11.0, 5)]}
    assert all(r["mean_p"] >= 0.5 for rs in tl["characters"].values() for r in rs)
    assert len(tl["frames"]) == 16 and not tl["frames"][5]["faces"]       # a frame without a face names nobody
    box = tl["frames"][0]["faces"][0]["box"]
    assert 200 <= box[0] < box[2] <= 440 and 60 <= box[1] < box[3] <= 300   # the face pasted at (230, 90)


def test_cli_timeline_json_and_png(model_and_faces, real_video, tmp_path, capsys):
    from animeid.cli import main

    model, _, _ = model_and_faces
    png = tmp_path / "tl.png"
    assert main(["timeline", str(model), str(real_video), "--every", "1", "--json", "--png", str(png)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    tl = json.loads(out[0])
    assert set(tl["characters"]) == set(CHARS[:2]) and tl["png"] == str(png) and png.stat().st_size > 5000
    assert main(["timeline", str(model), str(real_video), "--every", "1", "--no-png"]) == 0
    text = capsys.readouterr().out
    assert f"{CHARS[0]}: 7 frames" in text and "0:00-0:04, 0:14-0:15" in text
    assert main(["timeline", str(model), str(model)]) == 1                # a model file is no video
    assert "not a readable video" in capsys.readouterr().err
