"""The ``setmail`` command line (typer).

Every command: ``--help``, clear one-line errors (never a traceback for bad input), and exit codes
0 = success, 1 = the operation failed (e.g. a purchase declined, a check failed), 2 = bad usage or
bad input, 3 = environment problem (missing world, port in use, ...).
"""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from setmail.errors import SetmailError

app = typer.Typer(name="setmail", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="SET 1.0 card payments, store-and-forward over e-mail.")

EXIT_FAILED, EXIT_USAGE, EXIT_ENV = 1, 2, 3


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            number = version("setmail")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown"
        typer.echo(f"setmail {number}")
        raise typer.Exit()


@app.callback()
def _options(show_version: bool = typer.Option(False, "--version", is_eager=True,
                                               callback=_version,
                                               help="print setmail's version and exit")) -> None:
    """SET 1.0 card payments, store-and-forward over e-mail."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"setmail: error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def vectors(outdir: Path = typer.Argument(..., help="directory to write messages/ and pki/ into"),
            suite: str = typer.Option("rsa2048", help="crypto suite: rsa2048 or rsa3072")) -> None:
    """Write a test vector of every SET message type (DER) and the PKI they were made with."""
    from setmail.vectors import write_vectors
    written = write_vectors(outdir, suite_name=suite)
    typer.echo(f"wrote {len(written.messages)} messages to {outdir / 'messages'} and "
               f"{len(written.pki)} PKI files to {outdir / 'pki'}")


@app.command()
def decode(path: Path = typer.Argument(..., help="a DER MessageWrapper (or a mail file)"),
           json_out: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Decode a SET message and print its header and ASN.1 tree."""
    from setmail.inspect import describe_file
    typer.echo(describe_file(path, as_json=json_out))


def _register_commands() -> None:
    """init/register, run/agent, mailbox and the purchase commands live in their own modules (setmail/cli/*_cmds.py)."""
    from setmail.cli import mailbox_cmds, purchase_cmds, run_cmds, world_cmds
    from setmail.cli import ledger_cmds
    for module in (world_cmds, run_cmds, mailbox_cmds, purchase_cmds, ledger_cmds):
        module.register_commands(app)
    from setmail.cli import cert_cmds  # renew
    cert_cmds.register_commands(app)
    from setmail.cli import lifecycle_cmds  # void, refund, authorize, capture-reverse, batch
    lifecycle_cmds.register_commands(app)
    from setmail.cli import host_cmds  # export, postfix-config, order: one party per host
    host_cmds.register_commands(app)
    from setmail.cli import queue_cmds  # queue list|cancel
    queue_cmds.register_commands(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: typer handles usage errors (exit 2); ours become one-line errors."""
    try:
        app(args=argv, prog_name="setmail")
    except SetmailError as exc:
        typer.echo(f"setmail: error: {exc}", err=True)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        typer.echo(f"setmail: error: {exc.strerror or exc}{where}", err=True)
        return EXIT_ENV
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
