"""``detect="auto"`` on small square-ish pictures (the shape of face crops): read whole first; one
confidently named is a face crop without a face search, the others are searched as before, with the
same results as searching first. Drawn faces only (conftest's generated_model)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def rec(generated_model):
    from animeid.predict import Recognizer

    return Recognizer.load(generated_model.path)


@pytest.fixture(scope="module")
def crops(generated_model) -> list:
    return [p for c in generated_model.chars[:4] for p in generated_model.held_out(c)] + \
        generated_model.held_out(generated_model.strangers[0])


@pytest.fixture
def searched(monkeypatch) -> list:
    """The pictures each face search is given (how many per call)."""
    import animeid.detect as D

    calls: list[int] = []
    real = D.detect_faces_batch
    monkeypatch.setattr(D, "detect_faces_batch", lambda imgs, **kw: calls.append(len(imgs)) or real(imgs, **kw))
    return calls


def _names(results):
    return [([(f["name"], f["box"]) for f in r["faces"]], (r.get("whole_picture") or {}).get("name"))
            for r in results]


def test_confidently_named_crops_are_not_searched(rec, crops, searched):
    from animeid.predict import PredictConfig, Recognizer

    cfg = PredictConfig()
    t = rec._threshold(cfg, rec.openset)
    proba, score = rec.predict_open_faces(crops)
    settled = [Recognizer._settled(p, s, t) for p, s in zip(proba, score)]
    assert 0 < sum(settled) < len(crops)          # both kinds among them: the stranger's faces are not settled
    res = rec.predict_batch(crops, cfg)
    assert sum(searched) == len(crops) - sum(settled)     # only the others were searched
    for r, ok in zip(res, settled):
        if ok:                                     # the whole picture is the face
            assert [f["box"] for f in r["faces"]] == [[0, 0, 96, 96]] and not r["faces"][0]["unknown"]
    never = rec.predict_batch(crops, PredictConfig(detect="never"))
    assert [r["faces"][0]["name"] for r, ok in zip(never, settled) if ok] == \
        [r["faces"][0]["name"] for r, ok in zip(res, settled) if ok]


def test_unsettled_pictures_get_what_searching_first_gives(rec, crops, monkeypatch):
    from animeid.predict import PredictConfig, Recognizer

    cfg = PredictConfig(top=2)
    monkeypatch.setattr(Recognizer, "_settled", staticmethod(lambda p, s, t: False))
    later = rec.predict_batch(crops, cfg)
    monkeypatch.setattr(Recognizer, "_whole_first", lambda self, imgs, cfg: set())
    first = rec.predict_batch(crops, cfg)
    assert later == first
    assert _names(later) == _names(first)


@pytest.mark.parametrize("cfg", [dict(unknown=False), dict(detect="always")])
def test_without_unknown_answers_or_with_faces_only_every_picture_is_searched(rec, crops, searched, cfg):
    from animeid.predict import PredictConfig

    rec.predict_batch(crops, PredictConfig(**cfg))
    assert sum(searched) == len(crops)


def test_large_or_wide_pictures_are_searched_first(rec, generated_model, searched, tmp_path):
    from PIL import Image

    from animeid.predict import PredictConfig

    face = Image.open(generated_model.held_out(generated_model.chars[0])[0])
    big, wide = tmp_path / "big.png", tmp_path / "wide.png"
    face.resize((300, 300)).save(big)
    canvas = Image.new("RGB", (200, 96), (240, 240, 240))
    canvas.paste(face, (52, 0))
    canvas.save(wide)
    rec.predict_batch([big, wide], PredictConfig())
    assert searched == [2]
