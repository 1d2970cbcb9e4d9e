"""bench/ab.py's TREE[@SECTION.KEY=VALUE,...] arguments: the tree and the settings it runs
with, whatever ``@`` the path or a value holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # as `python bench/ab.py` runs: run.py beside it

from ab import _tree  # noqa: E402


@pytest.mark.parametrize(("spec", "tree", "settings"), [
    (".", ".", []),
    (".@recorder.writer_nice=15", ".", ["recorder.writer_nice=15"]),
    ("/tmp/a@b/tree@server.port=1,recorder.writer_nice=5", "/tmp/a@b/tree",
     ["server.port=1", "recorder.writer_nice=5"]),
    ("/tmp/a@b/tree", "/tmp/a@b/tree", []),
    # A PostgreSQL URL names its user before an @: the value keeps it, the tree is ".".
    (".@storage.url=postgresql://postgres@127.0.0.1:5432/bench", ".",
     ["storage.url=postgresql://postgres@127.0.0.1:5432/bench"]),
    ("/tmp/a@b@storage.url=postgresql://u@h/db,server.port=1", "/tmp/a@b",
     ["storage.url=postgresql://u@h/db", "server.port=1"]),
])
def test_a_tree_and_its_settings(spec: str, tree: str, settings: list[str]) -> None:
    assert _tree(spec) == (Path(tree), settings)
