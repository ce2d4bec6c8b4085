"""Issue 10 sections 2 and 3: file names derived from long or odd names, character names, links,
and pictures in every mode, ending, animation and size."""
from __future__ import annotations

import io
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid._util import atomic_write_bytes, save_image_atomic
from animeid.errors import InputError
from animeid.images import BACKGROUND, IMAGE_EXTS, frame_count, iter_frames, load_image
from animeid.names import MAX_NAME_BYTES, check_character_name, normalize_name, safe_filename, safe_stem

JP = "魔法少女の長い名前"           # 9 characters, 27 UTF-8 bytes


def _long_stem(nbytes: int) -> str:
    s = (JP * 20).encode("utf-8")[:nbytes].decode("utf-8", "ignore")
    return s + "x" * (nbytes - len(s.encode("utf-8")))


# ----------------------------------------------------------------------------- file names

@pytest.mark.parametrize("nbytes", [248, 250, 255])
def test_safe_filename_fits_255_bytes_and_stays_unique(nbytes):
    a, b = _long_stem(nbytes - 1) + "a", _long_stem(nbytes - 1) + "b"
    na, nb = safe_filename(a, "-abcdef_page0_0.png"), safe_filename(b, "-abcdef_page0_0.png")
    for n in (na, nb):
        assert len(n.encode("utf-8")) <= MAX_NAME_BYTES and n.endswith("-abcdef_page0_0.png")
        n.encode("utf-8").decode("utf-8")                    # cut on a character boundary
    assert na != nb                                          # the hash keeps them apart
    assert safe_filename("short", ".png") == "short.png"     # short names stay as they are


def test_safe_names_are_portable():
    assert safe_filename("x:y", "") == "x_y"
    assert safe_filename("What?", "") == "What_"
    assert safe_filename("CON", "") == "CON_" and safe_filename("aux", ".png") == "aux_.png"
    assert safe_filename("trailing. ", "") == "trailing"
    assert safe_filename(".hidden", ".png") == "hidden.png"
    assert safe_stem(unicodedata.normalize("NFD", "Pokémon")) == "Pokémon"   # NFC


def test_atomic_write_takes_a_255_byte_name(tmp_path):
    name = safe_filename(_long_stem(300), ".png")
    assert len(name.encode("utf-8")) == 255 or len(name.encode("utf-8")) >= 250
    atomic_write_bytes(tmp_path / name, b"data")             # the temporary name must fit too
    assert (tmp_path / name).read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_crop_names_of_long_sources_fit(tmp_path):
    from animeid.dataset import _crop_name

    for nbytes in (248, 249, 250):
        src = tmp_path / (_long_stem(nbytes - 4) + ".png")
        n = _crop_name(src, "page=0", 12)
        assert len(n.encode("utf-8")) <= 255 and n.endswith("_page0_12.png")
        save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / n)


def test_frame_names_of_long_videos_stay_unique():
    from animeid.video import frame_name

    a, b = frame_name(_long_stem(240) + "1.mkv", 5), frame_name(_long_stem(240) + "2.mkv", 5)
    assert a != b and max(len(a.encode()), len(b.encode())) <= 255


# ----------------------------------------------------------------------------- character names

def test_character_names_normalised_and_checked():
    nfd = unicodedata.normalize("NFD", "Chloé")
    assert check_character_name(nfd) == "Chloé" == normalize_name(nfd + " ")
    assert check_character_name("x:y") == "x:y" and check_character_name("CON") == "CON"   # names, not folders
    assert check_character_name("名" * 80) == "名" * 80                          # 240 bytes: a folder can bear it
    with pytest.raises(ValueError, match="258 bytes in UTF-8; at most 240"):
        check_character_name("名" * 86)
    for bad in ("", ".", "..", ".x", "a/b", "a\\b", "a\x00b", "tab\tname"):
        with pytest.raises(ValueError):
            check_character_name(bad)
    with pytest.raises(ValueError, match="reserved"):
        check_character_name("Unlabeled", reserved={"unlabeled"})
    from animeid.openset import check_name

    assert check_name(nfd) == "Chloé"


def test_export_folders_portable_labels_exact(tmp_path):
    import csv

    from animeid.dataset import _portable_folders

    folders = _portable_folders(["x:y", "x?y", "What?", "CON", "dot.", "初音ミク", "Aoba", "aoba"])
    assert folders["x:y"] == "x_y" and folders["x?y"] == "x_y~2"
    assert folders["What?"] == "What_" and folders["CON"] == "CON_" and folders["dot."] == "dot"
    assert folders["初音ミク"] == "初音ミク"
    assert len({f.casefold() for f in folders.values()}) == len(folders)   # unique without case too


def test_training_reads_nfd_and_nfc_folders_as_one_character_and_follows_links(tmp_path):
    from animeid.evaluate import read_folder_dataset

    elsewhere = tmp_path / "pool"
    elsewhere.mkdir()
    ds = tmp_path / "ds"
    name = "Chloé"
    for k, spelled in enumerate([unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name), "kou"]):
        d = ds / spelled
        d.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (k * 80, i * 60, 0)).save(d / f"{k}_{i}.png")
    got = read_folder_dataset(ds, check_images=False)
    assert sorted(set(got.labels)) == ["Chloé", "kou"]
    # a split.csv whose pictures are symbolic links to files outside the dataset
    linked = tmp_path / "linked"
    rows = ["path,label,split"]
    for i, (lab, sp) in enumerate([("a", "train"), ("a", "test"), ("b", "train"), ("b", "test")]):
        src = elsewhere / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(src)
        (linked / lab).mkdir(parents=True, exist_ok=True)
        (linked / lab / f"{i}.png").symlink_to(src)
        rows.append(f"{lab}/{i}.png,{lab},{sp}")
    (linked / "split.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    got = read_folder_dataset(linked)
    assert len(got.paths) == 4 and sorted(set(got.labels)) == ["a", "b"]
    (linked / "split.csv").write_text("path,label,split\n../pool/0.png,a,train\n", encoding="utf-8")
    from animeid.errors import DatasetError

    with pytest.raises(DatasetError, match="outside"):
        read_folder_dataset(linked)


def test_broken_links_and_link_loops_in_a_character_folder_are_named_and_left_out(tmp_path, caplog):
    """A broken link is not skipped silently, and a link back up the tree (``a/all -> ..``) does not pull
    the other characters' pictures into ``a``."""
    from animeid.evaluate import read_folder_dataset
    from animeid.images import iter_image_files

    ds = tmp_path / "ds"
    for k, lab in enumerate(["a", "b"]):
        (ds / lab).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (k * 80, i * 60, 0)).save(ds / lab / f"{i}.png")
    (ds / "a" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (ds / "a" / "all").symlink_to(ds, target_is_directory=True)
    (ds / "a" / "self").symlink_to(ds / "a", target_is_directory=True)
    (ds / "a" / "sub").symlink_to(ds / "b", target_is_directory=True)     # another character's folder
    (ds / "a" / "b0.png").symlink_to(ds / "b" / "0.png")                   # and one of its pictures
    (ds / "a" / "again.png").symlink_to(ds / "a" / "0.png")                # a picture twice in one folder
    (ds / "b_twin").symlink_to(ds / "b", target_is_directory=True)         # a character folder that is a link
    got = read_folder_dataset(ds)
    assert sorted((p.parent.name, p.name) for p in got.paths) == [
        ("a", "0.png"), ("a", "1.png"), ("a", "2.png"), ("b", "0.png"), ("b", "1.png"), ("b", "2.png")]
    assert got.labels.count("a") == 3
    why = {p.name: r for p, r in got.skipped}
    assert set(why) == {"gone.png", "all", "self", "sub", "b0.png", "again.png", "b_twin"}
    assert "the same picture as" in why["again.png"] and "not a character of its own" in why["b_twin"]
    assert sorted(set(got.labels)) == ["a", "b"]
    assert "another character's folder" in why["sub"] and "another character's picture" in why["b0.png"]
    assert "broken link" in why["gone.png"] and "deleted.png" in why["gone.png"]
    assert "not followed" in why["all"] and "not followed" in why["self"]
    with caplog.at_level("WARNING", logger="animeid"):
        files = list(iter_image_files([ds / "a"]))
    assert sorted(str(f.relative_to(ds / "a")) for f in files) == [   # no dataset here: links to b are read
        "0.png", "1.png", "2.png", "again.png", "b0.png", "sub/0.png", "sub/1.png", "sub/2.png"]
    assert "gone.png: skipped, a broken link" in caplog.text


# ----------------------------------------------------------------------------- pictures: modes

def _png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one), by hand."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _saved(img: Image.Image, fmt: str = "PNG") -> bytes:
    b = io.BytesIO()
    img.save(b, fmt)
    return b.getvalue()


def test_every_mode_becomes_right_8bit_rgb():
    grey16 = np.zeros((4, 8), np.uint16)
    grey16[:, 4:] = 32768                                    # half of full scale: mid grey, not white
    for data in (_saved(Image.fromarray(grey16)), _saved(Image.fromarray(grey16), "TIFF")):
        rgb = np.asarray(load_image(data))
        assert rgb.dtype == np.uint8 and rgb.shape == (4, 8, 3)
        assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 7].tolist() == [128, 128, 128]
    assert np.asarray(load_image(Image.fromarray(grey16.astype(np.int32) * 2, "I")))[0, 7].tolist() == [255] * 3
    assert np.asarray(load_image(Image.new("F", (2, 2), 0.5)))[0, 0].tolist() == [128] * 3
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 2] = 32768
    assert np.asarray(load_image(_png16_rgb(rgb16)))[0, 0].tolist() == [255, 0, 128]
    # transparency over the neutral background
    assert np.asarray(load_image(Image.new("RGBA", (2, 2), (255, 0, 0, 0))))[0, 0].tolist() == list(BACKGROUND)
    assert np.asarray(load_image(Image.new("LA", (2, 2), (0, 0))))[0, 0].tolist() == list(BACKGROUND)
    assert np.asarray(load_image(Image.new("RGBA", (2, 2), (255, 0, 0, 255))))[0, 0].tolist() == [255, 0, 0]
    p = Image.new("P", (2, 2), 0)
    p.putpalette([255, 0, 0, 0, 255, 0])
    p.info["transparency"] = 0
    assert np.asarray(load_image(_saved(p)))[0, 0].tolist() == list(BACKGROUND)
    assert np.asarray(load_image(Image.new("CMYK", (2, 2), (0, 255, 255, 0))))[0, 0].tolist() == [255, 0, 0]


# ----------------------------------------------------------------------------- pictures: endings

def test_one_list_of_picture_endings():
    from animeid.video import VIDEO_EXTS

    assert {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".apng"} <= IMAGE_EXTS
    from PIL import features

    assert (".avif" in IMAGE_EXTS) == bool(features.check("avif"))
    assert not IMAGE_EXTS & VIDEO_EXTS


def test_collect_reads_jfif_and_counts_skipped_files(tmp_path):
    from animeid.dataset import _expand_inputs

    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.jfif", "JPEG")
    (tmp_path / "in" / "notes.txt").write_text("x")
    found, failed, skipped = _expand_inputs([tmp_path / "in"])
    assert [p.name for p, k in found] == ["a.jfif"] and not failed and skipped == 1


# ----------------------------------------------------------------------------- pictures: animations

def _animation(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in [(0, 0, 0), (250, 0, 0), (0, 0, 250)]]
    b = io.BytesIO()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(b, fmt, save_all=True, append_images=frames[1:], duration=500, **kw)
    return b.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_pictures_give_every_frame(tmp_path, fmt):
    data = _animation(fmt)
    assert frame_count(data) == 3
    got = [(i, round(t, 3), im.getpixel((0, 0))) for i, t, im in iter_frames(data)]
    assert got == [(0, 0.0, (0, 0, 0)), (1, 0.5, (250, 0, 0)), (2, 1.0, (0, 0, 250))]
    assert load_image(data, frame=2).getpixel((0, 0)) == (0, 0, 250)
    assert [i for i, _, _ in iter_frames(data, max_frames=2)] == [0, 2]
    # frames: the animation as a short video
    from animeid.video import sample_frames, write_frames

    path = tmp_path / f"anim.{ {'GIF': 'gif', 'WEBP': 'webp', 'PNG': 'apng'}[fmt] }"
    path.write_bytes(data)
    assert [(f.time, f.index) for f in sample_frames(path, every=0.5)] == [(0.0, 0), (0.5, 1), (1.0, 2)]
    s = write_frames([path], 1.0, tmp_path / "out")
    assert s["written"] == 2 and s["failed"] == 0


# ----------------------------------------------------------------------------- pictures: size

def test_pixel_limit_can_be_raised(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(big)                    # 6 Mpx
    monkeypatch.setenv("ANIMEID_MAX_PIXELS", "5_000_000")
    with pytest.raises(InputError, match="--max-pixels"):
        load_image(big)
    monkeypatch.setenv("ANIMEID_MAX_PIXELS", "7000000")
    assert load_image(big).size == (3000, 2000)
    assert load_image(big, max_pixels=6_000_000).size == (3000, 2000)
    monkeypatch.delenv("ANIMEID_MAX_PIXELS")
    jpg = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(jpg)
    small = load_image(jpg, max_side=700)                    # decoded reduced (JPEG draft)
    assert 700 <= max(small.size) < 1500 and small.getpixel((5, 5))[1] > 150


def test_cli_max_pixels_option(tmp_path, monkeypatch, capsys):
    import os

    from animeid.cli import main

    monkeypatch.delenv("ANIMEID_MAX_PIXELS", raising=False)
    big = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(big)
    ws = tmp_path / "ws"
    assert main(["--max-pixels", "5000000", "collect", str(big), "--workspace", str(ws), "--workers", "1"]) == 1
    assert "over the limit of 5,000,000" in capsys.readouterr().err
    assert os.environ.pop("ANIMEID_MAX_PIXELS") == "5000000"
