"""The ``setmail`` command line (typer).

Every command: ``--help``, clear one-line errors (never a traceback for bad input; the technical
detail with ``setmail --verbose``), and the exit codes ``setmail --help`` lists (the table is
``waiting.EXITS``): 0 done, 1 declined, 2 bad input, 3 refused or failed, 4 timed out.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path


def _interrupted_while_loading(signum, frame) -> None:
    """Ctrl-C (or a supervisor's SIGINT) while the command line is still loading: nothing has
    started, so exit 130 quietly instead of a KeyboardInterrupt traceback from an import."""
    raise SystemExit(130)


try:
    _SIGINT_BEFORE = signal.signal(signal.SIGINT, _interrupted_while_loading)
except ValueError:  # imported outside the main thread: leave signals alone
    _SIGINT_BEFORE = None

import typer  # noqa: E402  (after the handler: loading is what it covers)

from setmail.cli.waiting import EXIT_TABLE  # noqa: E402
from setmail.errors import SetmailError  # noqa: E402

app = typer.Typer(name="setmail", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, epilog=EXIT_TABLE,
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
                                               help="print setmail's version and exit"),
             verbose: bool = typer.Option(False, "--verbose", help="show the technical detail "
                                          "of errors and refusals (and debug logs of run/agent)"),
             ) -> None:
    """SET 1.0 card payments, store-and-forward over e-mail (exit codes: EXIT_TABLE)."""
    from setmail.cli.common import set_verbose
    set_verbose(verbose)


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


def _exit_codes_in_help(typer_app: typer.Typer) -> None:
    """Every command's --help ends with the exit codes (git-style: one table for all)."""
    for info in typer_app.registered_commands:
        info.epilog = info.epilog or EXIT_TABLE
    for group in typer_app.registered_groups:
        _exit_codes_in_help(group.typer_instance)


_exit_codes_in_help(app)
if _SIGINT_BEFORE is not None:  # loaded: Ctrl-C is the commands' own again (KeyboardInterrupt)
    signal.signal(signal.SIGINT, _SIGINT_BEFORE)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: typer handles usage errors (exit 2); ours become one-line errors."""
    try:
        app(args=argv, prog_name="setmail")
    except SetmailError as exc:
        from setmail.cli.common import is_verbose
        from setmail.cli.show import human
        typer.echo(f"setmail: error: {human(str(exc))}", err=True)
        if is_verbose():
            typer.echo(f"  detail: {type(exc).__name__}: {exc}", err=True)
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
