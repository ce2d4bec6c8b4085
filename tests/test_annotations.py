"""Annotation formats read by animeid.detect.annotations (boxes.json, COCO, YOLO, VOC): what each
reads on small hand-made sets (exact boxes, ignore regions, the folders each format's files may sit
in), and every malformed input refused with an InputError naming the file and the problem.

Pictures are drawn here (plain PNGs); no model, no ../shared/data.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.detect.annotations import Annotated, detect_format, load_boxes, load_many, save_boxes_json
from animeid.errors import InputError

W, H = 200, 100


def _pic(path: Path, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 60, 30)).save(path)
    return path


def _refused(path, fmt: str = "auto") -> str:
    """The message of the InputError that loading ``path`` raises."""
    with pytest.raises(InputError) as e:
        load_boxes(path, fmt)
    return str(e.value)


def _voc(objects: list[tuple[list[float], bool]]) -> str:
    objs = "".join(f"<object><name>face</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for b, d in objects)
    return f"<annotation><filename>x</filename>{objs}</annotation>"


# ------------------------------------------------------------------------------------------- boxes.json

def test_boxes_json_bare_lists_comments_and_boxes_clipping_leaves_tiny(tmp_path):
    _pic(tmp_path / "a.png")
    _pic(tmp_path / "sub" / "b.png", (50, 40))
    (tmp_path / "boxes.json").write_text(json.dumps({
        "_about": "keys starting with _ are comments",
        "a.png": [[10, 20, 30, 40], [199.5, 10, 260, 50]],         # a bare list; the second clips to 0.5 px wide
        "sub/b.png": {"faces": [[0, 0, 25, 20]], "ignore": [[-5, -5, 10, 10]]},   # faces as bare boxes too
    }))
    a, b = load_boxes(tmp_path / "boxes.json")                        # the file itself, as the folder
    assert (a.image, a.size, a.boxes.tolist(), a.ignore.shape) == (tmp_path / "a.png", (W, H), [[10, 20, 30, 40]],
                                                                   (0, 4))
    assert (b.image, b.size, b.boxes.tolist(), b.ignore.tolist()) == (tmp_path / "sub" / "b.png", (50, 40),
                                                                      [[0, 0, 25, 20]], [[0, 0, 10, 10]])
    assert a.boxes.dtype == np.float32 and detect_format(tmp_path) == "boxes.json"


@pytest.mark.parametrize("content, message", [
    ({"_about": "only a comment"}, "holds no pictures"),
    ({"pic.png": "face at 10,10"}, "pic.png: expected {\"faces\": [{\"box\": [x0, y0, x1, y1]}, ...]}, "
                                   "got 'face at 10,10'"),
    ({"pic.png": {"faces": {"box": [1, 2, 3, 4]}}}, "pic.png: expected {\"faces\""),
    ({"pic.png": {"faces": [], "ignore": 5}}, "pic.png: \"ignore\" is a list of boxes [x0, y0, x1, y1], got 5"),
    ({"pic.png": {"faces": [{"kind": "face"}]}}, "pic.png: a box is four numbers [x0, y0, x1, y1], got None"),
    ({"pic.png": {"faces": [{"box": ["a", 2, 3, 4]}]}}, "a box is four numbers [x0, y0, x1, y1], got ['a', 2, 3, 4]"),
    ({"pic.png": {"faces": [{"box": [1, 2, 3, 4, 5]}]}}, "a box is four numbers"),
    ({"pic.png": {"faces": [{"box": [0, 0, 1e999, 5]}]}}, "a box needs x0 < x1 and y0 < y1"),   # inf
    ({"pic.png": {"faces": [{"box": [10, 50, 20, 50]}]}}, "a box needs x0 < x1 and y0 < y1, got [10, 50, 20, 50]"),
    ({"pic.png": {"faces": [], "ignore": [[-30, 0, -1, 10]]}},
     "pic.png: the box [-30, 0, -1, 10] lies wholly outside the 200x100 picture"),
    ({"pic.png": {"faces": [{"box": [0, 100, 10, 120]}]}}, "lies wholly outside the 200x100 picture"),
    ({"other.png": {"faces": []}}, "names the picture 'other.png', which does not exist"),
])
def test_bad_boxes_json_is_refused_naming_the_file(tmp_path, content, message):
    _pic(tmp_path / "pic.png")
    (tmp_path / "boxes.json").write_text(json.dumps(content))
    msg = _refused(tmp_path)
    assert msg.startswith(f"{tmp_path / 'boxes.json'}: ") and message in msg, msg


def test_unreadable_files_are_said_not_raised_as_tracebacks(tmp_path):
    _pic(tmp_path / "pic.png")
    (tmp_path / "boxes.json").write_bytes(b'{"pic.png": [], "caf\xe9": []}')          # Latin-1, not UTF-8
    assert _refused(tmp_path) == f"{tmp_path / 'boxes.json'}: not a UTF-8 text file"
    (tmp_path / "boxes.json").write_text('{"pic.png": [[1, 2, 3, 4]],\n "x": }')
    assert _refused(tmp_path) == f"{tmp_path / 'boxes.json'}: not valid JSON (line 2, column 7: Expecting value)"
    (tmp_path / "boxes.json").write_text("  \n")
    assert _refused(tmp_path) == f"{tmp_path / 'boxes.json'}: empty annotation file"
    # a picture that is no picture: named itself
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but cut short")
    (tmp_path / "boxes.json").write_text('{"broken.png": []}')
    assert _refused(tmp_path) == f"{tmp_path / 'broken.png'}: not a readable picture (UnidentifiedImage error)"
    # --format boxes.json on a folder without one: said, not a FileNotFoundError traceback (fixed)
    (tmp_path / "boxes.json").unlink()
    assert _refused(tmp_path, "boxes.json") == \
        f"{tmp_path / 'boxes.json'}: cannot be read (No such file or directory)"


# ------------------------------------------------------------------------------------------- COCO

def _coco(path: Path, images, annotations, categories=None) -> Path:
    data = {"images": images, "annotations": annotations}
    if categories is not None:
        data["categories"] = categories
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_crowds_are_ignore_regions_and_every_category_counts_without_a_face_one(tmp_path):
    _pic(tmp_path / "images" / "p1.png")          # file names resolved beside the file or under images/
    _pic(tmp_path / "p2.png", (64, 48))
    f = _coco(tmp_path / "annotations" / "set.json",
              [{"id": "one", "file_name": "p1.png"}, {"id": 2, "file_name": "p2.png"}],
              [{"image_id": "one", "category_id": 3, "bbox": [10, 10, 20, 30]},
               {"image_id": "one", "category_id": 4, "bbox": [50, 5, 10, 10], "iscrowd": 1},
               {"image_id": 2, "category_id": 4, "bbox": [60, 40, 10, 10]}],      # clipped to [60, 40, 64, 48]
              [{"id": 3, "name": "head"}, {"id": 4, "name": "Person"}])
    assert detect_format(tmp_path) == "coco" and detect_format(f) == "coco"
    p1, p2 = load_boxes(tmp_path)
    assert (p1.image, p1.boxes.tolist(), p1.ignore.tolist()) == (tmp_path / "images" / "p1.png",
                                                                 [[10, 10, 30, 40]], [[50, 5, 60, 15]])
    assert (p2.image, p2.size, p2.boxes.tolist(), p2.ignore.shape) == (tmp_path / "p2.png", (64, 48),
                                                                       [[60, 40, 64, 48]], (0, 4))
    # the file itself: names resolved beside it (annotations/), where p1.png is not
    assert _refused(f) == f"{f}: names the picture 'p1.png', which does not exist"


def test_coco_with_a_face_category_keeps_only_it_and_without_categories_keeps_all(tmp_path):
    _pic(tmp_path / "p.png")
    anns = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]},
            {"image_id": 1, "bbox": [40, 40, 10, 10]}]                      # no category
    f = _coco(tmp_path / "c.json", [{"id": 1, "file_name": "p.png"}], anns,
              [{"id": 1, "name": "FACE"}, {"id": 2, "name": "hand"}])
    assert load_boxes(f, "coco")[0].boxes.tolist() == [[0, 0, 10, 10]]
    _coco(f, [{"id": 1, "file_name": "p.png"}], anns)
    assert load_boxes(f)[0].boxes.tolist() == [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    _coco(f, [{"id": 1, "file_name": "p.png"}], anns, [])
    assert len(load_boxes(f)[0].boxes) == 3
    _coco(f, [{"id": 1, "file_name": "p.png"}], [])                           # a picture with no face
    [a] = load_boxes(f)
    assert a.boxes.shape == (0, 4) and a.ignore.shape == (0, 4)


@pytest.mark.parametrize("data, message", [
    ([], "a COCO file has \"images\" and \"annotations\" lists"),
    ({"images": {}, "annotations": []}, "a COCO file has \"images\" and \"annotations\" lists"),
    ({"images": [], "annotations": [], "categories": {"1": "face"}}, "(and \"categories\", a list)"),
    ({"images": [], "annotations": []}, "holds no pictures"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "annotations": [{"image_id": 1}]},
     "an annotation needs \"image_id\" and \"bbox\", got {'image_id': 1}"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "annotations": ["0 0 10 10"]},
     "an annotation needs \"image_id\" and \"bbox\""),
    ({"images": [{"id": 1, "file_name": "p.png"}], "annotations": [{"image_id": 1, "bbox": [1, 2, 3]}]},
     "a COCO bbox is [x, y, width, height], got [1, 2, 3]"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "annotations": [{"image_id": 1, "bbox": None}]},
     "a COCO bbox is [x, y, width, height], got None"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "annotations": [{"image_id": 1, "bbox": [5, 5, -2, 4]}]},
     "p.png: a box needs x0 < x1 and y0 < y1, got [5.0, 5.0, 3.0, 9.0]"),
    ({"images": [{"file_name": "p.png"}], "annotations": []},
     "an image needs \"id\" and \"file_name\" (a string), got {'file_name': 'p.png'}"),
    ({"images": [{"id": 1, "file_name": 7}], "annotations": []}, "an image needs \"id\" and \"file_name\""),
    # ids that JSON allows and a dict does not (were TypeError tracebacks: fixed)
    ({"images": [{"id": [1], "file_name": "p.png"}], "annotations": []},
     "an image's \"id\" is a number or a string, got [1]"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "annotations": [{"image_id": {"id": 1}, "bbox": [0, 0, 1, 1]}]},
     "an annotation's \"image_id\" is a number or a string, got {'id': 1}"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "categories": [{"id": 1, "name": "face"}],
      "annotations": [{"image_id": 1, "category_id": [1], "bbox": [0, 0, 1, 1]}]},
     "an annotation's \"category_id\" is a number or a string, got [1]"),
    ({"images": [{"id": 1, "file_name": "p.png"}], "categories": [{"id": True, "name": "face"}], "annotations": []},
     "a category's \"id\" is a number or a string, got True"),
    ({"images": [{"id": 1, "file_name": "gone.png"}], "annotations": []},
     "names the picture 'gone.png', which does not exist"),
])
def test_bad_coco_is_refused_naming_the_file(tmp_path, data, message):
    _pic(tmp_path / "p.png")
    f = tmp_path / "coco.json"
    f.write_text(json.dumps(data))
    msg = _refused(f, "coco")
    assert msg.startswith(f"{f}: ") and message in msg, msg


def test_coco_format_on_a_folder_without_a_coco_file_is_refused_not_empty(tmp_path):
    """Was an empty list: 'animeid detector evaluate --format coco' scored 0 pictures and said nothing."""
    _pic(tmp_path / "p.png")
    (tmp_path / "notes.json").write_text('{"p.png": []}')                # a boxes.json-like file, not COCO
    assert _refused(tmp_path, "coco") == \
        f"{tmp_path}: no COCO .json file (with \"images\" and \"annotations\") here or in annotations/"
    assert detect_format(tmp_path / "notes.json") == "boxes.json"


# ------------------------------------------------------------------------------------------- YOLO

def test_yolo_labels_beside_pictures_in_a_sister_folder_and_in_labels(tmp_path):
    _pic(tmp_path / "beside.png")
    (tmp_path / "beside.txt").write_text("0 0.5 0.5 0.2 0.4\n\n   \n3 0.1 0.1 0.2 0.2 0.93\n")  # blanks; a score column
    _pic(tmp_path / "images" / "train" / "deep.jpg")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "deep.txt").write_text("1 0.25 0.75 0.5 0.5\n")
    _pic(tmp_path / "other" / "flat.png", (100, 100))
    (tmp_path / "labels" / "flat.txt").write_text("0 0.5 0.5 0.004 0.5\n0 0.5 0.5 1.4 0.2\n")  # 0.4 px wide: left out
    assert detect_format(tmp_path) == "yolo"
    got = {a.image.relative_to(tmp_path).as_posix(): a for a in load_boxes(tmp_path)}
    assert sorted(got) == ["beside.png", "images/train/deep.jpg", "other/flat.png"]
    assert np.allclose(got["beside.png"].boxes, [[80, 30, 120, 70], [0, 0, 40, 20]])
    assert np.allclose(got["images/train/deep.jpg"].boxes, [[0, 50, 100, 100]])
    assert np.allclose(got["other/flat.png"].boxes, [[0, 40, 100, 60]])      # 1.4 wide: clipped to the picture


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "line 2: a YOLO line is 'class cx cy w h' (relative 0..1), got '0 0.5 0.5 0.2'"),
    ("face 0.5 0.5 0.2 0.2", "line 2: a YOLO line is 'class cx cy w h'"),
    ("0 120 40 30 30", "line 2: YOLO coordinates are relative to the picture (0..1), got '0 120 40 30 30'"),
    ("0 0.5 0.5 -0.1 0.2", "pic.png: a box needs x0 < x1 and y0 < y1"),
    ("0 1.375 0.5 0.25 0.25", "pic.png: the box [250.0, 37.5, 300.0, 62.5] lies wholly outside the 200x100 picture"),
])
def test_bad_yolo_lines_are_refused_naming_the_file_and_line(tmp_path, line, message):
    _pic(tmp_path / "pic.png")
    (tmp_path / "pic.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    msg = _refused(tmp_path, "yolo")
    assert msg.startswith(f"{tmp_path / 'pic.txt'}: ") and message in msg, msg


def test_yolo_and_voc_on_folders_with_no_pictures_are_refused_not_empty(tmp_path):
    """Were empty lists (nothing said) with --format yolo / voc."""
    (tmp_path / "empty").mkdir()
    for fmt in ("yolo", "voc"):
        assert _refused(tmp_path / "empty", fmt) == f"{tmp_path / 'empty'}: folder holds no pictures"
        assert _refused(tmp_path / "nowhere", fmt) == f"{tmp_path / 'nowhere'}: no such folder (give the folder of " \
                                                      f"a {fmt} set)"
    assert _refused(tmp_path / "empty") == f"{tmp_path / 'empty'}: folder holds no pictures and no annotation file"
    assert _refused(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'}: no such file or folder"


# ------------------------------------------------------------------------------------------- VOC

def test_voc_in_annotations_beside_jpegimages_with_difficult_as_ignore(tmp_path):
    _pic(tmp_path / "JPEGImages" / "a.jpg")
    _pic(tmp_path / "JPEGImages" / "b.jpg")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(_voc([([10, 10, 50, 60], False), ([60, 0, 90, 30], True),
                                                          ([150, 50, 230, 120], False)]))
    (tmp_path / "Annotations" / "b.xml").write_text("<annotation><object><name>face</name><bndbox><xmin> 1 </xmin>"
                                                    "<ymin>2</ymin><xmax>3.5</xmax><ymax>4.5</ymax></bndbox>"
                                                    "<difficult> 0 </difficult></object></annotation>")
    assert detect_format(tmp_path) == "voc"
    a, b = load_boxes(tmp_path)
    assert (a.boxes.tolist(), a.ignore.tolist()) == ([[10, 10, 50, 60], [150, 50, 200, 100]], [[60, 0, 90, 30]])
    assert (b.boxes.tolist(), b.ignore.shape) == ([[1, 2, 3.5, 4.5]], (0, 4))


@pytest.mark.parametrize("xml, message", [
    ("<annotation><object><name>face</name></object></annotation>", "an <object> without <bndbox>"),
    ("<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object></annotation>",
     "a <bndbox> needs numeric xmin, ymin, xmax, ymax"),
    ("<annotation><object><bndbox><xmin>one</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
     "</annotation>", "a <bndbox> needs numeric xmin, ymin, xmax, ymax"),
    ("<annotation><object>", "not valid XML (no element found: line 1, column 20)"),
    ("", "not valid XML (no element found: line 1, column 0)"),
    (_voc([([50, 20, 40, 80], False)]), "pic.png: a box needs x0 < x1 and y0 < y1"),
])
def test_bad_voc_is_refused_naming_the_file(tmp_path, xml, message):
    _pic(tmp_path / "pic.png")
    (tmp_path / "pic.xml").write_text(xml)
    msg = _refused(tmp_path, "voc")
    assert msg.startswith(f"{tmp_path / 'pic.xml'}: ") and message in msg, msg


def test_a_picture_without_its_label_file_is_named(tmp_path):
    _pic(tmp_path / "a.png")
    _pic(tmp_path / "b.png")
    (tmp_path / "a.xml").write_text(_voc([([1, 1, 9, 9], False)]))
    assert _refused(tmp_path) == f"{tmp_path}: the picture 'b.png' has no annotation file (b.xml)"
    (tmp_path / "a.xml").unlink()
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert _refused(tmp_path) == f"{tmp_path}: the picture 'b.png' has no label file (b.txt)"


# ------------------------------------------------------------------------------------------- the rest

def test_format_detection_and_unknown_formats_are_said(tmp_path):
    _pic(tmp_path / "p.png")
    (tmp_path / "p.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert _refused(tmp_path / "p.txt") == (f"{tmp_path / 'p.txt'}: an annotation file is boxes.json or a COCO "
                                            ".json; give the folder for YOLO or VOC")
    assert _refused(tmp_path, "kitti") == "unknown annotation format 'kitti'; known: auto, boxes.json, coco, yolo, voc"
    # a COCO file in a folder of YOLO labels wins (it is the more explicit), and a broken .json is said
    _coco(tmp_path / "c.json", [{"id": 1, "file_name": "p.png"}], [{"image_id": 1, "bbox": [0, 0, 4, 4]}])
    assert detect_format(tmp_path) == "coco"
    (tmp_path / "c.json").write_text("{")
    assert _refused(tmp_path) == f"{tmp_path / 'c.json'}: not valid JSON (line 1, column 2: Expecting property " \
                                 "name enclosed in double quotes)"


def test_save_boxes_json_round_trips_boxes_and_ignore_regions(tmp_path):
    _pic(tmp_path / "one" / "a.png")
    _pic(tmp_path / "two" / "b.png")
    items = [Annotated(tmp_path / "one" / "a.png", np.array([[1.04, 2, 30.26, 40]], np.float32),
                       np.array([[50, 50, 60, 70]], np.float32)),
             Annotated(tmp_path / "two" / "b.png", np.zeros((0, 4), np.float32))]
    save_boxes_json(tmp_path / "boxes.json", items, about="made by a test")
    assert json.loads((tmp_path / "boxes.json").read_text()) == {
        "_about": "made by a test",
        "one/a.png": {"faces": [{"box": [1.0, 2.0, 30.3, 40.0]}], "ignore": [[50.0, 50.0, 60.0, 70.0]]},
        "two/b.png": {"faces": []}}
    a, b = load_boxes(tmp_path)
    assert (a.boxes.tolist(), a.ignore.tolist(), b.boxes.shape) == ([[1.0, 2.0, 30.299999237060547, 40.0]],
                                                                    [[50, 50, 60, 70]], (0, 4))


def test_load_many_joins_formats_in_order(tmp_path):
    _pic(tmp_path / "voc" / "v.png")
    (tmp_path / "voc" / "v.xml").write_text(_voc([([1, 1, 9, 9], False)]))
    _pic(tmp_path / "js" / "j.png")
    (tmp_path / "js" / "boxes.json").write_text('{"j.png": [[2, 2, 8, 8]]}')
    got = load_many([tmp_path / "voc", tmp_path / "js"])
    assert [(a.image.name, a.boxes.tolist()) for a in got] == [("v.png", [[1, 1, 9, 9]]), ("j.png", [[2, 2, 8, 8]])]
    assert load_many([]) == []


def test_the_real_command_says_a_missing_or_empty_set_in_one_line(tmp_path):
    """`animeid detector evaluate --format F` on a folder with no such annotations: exit 1 and one line
    (was a FileNotFoundError traceback for boxes.json, and a table of 0 pictures for yolo / voc / coco)."""
    import subprocess
    import sys

    for fmt, why in (("boxes.json", f"{tmp_path / 'boxes.json'}: cannot be read (No such file or directory)"),
                     ("voc", f"{tmp_path}: folder holds no pictures")):
        r = subprocess.run([sys.executable, "-m", "animeid", "detector", "evaluate", "animeface", "--boxes",
                            str(tmp_path), "--format", fmt], capture_output=True, text=True, timeout=300)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"animeid detector evaluate: error: {why}\n")
