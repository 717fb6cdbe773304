"""``setmail trace XID``: every mail of one purchase across all mailboxes, drawn as a sequence
diagram (terminal, HTML or SVG), as JSON, or live with ``--follow``."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, load, xid_of

FORMATS = ("text", "html", "svg")


def trace(xid: str = typer.Argument(..., help="the purchase's XID"),
          json_out: bool = typer.Option(False, "--json", help="print the mails as JSON"),
          fmt: str = typer.Option("text", "--format", help="text (the terminal), html or svg "
                                  "(a self-contained file: click an arrow for its mail)"),
          output: Path = typer.Option(None, "--output", "-o",
                                      help="write the html/svg picture to FILE"),
          follow: bool = typer.Option(False, "--follow", help="draw the purchase live until it "
                                      "settles (Ctrl-C stops)"),
          timeout: float = typer.Option(0.0, "--timeout", help="with --follow: give up after "
                                        "SECONDS (0: never)"),
          home: Path = home_option()) -> None:
    """Every mail of one purchase across all mailboxes, in delivery order, as a picture."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if follow and (json_out or fmt != "text" or output is not None):
        fail("--follow draws in the terminal: it takes no --json, --format or --output")
    if output is not None and fmt == "text":
        fail("--output writes a picture: add --format html or --format svg")
    world = load(home)
    xid = xid_of(world, xid)
    if json_out:
        from dataclasses import asdict
        from setmail.txview import trace as build_trace
        entries = build_trace(world, xid)
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    if follow:
        _follow(world, xid, timeout)
        return
    from setmail.tracedraw.collect import build
    picture = build(world, xid)
    if not picture.arrows:
        fail(f"no mail of purchase {xid} in any mailbox", 1)
    if fmt == "text":
        from rich.console import Console
        from setmail.tracedraw.text import diagram
        console = Console(highlight=False)
        console.print(diagram(picture, console.width), soft_wrap=True)
        return
    from setmail.tracedraw import html, svg
    page = (html if fmt == "html" else svg).document(picture)
    if output is None:
        typer.echo(page, nl=False)
        return
    output.write_text(page, encoding="utf-8")
    typer.echo(f"wrote {output}: {len(picture.arrows)} mails of purchase {xid}")


def _follow(world, xid: str, timeout: float) -> None:
    from rich.console import Console
    from setmail.tracedraw.collect import build
    from setmail.tracedraw.follow import INTERRUPTED, SETTLED, follow as run
    cache: dict = {}
    ended, _ = run(lambda: build(world, xid, cache), Console(highlight=False), timeout=timeout,
                   started=lambda: typer.echo(f"following purchase {xid} until it settles "
                                              "(Ctrl-C stops)", err=True))
    if ended == INTERRUPTED:
        typer.echo("stopped (Ctrl-C)", err=True)
        raise typer.Exit(130)
    if ended != SETTLED:
        fail(f"purchase {xid} has not settled after {timeout:g} s", 1)
