"""``setmail run`` (SMTP server + every agent) and ``setmail agent NAME`` (one agent).

Both take each agent's lock first (``setmail.store.lock``): one process per agent, and a second
one fails at once with ``agent NAME is already running (pid N)`` and exit code 3."""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

import typer

from setmail.cli.common import home_option, is_verbose, load, setup_logging

EXIT_ENV = 3
log = logging.getLogger("setmail.agent")


def _lock(world, names) -> dict:
    """Every agent's ``agent.lock``, taken before anything else starts (a second process for
    one agent fails at once, naming the first one's pid; exit 3).  The world lock is held
    shared meanwhile, so ``init --force`` cannot wipe the world between two of them."""
    from setmail.store.lock import agent_lock, world_lock
    locks: dict = {}
    if not names:
        return locks
    with world_lock(world.home, shared=True):
        try:
            for name in names:
                locks[name] = agent_lock(world.agent_home(name), name)
        except BaseException:
            _release(locks)
            raise
    return locks


def _release(locks: dict) -> None:
    for lock in locks.values():
        lock.release()


def _build(world, names, locks):
    from setmail.agent.factory import build_agent
    agents = []
    try:
        for name in names:
            agent = build_agent(world, name, lock=locks[name])
            if agent is None:
                locks[name].release()  # nothing runs it here: another process may
                log.info("%-8s no role for kind %r yet: its mail is accepted and kept in %s",
                         name, world.agent(name).kind, world.maildir(name))
            else:
                agents.append(agent)
    except BaseException:
        for agent in agents:
            agent.close()
        raise
    return agents


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            typer.echo(f"setmail: error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_ENV)


class _Stopped(Exception):
    pass


def _early_stop(*_):
    raise _Stopped()


def _stop_early_on_signals() -> None:
    """SIGTERM/SIGINT while agents are still being built: stop cleanly (exit 0) rather than die;
    once serving, the event loop's own handlers take over."""
    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)


def _serve(agents, routes, listen, poll) -> None:
    from setmail.agent.daemon import serve
    try:
        asyncio.run(serve(agents, routes=routes, listen=listen, poll=poll))
    except KeyboardInterrupt:  # pragma: no cover - the signal handler normally catches it
        pass


def log_file_option():
    return typer.Option(None, "--log-file", metavar="PATH", dir_okay=False,
                        help="also append the log lines to PATH (ISO-8601 UTC times)")


def run(home: Path = home_option(),
        only: str = typer.Option(None, "--agents", metavar="NAMES",
                                 help="comma-separated agents to run here (default: all; "
                                 "'none': only the SMTP server)"),
        smtp: bool = typer.Option(True, "--smtp/--no-smtp",
                                  help="run the world's SMTP server in this process"),
        poll: float = typer.Option(0.25, "--poll", help="seconds between command/timer checks"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
        log_file: Path = log_file_option()) -> None:
    """Run the world's SMTP server and every agent in the foreground (Ctrl-C stops cleanly).

    ``--agents``/``--no-smtp`` split one world over several processes (one per agent uses both
    cores, and lets each party's memory and CPU be measured on its own)."""
    _stop_early_on_signals()
    locks: dict = {}
    try:
        world = load(home)
        names = world.local_agents()  # a bundle runs its own agent only
        if only is not None:
            names = [] if only.strip() == "none" else [n.strip() for n in only.split(",") if n.strip()]
            for name in names:
                world.agent(name)
                if name not in world.local_agents():
                    raise typer.BadParameter(f"this is the bundle of {world.bundle}",
                                             param_hint="--agents")
        locks = _lock(world, names)
        setup_logging(verbose or is_verbose(), log_file)
        if smtp:
            _check_port(world.smtp_host, world.smtp_port)
        agents = _build(world, names, locks)
        _serve(agents, world.routes() if smtp else None,
               (world.smtp_host, world.smtp_port) if smtp else None, poll)
    except _Stopped:
        log.info("stopped before serving")
    finally:
        _release(locks)  # the agents released theirs when they stopped; this is for the rest


def agent(name: str = typer.Argument(None, help="agent name from world.toml (default: the "
                                       "agent of the bundle --home names)"),
          home: Path = home_option(),
          smtp_listen: str = typer.Option(None, "--smtp-listen", metavar="HOST:PORT",
                                          help="also run an SMTP server for this agent's address"),
          poll: float = typer.Option(0.25, "--poll", help="seconds between command/timer checks"),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
          log_file: Path = log_file_option()) -> None:
    """Run one agent alone (parties on separate hosts; mail arrives via its Maildir).

    ``--home`` may be a bundle (``setmail export``): the agent then needs nothing else."""
    _stop_early_on_signals()
    world = load(home)
    if name is None and not world.bundle:
        raise typer.BadParameter("name the agent (--home is a whole world, not a bundle)",
                                 param_hint="NAME")
    name = name or world.bundle
    if name not in world.local_agents():
        raise typer.BadParameter(f"{world.home} is the bundle of {world.bundle}: it cannot run "
                                 f"{name}", param_hint="NAME")
    spec = world.agent(name)
    listen = None
    if smtp_listen:
        host, _, port = smtp_listen.rpartition(":")
        if not port.isdigit() or not host:
            raise typer.BadParameter("expected HOST:PORT", param_hint="--smtp-listen")
        listen = (host, int(port))
    locks = _lock(world, [name])
    try:
        setup_logging(verbose or is_verbose(), log_file)
        if listen:
            _check_port(*listen)
        agents = _build(world, [name], locks)
        if not agents:
            typer.echo(f"setmail: error: no role implements kind {spec.kind!r} yet", err=True)
            raise typer.Exit(1)
        _serve(agents, {spec.address: world.maildir(name)} if listen else None, listen, poll)
    except _Stopped:
        log.info("stopped before serving")
    finally:
        _release(locks)


def register_commands(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("agent")(agent)
