"""Shared options and helpers of the setmail commands."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

HOME_HELP = "world directory (default: $SETMAIL_HOME or ./world)"


def home_option():
    return typer.Option(None, "--home", envvar="SETMAIL_HOME", help=HOME_HELP, show_envvar=False)


def load(home: Path | None):
    os.umask(0o077)  # everything a setmail command creates is private: keys, PANs, mail
    from setmail.world import load_world
    return load_world(home)


def setup_logging(verbose: bool = False) -> None:
    """One readable line per event on stderr: time, agent, direction, SET type, tx, peer."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("setmail")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # the format uses none of these; the logging HOWTO's "Optimization" switches skip collecting
    # them (caller frame, thread, process) for every record: a daemon logs several per mail
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit ``code`` (2: bad usage or input)."""
    typer.echo(f"setmail: error: {message}", err=True)
    raise typer.Exit(code)


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
