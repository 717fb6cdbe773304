"""Shared options and helpers of the setmail commands."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import typer

HOME_HELP = "world directory (default: $SETMAIL_HOME or ./world)"


def home_option():
    return typer.Option(None, "--home", envvar="SETMAIL_HOME", help=HOME_HELP, show_envvar=False)


def load(home: Path | None):
    os.umask(0o077)  # everything a setmail command creates is private: keys, PANs, mail
    from setmail.world import load_world
    return load_world(home)


class _UTCFormatter(logging.Formatter):
    """ISO 8601 in UTC with milliseconds (2026-12-07T06:58:17.123Z): one clock for every host
    of a world, and lines that sort as text."""

    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802  (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + \
            f".{int(record.msecs):03d}Z"


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """One readable line per event on stderr (and appended to ``log_file``, if given): time,
    agent, direction, SET type, tx, peer."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(_UTCFormatter("%(asctime)s %(message)s"))
    root = logging.getLogger("setmail")
    root.handlers[:] = handlers
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # the format uses none of these; the logging HOWTO's "Optimization" switches skip collecting
    # them (caller frame, thread, process) for every record: a daemon logs several per mail
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


#: ``setmail --verbose CMD`` (or SETMAIL_VERBOSE=1): technical detail with errors and refusals
_VERBOSE = {"on": False}


def set_verbose(on: bool) -> None:
    _VERBOSE["on"] = on


def is_verbose() -> bool:
    return _VERBOSE["on"] or os.environ.get("SETMAIL_VERBOSE", "") not in ("", "0")


def fail(message: str, code: int = 2, *, detail: str | None = None) -> None:
    """One line on stderr, then exit ``code`` (2: bad usage or input; the table is in
    ``waiting``); ``detail`` (technical) only with --verbose."""
    typer.echo(f"setmail: error: {message}", err=True)
    if detail and is_verbose():
        typer.echo(f"  detail: {detail}", err=True)
    raise typer.Exit(code)


JSON_HELP = "print JSON (amounts as {amount, currency, minor})"


def json_option():
    return typer.Option(False, "--json", help=JSON_HELP)


def wait_option(what: str = "the outcome"):
    return typer.Option(0.0, "--wait", metavar="SECONDS",
                        help=f"wait up to SECONDS for {what}, showing each step (0: queue the "
                        "command and return; one not picked up in time is withdrawn)")


def agent_of_kind(world, name: str, kind: str):
    """``name``'s spec, which must be ``kind`` (exit 2 otherwise)."""
    from setmail.cli.show import a_kind
    spec = world.agent(name)
    if spec.kind != kind:
        fail(f"{name} is {a_kind(spec.kind)}, not {a_kind(kind)}")
    return spec


def read_state(world, agent: str, key: str) -> dict:
    """``agent``'s state of transaction ``key`` (``tx/`` + key), {} if none."""
    from setmail.txview import open_store
    if not world.store_path(agent).exists():
        return {}
    store = open_store(world, agent)
    try:
        return store.get_state("tx/" + key) or {}
    finally:
        store.close()


def xid_of(world, text: str) -> str:
    """The XID ``text`` names (any unique prefix; exit 2 otherwise)."""
    from setmail.txview import resolve_xid
    return resolve_xid(world, text)


def holder_of(world, xid: str, kind: str) -> str:
    """The local agent of ``kind`` that holds purchase ``xid`` (exit 2 if none)."""
    from setmail.txview import agent_states, short_xid
    for name, state in agent_states(world, xid).items():
        if state["kind"] == kind and name in world.local_agents():
            return name
    fail(f"no {kind} here knows purchase {short_xid(xid)}")
    return ""  # unreachable


def cards_for(world, cardholder: str, card: str | None) -> list:
    """The card ``--card`` names, which must be ``cardholder``'s own (world.toml ``holder``:
    nobody registers or pays with another holder's card), else the cardholder's cards; exit 2
    with one line otherwise."""
    if card:
        found = world.cards.get(card)
        if found is None:
            fail(f"no card {card!r} in the world")
        if found.holder != cardholder:
            fail(f"card {card!r} belongs to {found.holder}, not to {cardholder}")
        return [found]
    cards = world.cards_of(cardholder)
    if not cards:
        fail(f"{cardholder} has no card in the world")
    return cards
