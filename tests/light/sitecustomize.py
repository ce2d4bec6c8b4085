"""Loaded at start-up by the Python of tests/test_light_install.py (PYTHONPATH): makes the packages of
animeid's extras unimportable, as in a prediction-only install (`pip install animeid[serve]`)."""
import os
import sys

BLOCKED = frozenset(filter(None, os.environ.get("ANIMEID_TEST_BLOCK", "").split(",")))


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
