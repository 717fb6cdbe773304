"""``--wait N``: one way for every command to wait for what it asked, and to say what happens.

A command queues its work for an agent (``agent.commands``) and, with ``--wait N``, follows it
here: each step any party takes is shown as it happens (``story``; a spinner on a terminal, plain
lines otherwise, on stderr; with ``--json`` the steps are part of the JSON), and the wait ends as
soon as the outcome is known, a refusal included, with the party, SET's code and a sentence.

Every command queued by a wait carries ``deadline = now + N``: an agent never carries it out
later.  When the time runs out, a command its agent has not picked up is withdrawn (the user is
told: is ``setmail run`` running?); one it took is followed no further, and the user is told
where it stands and how to follow it.  Ctrl-C withdraws the same way.

Exit codes (every command, ``setmail --help``): 0 done (approved, captured, issued, success),
1 declined (the card's issuer said no; a check that failed), 2 bad input or usage, 3 refused or
failed (a party refused, a command expired; no world, an agent already running), 4 timed out,
130 interrupted.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import typer

from setmail.cli.show import human

EXIT_OK, EXIT_DECLINED, EXIT_USAGE, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_INTERRUPTED = \
    0, 1, 2, 3, 4, 130
#: outcome -> exit code
EXITS = {"approved": EXIT_OK, "done": EXIT_OK, "queued": EXIT_OK, "declined": EXIT_DECLINED,
         "out of balance": EXIT_DECLINED,
         "refused": EXIT_REFUSED, "failed": EXIT_REFUSED, "timed out": EXIT_TIMEOUT,
         "interrupted": EXIT_INTERRUPTED}
EXIT_TABLE = ("exit codes: 0 done (approved, captured, issued) · 1 declined (or a check failed) · "
              "2 bad input · 3 refused or failed · 4 timed out (--wait) · 130 interrupted")
#: seconds between two looks at the stores
POLL = 0.1


@dataclass(frozen=True)
class Queued:
    """A command in an agent's queue, named as ``setmail queue`` names it (``alice#3``)."""

    agent: str
    id: int
    name: str

    @property
    def ref(self) -> str:
        return f"{self.agent}#{self.id}"


@dataclass
class End:
    """How a wait (or a command) ended: ``outcome`` (see EXITS), a sentence for people, the
    party that decided and its SET code, technical ``detail`` (shown with --verbose), the
    command's own ``fields`` (its JSON) and ``hints`` (what to do next)."""

    outcome: str
    message: str
    party: str | None = None
    code: str | None = None
    detail: str | None = None
    fields: dict = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXITS[self.outcome]


class View:
    """The agents' stores, opened once per wait, read afresh at each look."""

    def __init__(self, world):
        self.world, self._stores = world, {}

    def store(self, agent: str):
        """``agent``'s store, None while it has none (a store made later is opened then)."""
        if self._stores.get(agent) is None:
            from setmail.agent import commands as cmdq
            path = self.world.store_path(agent)
            self._stores[agent] = cmdq.open_store(path) if path.exists() else None
        return self._stores[agent]

    def state(self, agent: str, key: str | None) -> dict:
        store = self.store(agent)
        return (store.get_state("tx/" + key) or {}) if store is not None and key else {}

    def command(self, queued: Queued):
        from setmail.agent import commands as cmdq
        store = self.store(queued.agent)
        return cmdq.get(store, queued.id) if store is not None else None

    def purchase(self, xid: str) -> dict[str, tuple[str, dict]]:
        """label -> (kind, state) of every local party holding purchase ``xid``."""
        from setmail.txview import PURCHASE_KINDS, purchase_states
        out = {}
        for name in self.world.local_agents():
            kind = self.world.agent(name).kind
            store = self.store(name) if kind in PURCHASE_KINDS else None
            found = purchase_states(store, xid) if store is not None else []
            for _, state in found:
                tag = state.get("mer_id") or state.get("merchant_id") or "?"
                out[name + (f"[{tag}]" if len(found) > 1 else "")] = (kind, state)
        return out

    def close(self) -> None:
        for store in self._stores.values():
            if store is not None:
                store.close()
        self._stores.clear()


class Display:
    """The steps as they happen, on stderr: a spinner and coloured lines on a terminal (rich),
    one plain timestamped line per step otherwise; nothing with --json (the JSON has them)."""

    def __init__(self, what: str, seconds: float, *, enabled: bool):
        self.what, self.seconds, self.started = what, seconds, time.monotonic()
        self.enabled, self._status, self._console = enabled, None, None
        if enabled and sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
            from rich.console import Console
            self._console = Console(stderr=True, highlight=False)
            self._status = self._console.status(self._line(what))
            self._status.start()

    def _line(self, text: str) -> str:
        return f"{text}  [dim]({time.monotonic() - self.started:.0f} s of {self.seconds:g})[/]"

    def step(self, at: str, party: str, text: str) -> None:
        if not self.enabled:
            return
        if self._console is None:
            typer.echo(f"{at[11:19]}  {party:<10} {text}", err=True)
            return
        from rich.markup import escape
        self._console.print(f"[dim]{at[11:19]}[/]  [bold]{escape(party):<10}[/] {escape(text)}")

    def tick(self, text: str | None = None) -> None:
        if self._status is not None:
            from rich.markup import escape
            self._status.update(self._line(escape(text or self.what)))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Wait:
    """One command's wait: ``submit`` its commands, ``watch`` what tells the story, then
    ``until(decide)`` the outcome.  ``seconds`` <= 0: nothing is waited for (``until`` returns
    a "queued" End at once)."""

    def __init__(self, world, seconds: float, *, what: str, json_out: bool = False):
        self.world, self.seconds, self.what = world, max(seconds, 0.0), what
        self.queued: list[Queued] = []
        self.steps: list[dict] = []
        self._purchases: list[str] = []
        self._keys: list[tuple[str, Callable]] = []
        self._seen: dict[str, dict] = {}
        self._status: dict[Queued, str] = {}
        self.json_out = json_out
        self.view = View(world)
        self.display: Display | None = None

    # -- setting up ----------------------------------------------------------------------------
    def submit(self, agent: str, name: str, args: dict) -> Queued:
        """Queue ``name`` for ``agent``: with a wait, never carried out after it ran out."""
        from setmail.agent import commands as cmdq
        deadline = time.time() + self.seconds if self.seconds > 0 else None
        store = cmdq.open_store(self.world.store_path(agent))
        try:
            number = cmdq.submit(store, name, args, deadline=deadline)
        finally:
            store.close()
        queued = Queued(agent, number, name)
        self.queued.append(queued)
        self._status[queued] = "pending"
        return queued

    def watch_purchase(self, xid: str) -> None:
        """Tell every step any local party takes on purchase ``xid`` from now on (what the
        parties hold already is the baseline: call it before ``submit``)."""
        self._purchases.append(xid)
        self._story(baseline=True)

    def watch(self, agent: str, key: Callable[[View], str | None]) -> None:
        """Tell the steps of ``agent``'s transaction ``key(view)`` (None: not known yet)."""
        self._keys.append((agent, key))

    # -- waiting -------------------------------------------------------------------------------
    def until(self, decide: Callable[[View], End | None], *,
              where: Callable[[View], str | None] | None = None) -> End:
        """Look every POLL seconds until ``decide`` says how it ended, a queued command is
        refused (or expired, or withdrawn), or the time is up (``where`` says where a command
        that was taken stands)."""
        if self.seconds <= 0:
            self.view.close()
            return End("queued", "queued: " + ", ".join(q.ref for q in self.queued))
        self.display = Display(self.what, self.seconds, enabled=not self.json_out)
        limit = time.monotonic() + self.seconds
        try:
            while True:
                end = self._commands() or self._story() or decide(self.view)
                if end is not None:
                    return end
                if time.monotonic() >= limit:
                    return self._timed_out(where)
                self.display.tick()
                time.sleep(POLL)
        except KeyboardInterrupt:
            withdrawn = self._withdraw("interrupted (Ctrl-C)")
            return End("interrupted", "interrupted" + (
                f"; withdrawn: {', '.join(q.ref for q in withdrawn)}" if withdrawn else ""))
        finally:
            self.display.close()
            self.view.close()

    def step(self, party: str, text: str) -> None:
        at = _now()
        self.steps.append({"at": at, "party": party, "step": text})
        if self.display is not None:
            self.display.step(at, party, text)

    def _commands(self) -> End | None:
        for queued in self.queued:
            row = self.view.command(queued)
            status = row.status if row is not None else "pending"
            if status == self._status[queued]:
                continue
            self._status[queued] = status
            if status == "done":
                self.step(queued.agent, f"took the {queued.name} command ({queued.ref})")
            elif status == "failed":
                return End("refused", f"{queued.agent} refused the {queued.name} command: "
                           f"{human(row.detail)}", party=queued.agent, detail=row.detail)
            elif status in ("expired", "withdrawn"):
                return End("failed", f"{queued.ref} was {status}: {row.detail}",
                           party=queued.agent)
        return None

    def _story(self, baseline: bool = False) -> None:
        from setmail.cli.story import steps
        from setmail.txview import HIDDEN
        seen: dict[str, tuple[str, dict]] = {}
        for xid in self._purchases:
            seen.update(self.view.purchase(xid))
        for agent, key in self._keys:
            name = key(self.view)
            if name:
                seen[agent] = (self.world.agent(agent).kind, self.view.state(agent, name))
        for label, (kind, state) in seen.items():
            public = {k: v for k, v in state.items() if k not in HIDDEN}
            for text in () if baseline else steps(kind, self._seen.get(label, {}), public):
                self.step(label, text)
            self._seen[label] = public
        return None

    def _withdraw(self, why: str) -> list[Queued]:
        """Withdraw every queued command its agent has not picked up; the ones withdrawn."""
        from setmail.agent import commands as cmdq
        withdrawn = []
        for queued in self.queued:
            store = self.view.store(queued.agent)
            if store is not None and cmdq.withdraw(store, queued.id, why):
                withdrawn.append(queued)
        return withdrawn

    def _timed_out(self, where) -> End:
        secs = f"{self.seconds:g} s"
        withdrawn = self._withdraw(f"withdrawn: the --wait of {secs} ran out before the agent "
                                   "picked it up")
        parts = [f"withdrawn: {q.agent} had not picked up the {q.name} command ({q.ref}) "
                 f"within {secs} — is `setmail run` running?" for q in withdrawn]
        hints = []
        if len(withdrawn) < len(self.queued) or not self.queued:
            stands = where(self.view) if where is not None else None
            if stands:
                parts.append(stands)
        if not withdrawn and self.queued:
            hints.append("it goes on without us: follow it with `setmail queue list --all`"
                         + (" or `setmail tx show XID`" if self._purchases else ""))
        return End("timed out", f"no outcome within {secs}: " + "; ".join(parts),
                   fields={"withdrawn": [q.ref for q in withdrawn]}, hints=hints)


def report(end: End, *, json_out: bool, wait: Wait | None = None, verbose: bool = False) -> None:
    """Print how it ended (stdout: one JSON object, or the outcome and its hints) and exit with
    the outcome's code."""
    from setmail.cli.common import is_verbose
    verbose = verbose or is_verbose()
    if json_out:
        doc = {**end.fields, "outcome": end.outcome, "exit": end.exit_code,
               "message": end.message, "party": end.party, "code": end.code}
        if verbose and end.detail:
            doc["detail"] = end.detail
        if wait is not None and wait.seconds > 0:
            doc["steps"] = wait.steps
            doc["commands"] = [q.ref for q in wait.queued]
        if end.hints:
            doc["hints"] = end.hints
        typer.echo(json.dumps(doc, default=str))
    else:  # a result on stdout; a refusal, failure or time-out on stderr (like git, gh)
        err = end.exit_code not in (EXIT_OK, EXIT_DECLINED)
        typer.echo(end.message if end.outcome == "queued" else f"{end.outcome}: {end.message}",
                   err=err)
        for hint in end.hints:
            typer.echo(f"  {hint}", err=err)
        if verbose and end.detail:
            typer.echo(f"  detail: {end.detail}", err=err)
    if end.exit_code:
        raise typer.Exit(end.exit_code)
