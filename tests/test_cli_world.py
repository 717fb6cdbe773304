"""The command line end to end: init -> run -> register --wait -> mailbox list/show; exit codes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from setmail.cli.main import main
from setmail.mail.smtpd import pick_free_port

REPO = Path(__file__).resolve().parents[1]


def run_main(argv) -> int:
    """main() as the console script runs it (typer ends with SystemExit)."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = run_main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def wait_no_file_holds(root: Path, needle: bytes, seconds: float = 10.0) -> list[str]:
    """The files under ``root`` still holding ``needle`` once none does or ``seconds`` pass
    (the agent checkpoints right after the commit the CLI saw)."""
    deadline = time.monotonic() + seconds
    while True:
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                       if p.is_file() and needle in p.read_bytes())
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli") / "world"
    assert run_main(["init", "--home", str(home), "--smtp-port", str(pick_free_port())]) == 0
    return home


def test_init_registers_over_smtp_and_mailbox_decodes(world_home, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SETMAIL_FAULT", None)
    run = subprocess.Popen([sys.executable, "-m", "setmail.cli.main", "run", "--home",
                            str(world_home), "--poll", "0.05"], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        code, out, err = cli(capsys, "register", "alice", "--home", str(world_home),
                             "--wait", "30")
        assert code == 0, err
        assert "certificate issued" in out
        # the PAN travelled in the command's arguments and the registration's state; both
        # are wiped, and with them every copy in alice's files (the WAL included), while the
        # agent still runs (its last connection's own checkpoint at exit proves nothing)
        assert wait_no_file_holds(world_home / "agents" / "alice", b"4111111111111111") == []
    finally:
        time.sleep(0.3)
        run.send_signal(signal.SIGINT)
        log, _ = run.communicate(timeout=20)
    assert run.returncode == 0, log
    # readable log lines, one per mail, never a PAN
    assert "cca      IN   CertReq" in log and "alice    IN   CertRes" in log
    assert "4111111111111111" not in log and "stopped" in log
    keys = world_home / "agents" / "alice" / "keys"
    assert len(list(keys.glob("*.cert.pem"))) == 1
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in keys.iterdir())
    code, out, _ = cli(capsys, "mailbox", "list", "alice", "--json", "--home", str(world_home))
    rows = json.loads(out)
    assert code == 0 and [r["type"] for r in rows] == ["CardCInitRes", "RegFormRes", "CertRes"]
    assert all(r["folder"] == "cur" and "S" in r["flags"] for r in rows)
    code, out, _ = cli(capsys, "mailbox", "show", "alice", rows[-1]["key"], "--json",
                       "--home", str(world_home))
    info = json.loads(out)
    assert info["set"]["message_type"] == "CertRes"
    assert info["headers"]["Subject"].startswith("SET CertRes ")
    assert "encrypted" in json.dumps(info["set"]["message"])  # EncK stays sealed
    code, text, _ = cli(capsys, "mailbox", "show", "cca", "--home", str(world_home),
                        json.loads(cli(capsys, "mailbox", "list", "cca", "--json", "--home",
                                       str(world_home))[1])[0]["key"])
    assert code == 0 and "CardCInitReq" in text and "rrpid:" in text
    code, text, _ = cli(capsys, "mailbox", "list", "cca", "--home", str(world_home))
    assert code == 0 and text.count("done") == 3
    # decode (the lead's command) reads a stored mail file through inspect.describe_file
    mail_file = next((world_home / "mailboxes" / "alice" / "cur").iterdir())
    code, text, _ = cli(capsys, "decode", str(mail_file))
    assert code == 0 and "message_type: " in text


def test_init_refuses_existing_world_without_force(world_home, tmp_path, capsys):
    code, _, err = cli(capsys, "init", "--home", str(world_home))
    assert code == 3 and "already exists" in err and "--force" in err
    home = tmp_path / "w"
    assert cli(capsys, "init", "--home", str(home), "--smtp-port", "2999")[0] == 0
    (home / "mailboxes" / "alice" / "new" / "junk").write_text("x")
    code, out, _ = cli(capsys, "init", "--home", str(home), "--force")
    assert code == 0 and not (home / "mailboxes" / "alice" / "new" / "junk").exists()
    assert 'port = 2525' in (home / "world.toml").read_text()
    assert oct((home / "agents" / "bank" / "keys" / "sig.key.pem").stat().st_mode & 0o777) == "0o600"
    assert oct((home / "agents" / "shop").stat().st_mode & 0o777) == "0o700"


def test_exit_codes(world_home, tmp_path, capsys):
    home = str(world_home)
    assert cli(capsys, "mailbox", "list", "alice", "--home", str(tmp_path / "none"))[0] == 3
    assert cli(capsys, "mailbox", "list", "mallory", "--home", home)[0] == 2
    assert cli(capsys, "mailbox", "show", "alice", "no-such-key", "--home", home)[0] == 2
    code, _, err = cli(capsys, "register", "shop", "--home", home)
    assert code == 2 and "not a cardholder" in err
    # no agent running: the command is queued, the wait times out -> 4, the command withdrawn
    code, out, err = cli(capsys, "register", "bob", "--home", home, "--wait", "0.5")
    assert code == 4 and "had not picked up the register command" in err, err
    assert "withdrawn" in err and "setmail run" in err
    assert cli(capsys, "init", "--home", str(tmp_path / "x"), "--smtp-port", "0")[0] == 2
    assert cli(capsys, "bogus-command")[0] == 2


def test_run_refuses_a_busy_port(world_home, tmp_path, capsys):
    import tomllib
    port = tomllib.loads((world_home / "world.toml").read_text())["smtp"]["port"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        code, _, err = cli(capsys, "run", "--home", str(world_home))
    assert code == 3 and "cannot listen" in err


@pytest.mark.parametrize("argv", [[], ["init"], ["run"], ["agent"], ["register"], ["mailbox"],
                                  ["mailbox", "list"], ["mailbox", "show"], ["decode"], ["buy"],
                                  ["tx"], ["tx", "list"], ["tx", "show"], ["capture"],
                                  ["inquire"], ["trace"], ["ledger"], ["revoke"]])
def test_every_command_has_help(argv, capsys):
    code = run_main([*argv, "--help"])
    out = capsys.readouterr().out
    assert code == 0 and "Usage:" in out


def test_purchase_commands_refuse_bad_input_in_one_line(world_home, capsys):
    home = str(world_home)
    cases = [
        (["buy", "--cardholder", "alice", "--merchant", "shop", "--amount", "-3"], 2, "positive"),
        (["buy", "--cardholder", "alice", "--merchant", "shop", "--amount", "1.234"], 2,
         "decimal places"),
        (["buy", "--cardholder", "alice", "--merchant", "shop", "--amount", "1", "--currency",
          "XYZ"], 2, "unknown currency"),
        (["buy", "--cardholder", "shop", "--merchant", "shop", "--amount", "1"], 2,
         "not a cardholder"),
        (["buy", "--cardholder", "alice", "--merchant", "bob", "--amount", "1"], 2,
         "not a merchant"),
        (["tx", "show", "xyz0"], 2, "not an XID"),
        (["tx", "show", "0000"], 2, "no purchase of this world has an XID starting with"),
        (["tx", "show", "ab" * 20], 2, "no agent knows"),
        (["capture", "ab" * 20], 2, "no merchant here knows"),
        (["inquire", "ab" * 20], 2, "no cardholder here knows"),
        (["trace", "ab" * 20], 1, "no mail"),
        # a card is its holder's (world.toml cards): nobody registers or pays with another's
        (["register", "alice", "--card", "bob-visa"], 2,
         "card 'bob-visa' belongs to bob, not to alice"),
        (["buy", "--cardholder", "alice", "--merchant", "shop", "--amount", "1", "--card",
          "bob-visa"], 2, "card 'bob-visa' belongs to bob, not to alice"),
        (["register", "alice", "--card", "nope"], 2, "no card 'nope' in the world"),
        (["buy", "--cardholder", "bob", "--merchant", "shop", "--amount", "1", "--card",
          "nope"], 2, "no card 'nope' in the world"),
    ]
    for argv, code, words in cases:
        got, out, err = cli(capsys, *argv, "--home", home)
        assert got == code and words in err and "Traceback" not in err, (argv, got, err)
        assert len(err.strip().splitlines()) == 1 and out == "", (argv, out, err)
    got, out, _ = cli(capsys, "tx", "list", "--json", "--home", home)
    assert got == 0 and isinstance(json.loads(out), list)
    got, out, _ = cli(capsys, "ledger", "--json", "--home", home)
    assert got == 0 and {a["holder"] for a in json.loads(out)} == {"alice", "bob"}


def test_ctrl_c_while_the_command_line_loads_is_not_a_traceback(tmp_path):
    """A SIGINT that reaches ``setmail`` while it is still importing (a supervisor stopping an
    agent it has just restarted, a user's early Ctrl-C) ends it quietly with 130, never with a
    KeyboardInterrupt traceback; after loading, Ctrl-C is the command's own again."""
    # SIGINT arrives exactly as main.py imports typer, its first import after the handler
    loading = ("import builtins, os, runpy, signal, sys\n"
               "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
               "real = builtins.__import__\n"
               "def hook(name, *a, **k):\n"
               "    if name == 'typer':\n"
               "        builtins.__import__ = real\n"
               "        os.kill(os.getpid(), signal.SIGINT)\n"
               "    return real(name, *a, **k)\n"
               "builtins.__import__ = hook\n"
               "sys.argv = ['setmail', '--help']\n"
               "runpy.run_module('setmail.cli.main', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", loading], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    loaded = subprocess.run([sys.executable, "-c", "import signal\nfrom setmail.cli import main"
                             "\nprint(signal.getsignal(signal.SIGINT) is "
                             "signal.default_int_handler)"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert loaded.stdout.strip() == "True", loaded.stderr
