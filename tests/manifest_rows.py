"""Rows of a workspace's ``manifest.sqlite`` for tests to compare: one way to query it, and the query
of the stored faces that several test files compare whole (collect locally, resumed, on a cluster)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

#: every stored face, in the order it was stored: crop file, source, time, page, box, score, hash, label
FACES = ("SELECT f.file, s.path, f.time, f.page, f.x0, f.y0, f.x1, f.y1, round(f.score, 4), f.phash, f.label "
         "FROM faces f JOIN sources s ON s.id = f.source_id ORDER BY f.id")


def rows(ws: Path, sql: str) -> list[tuple]:
    """The rows ``sql`` gives on the workspace ``ws``'s manifest (the connection closed after)."""
    con = sqlite3.connect(Path(ws) / "manifest.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def manifest(ws: Path) -> list[tuple]:
    """:data:`FACES` of ``ws``."""
    return rows(ws, FACES)
