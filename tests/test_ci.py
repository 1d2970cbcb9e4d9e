"""CI's strictness about skips (tests/conftest.py), run on a small suite of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, STRICT_SKIPS_VAR

SUITE = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no widget on this machine")
"""


def _pytest(folder: Path, *, strict: bool, allowed: str = "", target: str = "test_suite.py",
            ) -> subprocess.CompletedProcess[str]:
    """The small suite under our conftest's hooks (ALLOWED_SKIPS as ``allowed`` sets it)."""
    plugin = folder / "ci_hooks.py"
    plugin.write_text("from tests.conftest import *  # noqa: F403\n"
                      "from tests import conftest\n"
                      f"conftest.ALLOWED_SKIPS = ({allowed})\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != STRICT_SKIPS_VAR}
    if strict:
        env[STRICT_SKIPS_VAR] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(folder)])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ci_hooks",
         "--rootdir", str(folder), str(folder / target)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "test_suite.py").write_text(SUITE, encoding="utf-8")
    return tmp_path


def test_a_skip_fails_the_run_only_when_ci_is_strict(suite: Path) -> None:
    relaxed = _pytest(suite, strict=False)
    assert relaxed.returncode == 0, relaxed.stdout
    strict = _pytest(suite, strict=True)
    assert strict.returncode == 1, strict.stdout
    assert "1 unexpected skips" in strict.stdout
    assert "test_suite.py::test_skips: no widget on this machine" in strict.stdout


def test_a_skip_on_the_allow_list_passes(suite: Path) -> None:
    allowed = _pytest(suite, strict=True, allowed='("no widget", "widgets are not sold here"),')
    assert allowed.returncode == 0, allowed.stdout
    other = _pytest(suite, strict=True, allowed='("no gadget", "gadgets neither"),')
    assert other.returncode == 1, other.stdout


#: Other places a test can skip from, each in a module beside one that runs: the skip's
#: module and source, and the line the strict run names it by.
SKIPS_ELSEWHERE = {
    "a whole module, at collection": (
        'import pytest\npytest.skip("no widget module", allow_module_level=True)\n',
        "test_skip.py: no widget module"),
    "importorskip": (
        'import pytest\npytest.importorskip("no_widget_module_here")\n',
        "test_skip.py: could not import 'no_widget_module_here'"),
    "a fixture": (
        "import pytest\n\n@pytest.fixture\ndef widget():\n"
        '    pytest.skip("no widget fixture")\n\ndef test_uses(widget):\n    pass\n',
        "test_skip.py::test_uses: no widget fixture"),
    "a marker": (
        'import pytest\n\n@pytest.mark.skipif(True, reason="no widget marker")\n'
        "def test_marked():\n    pass\n",
        "test_skip.py::test_marked: no widget marker"),
}


@pytest.mark.parametrize("where", SKIPS_ELSEWHERE)
def test_a_skip_fails_the_strict_run_wherever_it_is_made(tmp_path: Path, where: str) -> None:
    source, named = SKIPS_ELSEWHERE[where]
    (tmp_path / "test_runs.py").write_text("def test_runs():\n    pass\n", encoding="utf-8")
    (tmp_path / "test_skip.py").write_text(source, encoding="utf-8")
    strict = _pytest(tmp_path, strict=True, target=".")
    assert strict.returncode == 1, strict.stdout
    assert "1 unexpected skips" in strict.stdout and named in strict.stdout, strict.stdout
