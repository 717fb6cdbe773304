"""What every command line has: a version, and log lines dated in ISO 8601 UTC."""
from __future__ import annotations

import logging
import re

from tests.e2e_world import run_cli


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and re.fullmatch(r"setmail \S+\n", out)


def test_log_lines_carry_an_iso_8601_utc_date(tmp_path, capsys):
    from setmail.cli.common import setup_logging
    log_file = tmp_path / "agents.log"
    setup_logging(log_file=log_file)
    try:
        logging.getLogger("setmail.agent").info("alice    IN   PRes")
    finally:
        root = logging.getLogger("setmail")
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = []
    line = log_file.read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z alice    IN   PRes\n", line)
    assert line in capsys.readouterr().err
