"""The one picture loader (animeid.images): the inputs and modes it takes, the errors it gives.

Each case builds its picture in the test and checks exact pixels or the exact message; no shared data.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from animeid.errors import InputError
from animeid.images import (BACKGROUND, MAX_PIXELS, MAX_PIXELS_ENV, frame_count, frame_picks, is_image_file,
                            iter_frames, load_image, max_pixels, to_rgb, walk_files)


def _gif(colours: list[tuple[int, int, int]], durations: list[int]) -> bytes:
    frames = [Image.new("RGB", (8, 6), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, disposal=1)
    return buf.getvalue()


# --------------------------------------------------------------------------- the pixel limit

@pytest.mark.parametrize("raw, limit", [("", MAX_PIXELS), ("  ", MAX_PIXELS), ("12,000", 12_000),
                                        ("1_000_000", 1_000_000), ("7", 7)])
def test_max_pixels_reads_the_environment(monkeypatch, raw, limit):
    monkeypatch.setenv(MAX_PIXELS_ENV, raw)
    assert max_pixels() == limit


@pytest.mark.parametrize("raw", ["lots", "0", "-5", "1.5e6"])
def test_max_pixels_refuses_what_is_not_a_positive_whole_number(monkeypatch, raw):
    monkeypatch.setenv(MAX_PIXELS_ENV, raw)
    with pytest.raises(InputError) as e:
        max_pixels()
    assert str(e.value) == f"ANIMEID_MAX_PIXELS={raw!r} is not a positive whole number of pixels"


def test_a_limit_above_pillows_own_raises_pillows_guard_too(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)          # restored after the test
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "PNG")        # 1,200 pixels: over Pillow's 1,000
    assert load_image(buf.getvalue(), max_pixels=5000).size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 5000, "Pillow's guard follows the raised limit"
    with pytest.raises(InputError, match=r"picture is 40x30 = 1,200 pixels, over the limit of 1,100"):
        load_image(buf.getvalue(), max_pixels=1100)


# --------------------------------------------------------------------------- arrays and objects

def test_arrays_grey_rgb_and_rgba_load_and_the_rest_is_refused_by_shape_and_type():
    grey = np.array([[0, 255], [7, 9]], np.uint8)
    assert np.asarray(load_image(grey)).tolist() == [[[0] * 3, [255] * 3], [[7] * 3, [9] * 3]]
    rgba = np.array([[[200, 10, 20, 255], [200, 10, 20, 0]]], np.uint8)
    assert np.asarray(load_image(rgba)).tolist() == [[[200, 10, 20], list(BACKGROUND)]], \
        "an opaque pixel keeps its colour, a transparent one shows the background"
    with pytest.raises(InputError) as e:
        load_image(np.zeros((4, 4, 3), np.float32))
    assert str(e.value) == "<array (4, 4, 3) float32>: an image array must be uint8, got float32"
    with pytest.raises(InputError) as e:
        load_image(np.zeros((4, 4, 2), np.uint8))
    assert str(e.value) == ("<array (4, 4, 2) uint8>: an image array must be (H, W), (H, W, 3) or (H, W, 4), "
                            "got (4, 4, 2)")
    with pytest.raises(TypeError, match="Unknown image type - 12345."):
        load_image(12345)


def test_frames_of_a_pil_animation_and_of_a_file_object():
    data = _gif([(255, 0, 0), (0, 0, 255), (0, 255, 0)], [50, 0, 20])
    im = Image.open(io.BytesIO(data))
    assert load_image(im, frame=1).getpixel((0, 0)) == (0, 0, 255), "a PIL animation read at the frame asked"
    with pytest.raises(InputError) as e:
        load_image(io.BytesIO(data), frame=5)
    assert str(e.value) == "<BytesIO>: has 3 frame(s), no frame 5"
    got = [(i, round(t, 3), f.getpixel((0, 0))) for i, t, f in iter_frames(io.BytesIO(data))]
    # times add each frame's duration; a frame without one lasts 100 ms
    assert got == [(0, 0.0, (255, 0, 0)), (1, 0.05, (0, 0, 255)), (2, 0.15, (0, 255, 0))]
    assert frame_count(data) == 3 and frame_count(im) == 3 and frame_count(np.zeros((2, 2, 3), np.uint8)) == 1


def test_an_animation_cut_after_its_first_frame_is_read_as_its_first_frame_or_named(tmp_path):
    """A GIF cut short (a partial download): Pillow fails counting its frames (IndexError, a traceback
    before); the loader reads its whole first frame as a still picture, the frame reader names the file."""
    data = _gif([(255, 0, 0), (0, 0, 255), (0, 255, 0)], [50, 50, 50])
    first = _gif([(255, 0, 0)], [50])
    p = tmp_path / "cut.gif"
    p.write_bytes(data[:len(first) + 20])     # the header and frame 0 whole, frame 1 begun, then nothing
    assert frame_count(p) == 1
    assert load_image(p).getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(InputError) as e:
        list(iter_frames(p))
    assert str(e.value) == f"{p}: corrupt or truncated animation (index out of range)"
    with pytest.raises(InputError) as e:
        load_image(p, frame=1)
    assert str(e.value) == f"{p}: corrupt or truncated picture (index out of range)"


def test_frame_count_of_something_unreadable_is_one_and_load_image_says_why():
    assert frame_count(b"not a picture at all") == 1
    with pytest.raises(InputError, match="not a readable picture"):
        load_image(b"not a picture at all")


@pytest.mark.parametrize("n, most, picks", [(10, 1, [0]), (10, 0, [0]), (10, None, list(range(10))),
                                            (3, 16, [0, 1, 2]), (10, 4, [0, 3, 6, 9]), (100, 3, [0, 50, 99])])
def test_frame_picks_are_evenly_spaced_first_and_last_included(n, most, picks):
    assert frame_picks(n, most) == picks


# --------------------------------------------------------------------------- reduced decoding, modes

def test_max_side_decodes_a_large_picture_reduced_by_a_whole_factor():
    png, jpg = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (400, 200), (10, 200, 30)).save(png, "PNG")
    Image.new("RGB", (800, 400), (10, 200, 30)).save(jpg, "JPEG", quality=95)
    assert load_image(png.getvalue(), max_side=100).size == (100, 50), "PNG: reduced by 4 after decoding"
    assert load_image(png.getvalue(), max_side=150).size == (200, 100), "reduced by 2: the longer side stays >= 150"
    assert load_image(png.getvalue(), max_side=300).size == (400, 200), "under twice max_side: as it is"
    small = load_image(jpg.getvalue(), max_side=100)
    assert small.size == (100, 50), "JPEG: decoded at 1/8 scale (draft)"
    assert max(abs(a - b) for a, b in zip(small.getpixel((50, 25)), (10, 200, 30))) <= 2


def test_other_modes_convert_and_rgb_pictures_of_any_depth_become_8bit():
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    assert load_image(red, mode="L").getpixel((0, 0)) == 76, "Pillow's luma of pure red"
    pal = red.convert("P")
    assert load_image(pal, mode=None).mode == "P", "mode=None keeps the picture's mode"
    i_small = Image.fromarray(np.array([[0, 200]], np.int32), "I")       # 0..255: taken as it is
    assert np.asarray(to_rgb(i_small))[0, :, 0].tolist() == [0, 200]
    i_wide = Image.fromarray(np.array([[257, 65535]], np.int32), "I")    # within 16 bits: / 257
    assert np.asarray(to_rgb(i_wide))[0, :, 0].tolist() == [1, 255]
    nan = Image.fromarray(np.full((1, 2), np.nan, np.float32), "F")      # nothing finite: black
    assert np.asarray(to_rgb(nan)).tolist() == [[[0, 0, 0], [0, 0, 0]]]


def test_premultiplied_alpha_is_composed_onto_the_background():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))
    pre = rgba.convert("RGBa")
    assert pre.mode == "RGBa"
    assert list(to_rgb(pre).getdata()) == [(10, 20, 30), BACKGROUND]
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (90, 255))
    la.putpixel((1, 0), (90, 0))
    assert list(to_rgb(la.convert("La")).getdata()) == [(90, 90, 90), BACKGROUND]


def test_cmyk_with_a_broken_colour_profile_is_converted_plainly():
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))                  # red in CMYK
    cmyk.info["icc_profile"] = b"not an ICC profile"
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)


# --------------------------------------------------------------------------- files in folders

def test_is_image_file_goes_by_the_ending_in_any_case():
    assert [is_image_file(n) for n in ("a.PNG", "b.jpeg", "c.jfif", "d.webp", "e.mp4", "f.txt", "g")] == \
        [True, True, True, True, False, False, False]


def test_walk_files_searches_each_real_folder_once_and_skips_hidden_folders(tmp_path):
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "a" / "1.png").write_bytes(b"x")
    (top / ".git").mkdir()
    (top / ".git" / "2.png").write_bytes(b"x")
    (top / "b").symlink_to(top / "a", target_is_directory=True)   # the same folder a second time
    (top / "c").symlink_to(top / "a", target_is_directory=True)   # and a third
    found = walk_files(top)
    assert [p.relative_to(top).as_posix() for p in found] == ["a/1.png"], \
        "a/1.png once: b and c lead to the folder already searched; .git is hidden"
