"""The picture loader's checks on paths, and the shared file check behind it (and videos, model files)."""
from __future__ import annotations

import pytest

from animeid._util import check_file
from animeid.errors import InputError, ModelFileError
from animeid.images import load_image


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("folder", "is a folder, not a picture"),
    ("empty", "empty file (0 bytes), not a picture"),
])
def test_load_image_names_the_file_and_the_problem(tmp_path, case, message):
    p = {"missing": tmp_path / "nope.png", "folder": tmp_path, "empty": tmp_path / "empty.png"}[case]
    if case == "empty":
        p.write_bytes(b"")
    with pytest.raises(InputError) as e:
        load_image(p)
    assert str(e.value) == f"{p}: {message}"


def test_check_file_keeps_the_callers_error_class_and_wording(tmp_path):
    f = tmp_path / "m.animeid"
    f.write_bytes(b"x")
    assert check_file(str(f), "an animeid model file", ModelFileError) == f
    with pytest.raises(ModelFileError, match="no such model file"):
        check_file(tmp_path / "nope", "an animeid model file", ModelFileError, missing="no such model file")
    with pytest.raises(ModelFileError, match="is a folder, not an animeid model file"):
        check_file(tmp_path, "an animeid model file", ModelFileError)


def test_walk_files_follows_folder_links_once(tmp_path):
    """Folders reached through symbolic links are searched (a user's folder of linked character
    folders), hidden entries skipped, and a link loop ends."""
    from PIL import Image

    from animeid.images import iter_image_files, walk_files

    real = tmp_path / "real"
    (real / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(real / "a" / "1.png")
    (real / "a" / ".hidden.png").write_bytes(b"x")
    (real / "a" / "notes.txt").write_text("x")
    top = tmp_path / "top"
    top.mkdir()
    (top / "linked").symlink_to(real / "a", target_is_directory=True)
    (top / "loop").symlink_to(top, target_is_directory=True)
    assert [p.name for p in walk_files(top)] == ["1.png", "notes.txt"]
    assert [p.name for p in iter_image_files([top])] == ["1.png"]
