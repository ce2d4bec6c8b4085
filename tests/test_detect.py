"""Tests of animeid.detect: the AnimeFace wrapper, box mapping, crops and previews."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

import animeid.detect.base as D
from animeid.detect import (Face, crop_face, crop_faces, detect_faces, detect_faces_batch, draw_faces, get_detector,
                            iou)
from animeid.errors import InputError


def _overlaps(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


# ---- a fake detector: "finds" the bounding box of the pure red pixels --------------------------

class RedBoxDetector:
    name = "redbox"
    min_face = 1
    seen: list = []

    def detect_array(self, rgb):
        RedBoxDetector.seen.append(rgb.shape)
        red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
        if not red.any():
            return []
        ys, xs = np.nonzero(red)
        return [Face((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), 0.9)]


@pytest.fixture
def redbox(monkeypatch):
    monkeypatch.setitem(D.DETECTORS, "redbox", RedBoxDetector)
    monkeypatch.setattr(D, "_detectors", {})
    RedBoxDetector.seen = []
    return "redbox"


def _picture_with_red(w, h, box):
    a = np.full((h, w, 3), 200, np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = (255, 0, 0)
    return a


# ---- the real detector -------------------------------------------------------------------------

def test_recall_on_detect_tadne(detect_tadne):
    """Guards the Pillow >= 12 trap (animeface._nvxs finds nothing): recall must stay high."""
    ref = {k: v for k, v in json.loads((detect_tadne / "boxes.json").read_text()).items() if not k.startswith("_")}
    names = sorted(ref)
    results = detect_faces_batch([detect_tadne / n for n in names], threshold=0.7)
    hits = false_alarms = 0
    for name, faces in zip(names, results):
        gt = [f["box"] for f in ref[name]["faces"]]
        hit = set()
        for f in faces:
            assert f.score >= 0.7
            m = [i for i, g in enumerate(gt) if iou(f.box, g) >= 0.3 and i not in hit]
            if m:
                hit.add(m[0])
            elif not any(_overlaps(f.box, r) for r in ref[name].get("ignore", [])):
                false_alarms += 1
        hits += len(hit)
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert sum(len(v["faces"]) for v in ref.values()) == 39
    assert hits >= 30, f"only {hits} of 39 faces found"
    assert false_alarms <= 3


def test_exact_boxes_of_the_original_extension(detect_tadne):
    # what animeface 2.0.3 with Pillow 11 gives for this picture (likelihoods 1.0)
    faces = detect_faces(detect_tadne / "tadne_r0c5.jpg", detector="animeface")
    assert sorted(f.box for f in faces) == [(160, 140, 240, 220), (281, 110, 361, 190)]
    raw = get_detector("animeface").detect_array(np.asarray(Image.open(detect_tadne / "tadne_r0c2.jpg").convert("RGB")))
    assert [(f.box, round(f.score, 4)) for f in raw] == [((228, 108, 324, 204), 1.0)]


def test_boxes_in_original_pixels_after_upscaling(detect_tadne):
    ref = json.loads((detect_tadne / "boxes.json").read_text())["tadne_r1c1.jpg"]["faces"][0]["box"]
    img = Image.open(detect_tadne / "tadne_r1c1.jpg").convert("RGB")
    small = np.asarray(img.resize((128, 128), Image.Resampling.LANCZOS))  # face ~38 px: found only upscaled
    assert D._detect_array(get_detector("animeface"), small, 0.7, 0) == []
    faces = detect_faces(small, detector="animeface")
    assert len(faces) == 1, "upscaling should find the face"
    assert iou(faces[0].box, [v * 128 / 512 for v in ref]) >= 0.7
    assert all(0 <= v <= 128 for v in faces[0].box)


def test_face_crops_are_found(newgame8):
    files = sorted(newgame8.glob("*/*.jpg"))[::7]
    found = [bool(f) for f in detect_faces_batch(files)]
    assert np.mean(found) >= 0.8
    whole = D.detect_faces_or_whole_batch(files)
    assert all(len(f) >= 1 for f in whole)
    assert all(f[0].box == (0, 0, 96, 96) and f[0].score == 0.0 for f, ok in zip(whole, found) if not ok)


def test_tiny_grey_and_blank_pictures():
    assert detect_faces(np.zeros((1, 1, 3), np.uint8)) == []
    assert detect_faces(np.zeros((1, 1), np.uint8)) == []
    assert detect_faces(Image.new("L", (1, 1))) == []
    assert detect_faces(np.full((120, 200), 128, np.uint8)) == []
    assert detect_faces(np.zeros((3, 900, 3), np.uint8)) == []
    assert D.detect_faces_or_whole(np.zeros((1, 1, 3), np.uint8)) == [Face((0, 0, 1, 1), 0.0)]


def test_grey_picture_still_finds_the_face(detect_tadne):
    grey = Image.open(detect_tadne / "tadne_r0c2.jpg").convert("L")
    faces = detect_faces(grey)
    assert faces and iou(faces[0].box, (228, 108, 324, 204)) >= 0.7


def test_unreadable_picture_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a picture")
    with pytest.raises(InputError, match="bad.jpg"):
        detect_faces(bad)


def test_huge_pictures_are_scanned_downscaled():
    for w, h in ((20000, 3000), (8000, 8000), (3, 20000)):
        for p in D._plans(w, h, D.AUTO_UPSCALE_TO):
            assert p.width * p.height <= D.MAX_DETECT_PIXELS * 1.001


# ---- box mapping, with the fake detector -------------------------------------------------------

@pytest.mark.parametrize("w,h,box", [(100, 80, (30, 20, 50, 40)), (640, 480, (100, 200, 180, 290)),
                                     (96, 96, (0, 0, 96, 96)), (150, 60, (140, 10, 150, 30))])
def test_boxes_mapped_back_and_clipped(redbox, w, h, box):
    faces = detect_faces(_picture_with_red(w, h, box), detector=redbox, threshold=0.5)
    assert len(faces) == 1
    got = faces[0].box
    assert all(abs(g - b) <= 2 for g, b in zip(got, box)), (got, box)
    assert 0 <= got[0] < got[2] <= w and 0 <= got[1] < got[3] <= h
    if min(w, h) < D.AUTO_UPSCALE_TO:  # scanned twice: padded at its size, and upscaled
        assert len(RedBoxDetector.seen) == 2
        assert max(s[0] for s in RedBoxDetector.seen) > h


def test_threshold_and_no_upscaling(redbox):
    a = _picture_with_red(100, 80, (30, 20, 50, 40))
    assert detect_faces(a, detector=redbox, threshold=0.95) == []
    RedBoxDetector.seen = []
    detect_faces(a, detector=redbox, upscale_to=0)
    assert len(RedBoxDetector.seen) == 1 and RedBoxDetector.seen[0][0] <= 80 * 2
    with pytest.raises(ValueError):
        detect_faces(a, detector=redbox, upscale_to=-1)


def test_batch_wants_a_sequence():
    with pytest.raises(TypeError):
        detect_faces_batch(np.zeros((10, 10, 3), np.uint8))


# ---- registry ----------------------------------------------------------------------------------

def test_get_detector_unknown_name():
    with pytest.raises(ValueError, match="animeface"):
        get_detector("no-such-detector")


def test_get_detector_is_shared_and_thread_safe():
    got = []
    threads = [threading.Thread(target=lambda: got.append(get_detector("animeface"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(d) for d in got}) == 1
    d = got[0]
    assert isinstance(d, D.Detector)
    assert d.name == "animeface" and d.min_face == 43


def test_face_to_dict():
    f = Face((1, 2, 30, 40), 0.987654321)
    assert f.to_dict() == {"box": [1, 2, 30, 40], "score": 0.9877}
    assert (f.width, f.height) == (29, 38)
    json.dumps(f.to_dict())


# ---- crops -------------------------------------------------------------------------------------

def _ramp(h=100, w=100):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    a[..., 1] = np.arange(h, dtype=np.uint8)[:, None]
    a[..., 2] = 7
    return a


def test_crop_margin_geometry():
    a = _ramp()
    c = np.asarray(crop_face(a, (40, 40, 60, 60), margin=0.2, size=None))  # side 20 * 1.4 = 28
    assert c.shape == (28, 28, 3)
    assert np.array_equal(c, a[36:64, 36:64])
    # non-square box: the longer side counts, the square is centred on the box
    c = np.asarray(crop_face(a, (10, 20, 50, 40), margin=0.2, size=None))  # side 56, centre (30, 30)
    assert np.array_equal(c, a[2:58, 2:58])
    c = np.asarray(crop_face(a, Face((40, 40, 60, 60), 1.0), margin=0.0, size=None))
    assert np.array_equal(c, a[40:60, 40:60])


def test_crop_pads_at_the_edges():
    a = _ramp()
    # box at the top-left corner: side 40, from (-10, -10)
    c = np.asarray(crop_face(a, (0, 0, 20, 20), margin=0.5, size=None, fill=(1, 2, 3)))
    assert c.shape == (40, 40, 3)
    assert (c[:10] == (1, 2, 3)).all() and (c[:, :10] == (1, 2, 3)).all()
    assert np.array_equal(c[10:, 10:], a[:30, :30])
    e = np.asarray(crop_face(a, (0, 0, 20, 20), margin=0.5, size=None))  # default: edge replicated
    assert np.array_equal(e, np.pad(a[:30, :30], ((10, 0), (10, 0), (0, 0)), mode="edge"))
    r = np.asarray(crop_face(a, (90, 90, 100, 100), margin=2.0, size=None, fill="reflect"))  # 50 px, far out
    assert r.shape == (50, 50, 3)
    g = np.asarray(crop_face(a, (90, 90, 100, 100), margin=0.5, size=None, fill=255))
    assert (g[-5:] == 255).all()


def test_crop_output_size_and_errors():
    a = _ramp()
    img = crop_face(a, (40, 40, 60, 60))
    assert img.size == (96, 96) and img.mode == "RGB"
    assert crop_face(a, (40, 40, 60, 60), size=32).size == (32, 32)
    crops = crop_faces(a, [(0, 0, 10, 10), Face((50, 50, 90, 70), 1.0)], size=64)
    assert [c.size for c in crops] == [(64, 64), (64, 64)]
    assert crop_faces(a, []) == []
    with pytest.raises(ValueError):
        crop_face(a, (10, 10, 10, 20))
    with pytest.raises(ValueError):
        crop_face(a, (300, 300, 320, 320))
    with pytest.raises(ValueError):
        crop_face(a, (1, 2, 3))
    with pytest.raises(ValueError):
        crop_face(a, (40, 40, 60, 60), fill="wrap")
    with pytest.raises(ValueError):
        crop_face(a, (40, 40, 60, 60), size=0)


# ---- preview -----------------------------------------------------------------------------------

def test_draw_faces():
    a = _ramp(120, 160)
    faces = [Face((10, 10, 60, 60), 0.99), Face((0, 0, 160, 120), 0.5)]
    img = draw_faces(a, faces)
    assert img.size == (160, 120) and img.mode == "RGB"
    assert not np.array_equal(np.asarray(img), a)
    assert np.array_equal(a, _ramp(120, 160))  # the input is not drawn on
    assert draw_faces(a, faces, ["Aoba", "Hifumi"]).size == (160, 120)
    assert np.array_equal(np.asarray(draw_faces(a, [])), a)
    assert draw_faces(Image.new("L", (5, 3)), [Face((0, 0, 5, 3), 1.0)]).size == (5, 3)
    with pytest.raises(ValueError):
        draw_faces(a, faces, ["only one"])


def test_draw_faces_japanese_label_uses_a_cjk_font(monkeypatch):
    from animeid._plot import cjk_font_file, pil_font

    if cjk_font_file() is None:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-ipafont-gothic; ./setup.sh does it)")
    font = pil_font(16, "滝本ひふみ")
    assert font is not None and pil_font(16, "Aoba") is None
    # real glyphs, not one missing-glyph box for every character
    assert bytes(font.getmask("滝")) != bytes(font.getmask("本"))
    used = []
    monkeypatch.setattr(D, "pil_font", lambda px, text: used.append((text, pil_font(px, text))) or used[-1][1])
    a = _ramp(120, 160)
    img = draw_faces(a, [Face((10, 30, 60, 80), 0.9), Face((80, 30, 150, 100), 0.8)], ["滝本ひふみ", "Aoba"])
    assert img.size == (160, 120)
    assert [(t, f is not None) for t, f in used] == [("滝本ひふみ", True), ("Aoba", False)]


def test_quick_pass_settles_face_crops_and_nothing_else(newgame8):
    """Small square face crops are settled by one pass at QUICK_SIZE, with the face the full passes find;
    a small picture with two faces, or an oblong one, always gets the full passes."""
    from animeid.detect import learned as L
    from animeid.images import to_array

    det = get_detector("default")
    crops = [to_array(p) for p in sorted(newgame8.glob("*/*.jpg"))[::7]]
    settled = det._quick([L._pad(c, L._crop_pad(c)) for c in crops], [L._crop_pad(c) for c in crops],
                         [c.shape for c in crops], det._min_peak())
    assert len(settled) >= 0.8 * len(crops)
    full = det.raw_arrays(crops, quick=False)
    quick = det.raw_arrays(crops)
    for i, (boxes, raw) in settled.items():
        assert len(boxes) == 1 and quick[i][0].shape == (1, 4)
        assert iou(tuple(quick[i][0][0]), tuple(full[i][0][0])) >= 0.5      # the same face as the full passes
    for i in set(range(len(crops))) - set(settled):
        assert np.array_equal(quick[i][0], full[i][0])                   # unsettled: exactly the full passes
    a, b = crops[0], crops[1]
    pair = np.full((200, 200, 3), 255, np.uint8)                        # two faces side by side, square
    pair[52:148, 4:100], pair[52:148, 100:196] = a, b
    oblong = np.concatenate([a, b], axis=1)                             # 96 x 192: not a quick candidate
    assert not L._quick_candidate(oblong.shape) and L._quick_candidate(a.shape)
    two = [pair, oblong]
    assert det._quick([L._pad(c, L._crop_pad(c)) for c in two], [L._crop_pad(c) for c in two], [c.shape for c in two],
                      det._min_peak()) == {}
    assert len(detect_faces(pair)) == 2


def test_each_picture_runs_once_per_size_it_is_resized_to(monkeypatch):
    """Two passes (384 and 768 px, as a file's ``test_sizes`` may ask) both run a padded small picture at
    SMALL_SIZE: once, not twice; a large picture runs at both sizes."""
    from animeid.detect import learned as L

    det = get_detector("default")
    sizes = (384, 768)
    assert min(sizes) > L.SMALL_SIZE
    shapes: list[tuple] = []
    real = det.run
    monkeypatch.setattr(det, "run", lambda batch: shapes.append(batch.shape) or real(batch))
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)    # not settled as a crop
    det.raw_arrays([noise], sizes, quick=False)
    assert [max(s[2:]) for s in shapes] == [L.SMALL_SIZE]
    shapes.clear()
    det.raw_arrays([np.full((300, 600, 3), 128, np.uint8)], sizes, quick=False)
    assert sorted(max(s[2:]) for s in shapes) == list(sizes)


def test_detect_out_cuts_crops_as_collect_does(tmp_path):
    """`animeid detect --out` crops a face as `collect` does: around crop_box (the learned detector's box
    scaled to AnimeFace's geometry), not around the bare box."""
    from animeid.detect import crop_box, crop_face, detect_files
    from animeid.sample import make_characters, render_scene

    img, _ = render_scene(make_characters(2, seed=0), np.random.default_rng(3), (320, 200), n_faces=1)
    pic = tmp_path / "scene.png"
    img.save(pic)
    [rec] = list(detect_files([pic], out=tmp_path / "crops", size=64))
    assert rec["faces"] and len(rec["crops"]) == len(rec["faces"])
    box = tuple(rec["faces"][0]["box"])
    assert get_detector("default").crop_scale > 1.0
    want = np.asarray(crop_face(img, crop_box(box, None), margin=0.2, size=64))
    bare = np.asarray(crop_face(img, box, margin=0.2, size=64))
    got = np.asarray(Image.open(rec["crops"][0]).convert("RGB"))
    assert np.array_equal(got, want) and not np.array_equal(got, bare)
