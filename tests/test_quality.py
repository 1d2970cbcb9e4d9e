"""The code stays ruff- and mypy-clean, and CI runs what the README promises."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import REPO


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```sh\n(python3 -m venv[^\n]+)\n```", readme)
    assert len(commands) == 2, "the README states exactly two set-up commands"
    serve, test = commands
    assert "linkloop serve --demo" in serve and "pytest" in test
    assert test in (REPO / ".ci" / "run").read_text()
