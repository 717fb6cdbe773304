"""The import contracts of pyproject.toml ([tool.importlinter]) hold: layers point downwards only,
and the protocol layers are sans-I/O (docs/architecture.md).

Why a test and not a separate lint step: the suite is what every engineer and CI runs, so an
upward import (also a lazy one inside a function) fails where it is written, with its chain.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``setmail`` found in ``package_parent``, in a fresh interpreter
    (import-linter builds its graph from ``sys.path``), without a cache file in the tree."""
    env = dict(os.environ, PYTHONPATH=str(package_parent), NO_COLOR="1", COLUMNS="200")
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo", str(CONFIG)],
                          cwd=package_parent, env=env, capture_output=True, text=True,
                          timeout=120)


def broken_part(result: subprocess.CompletedProcess) -> str:
    """The report from its "Broken contracts" heading on (each violating chain with its line)."""
    out = result.stdout + result.stderr
    start = out.find("Broken contracts")
    return out[start:] if start >= 0 else out


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, "import contracts broken:\n" + broken_part(result)
    assert "0 broken" in result.stdout


def test_a_lazy_upward_import_is_caught(tmp_path):
    """The contracts are not vacuous: one upward import hidden in a function of a copy of the
    package (crypto -> pki, the circle issue 12 removed) breaks the layers contract, by name."""
    copy = tmp_path / "setmail"
    shutil.copytree(ROOT / "setmail", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "crypto" / "suite.py", "a") as f:
        f.write("\n\ndef _probe():\n    from setmail.pki import parse\n    return parse\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    report = broken_part(result)
    assert "setmail.crypto is not allowed to import setmail.pki" in report
    assert "setmail.crypto.suite -> setmail.pki.parse" in report
