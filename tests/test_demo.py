"""The demo is part of the product: it must run and every check in it must hold."""
import subprocess
import sys


def test_demo_runs_and_all_checks_pass():
    r = subprocess.run([sys.executable, "-m", "setmail.demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout
    assert "4111111111111111" not in r.stdout  # the demo never prints a full card number
