"""The one registry (issue 16 §2): backbones, methods, heads and detectors are Registry objects; an
unknown name is an UnknownNameError listing the known ones; the CLI's choices come from them."""
from __future__ import annotations

import pytest

from animeid.errors import AnimeidError, UnknownNameError
from animeid.registry import Registry


def test_a_registry_keeps_order_lists_by_pattern_and_names_the_known_ones():
    r: Registry[int] = Registry("colour", option="colour", hint="or a hex code")
    r.register("red", 1)
    r.register("green", 2)

    @r.decorator("blue", make=lambda fn: fn())
    def _blue():
        return 3

    assert list(r) == ["red", "green", "blue"] and r.list("*e*") == ["red", "green", "blue"] and r.list("g*") == ["green"]
    assert r.get("blue") == 3 and r["red"] == 1 and len(r) == 3 and "red" in r
    with pytest.raises(ValueError, match="'red' is already registered"):
        r.register("red", 9)
    r.register("red", 9, overwrite=True)
    assert r["red"] == 9
    with pytest.raises(UnknownNameError) as e:
        r.get("mauve")
    assert isinstance(e.value, AnimeidError) and isinstance(e.value, ValueError) and e.value.option == "colour"
    assert str(e.value) == "colour: unknown colour 'mauve'; known: red, green, blue, or a hex code"


def test_every_named_thing_lives_in_one():
    from animeid.backbones import _REGISTRY, list_backbones
    from animeid.detect import DETECTORS
    from animeid.heads import HEADS, head_from_arrays
    from animeid.train import METHODS

    for reg in (_REGISTRY, DETECTORS, HEADS, METHODS):
        assert isinstance(reg, Registry)
    assert list_backbones("efficientnet*") == sorted(_REGISTRY.list("efficientnet*"))
    assert METHODS.list() == ["forest", "softmax", "logistic", "finetune", "auto"]
    assert DETECTORS.list() == ["default", "animeface"]
    with pytest.raises(UnknownNameError, match="unknown head 'Nope'; known: PixelForest"):
        head_from_arrays("Nope", {})


def test_the_cli_choices_come_from_the_registries():
    from animeid.cli import build_parser
    from animeid.train import METHODS

    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "command").choices
    method = next(a for a in sub["train"]._actions if a.dest == "method")
    assert list(method.choices) == METHODS.list()
