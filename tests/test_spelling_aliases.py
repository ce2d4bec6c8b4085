"""One spelling in identifiers (issue 16 §5): `enroll` and `color`, as the CLI's commands, the web API's
paths and the model files already spell them. Names users or scripts depend on keep their older
spelling as an alias: `serve --save-enrolments`, `create_app(save_enrolments=...)`, the characters
answer's `saves_enrolments`. Generated data only."""
from __future__ import annotations

import shutil

import pytest


@pytest.mark.parametrize("flag", ["--save-enrollments", "--save-enrolments"])
def test_serve_takes_both_spellings_of_save_enrollments(flag, capsys):
    from animeid.cli import build_parser

    p = build_parser()
    assert p.parse_args(["serve", "m.animeid", flag]).save_enrollments is True
    note = capsys.readouterr().err
    assert note == ("animeid: note: --save-enrolments is now --save-enrollments; the old spelling still works for "
                    "now\n" if flag == "--save-enrolments" else ""), "the older spelling says so, as README promises"
    assert p.parse_args(["serve", "m.animeid"]).save_enrollments is False


def test_create_app_refuses_the_two_spellings_disagreeing(generated_model):
    pytest.importorskip("fastapi")
    from animeid.serve import create_app

    with pytest.raises(TypeError, match="disagree"):
        create_app(generated_model.path, save_enrollments=True, save_enrolments=False)


@pytest.mark.parametrize("keyword", ["save_enrollments", "save_enrolments"])
def test_create_app_takes_both_spellings_and_answers_both_keys(generated_model, tmp_path, keyword):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from animeid.serve import create_app

    mf = tmp_path / "m.animeid"
    shutil.copy(generated_model.path, mf)
    app = create_app(mf, **{keyword: True})
    settings = app.state.animeid.settings
    assert settings.save_enrollments is True and settings.save_enrolments is True
    with TestClient(app) as c:
        chars = c.get("/api/v1/characters").json()
    assert chars["saves_enrollments"] is True and chars["saves_enrolments"] is True
    with TestClient(create_app(mf)) as c:
        chars = c.get("/api/v1/characters").json()
    assert chars["saves_enrollments"] is False and chars["saves_enrolments"] is False
