"""world.toml: the parties of a world, their mail addresses, SMTP settings, suite, demo cards.

Read with ``tomllib``; written by ``dump_toml`` (tables of scalars only: all world.toml needs).
Paths are relative to the world's home unless absolute.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setmail.errors import UnknownAgent, WorldError

ENV_HOME = "SETMAIL_HOME"
WORLD_FILE = "world.toml"


def resolve_home(home: str | os.PathLike | None) -> Path:
    """``--home``, else ``$SETMAIL_HOME``, else ``./world``."""
    return Path(home or os.environ.get(ENV_HOME) or "world").absolute()


@dataclass(frozen=True)
class AgentSpec:
    name: str
    kind: str          # cardholder, merchant, gateway, issuer, ca
    address: str
    smtp_host: str | None = None   # smarthost override for this agent's outgoing mail
    smtp_port: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Card:
    name: str
    holder: str        # the cardholder agent
    issuer: str        # the issuer agent
    pan: str
    expiry: str        # YYYYMM
    credit_limit: str  # decimal string, in currency units
    currency: str = "EUR"


@dataclass
class World:
    home: Path
    name: str
    suite: str
    brand: str
    smtp_host: str
    smtp_port: int
    mailboxes: Path
    agents: dict[str, AgentSpec]
    cards: dict[str, Card]
    created: str = ""
    #: a bundle (``setmail export``) runs this one agent; the others are its counterparts, of
    #: which it holds addresses and public certificates only.  Empty: the whole world runs here.
    bundle: str = ""
    #: ``[world] purchase_expiry`` (seconds): a purchase nobody continues before its
    #: authorisation is given up that long after it started, at the wallet (no PInitRes) and the
    #: merchant (ORDERED, PARKED, PINIT_SENT; its own ``expire_after`` overrides)
    purchase_expiry: float = 86400.0

    def local_agents(self) -> list[str]:
        """The agents whose keys and stores are here: every agent, or a bundle's own one."""
        return [self.bundle] if self.bundle else list(self.agents)

    # -- paths --------------------------------------------------------------------------------
    def agent(self, name: str) -> AgentSpec:
        try:
            return self.agents[name]
        except KeyError:
            raise UnknownAgent(f"no agent {name!r} in {self.home / WORLD_FILE} "
                               f"(agents: {', '.join(self.agents)})") from None

    def agent_home(self, name: str) -> Path:
        return self.home / "agents" / name

    def keys_dir(self, name: str) -> Path:
        return self.agent_home(name) / "keys"

    def store_path(self, name: str) -> Path:
        return self.agent_home(name) / "state.db"

    def maildir(self, name: str) -> Path:
        return self.mailboxes / name

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"

    def routes(self) -> dict[str, Path]:
        """address -> Maildir of the agents whose mail is delivered here."""
        return {self.agents[n].address: self.maildir(n) for n in self.local_agents()}

    def peers(self) -> dict[str, str]:
        return {a.address.lower(): n for n, a in self.agents.items()}

    def smtp_for(self, name: str) -> tuple[str, int]:
        spec = self.agent(name)
        return spec.smtp_host or self.smtp_host, spec.smtp_port or self.smtp_port

    def cards_of(self, holder: str) -> list[Card]:
        return [c for c in self.cards.values() if c.holder == holder]

    def agents_of_kind(self, kind: str) -> list[AgentSpec]:
        return [a for a in self.agents.values() if a.kind == kind]

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        mailboxes = os.path.relpath(self.mailboxes, self.home) if self.mailboxes.is_relative_to(
            self.home) else str(self.mailboxes)
        out: dict[str, Any] = {
            "world": {"name": self.name, "suite": self.suite, "brand": self.brand,
                      "mailboxes": mailboxes, "created": self.created,
                      **({"bundle": self.bundle} if self.bundle else {}),
                      **({"purchase_expiry": self.purchase_expiry}
                         if self.purchase_expiry != 86400.0 else {})},
            "smtp": {"host": self.smtp_host, "port": self.smtp_port},
            "agents": {}, "cards": {}}
        for name, a in self.agents.items():
            entry = {"kind": a.kind, "address": a.address, **a.options}
            if a.smtp_host:
                entry["smtp_host"] = a.smtp_host
            if a.smtp_port:
                entry["smtp_port"] = a.smtp_port
            out["agents"][name] = entry
        for name, c in self.cards.items():
            out["cards"][name] = {"holder": c.holder, "issuer": c.issuer, "pan": c.pan,
                                  "expiry": c.expiry, "credit_limit": c.credit_limit,
                                  "currency": c.currency}
        return out

    @classmethod
    def from_dict(cls, home: Path, data: dict[str, Any]) -> World:
        try:
            w, smtp = data["world"], data.get("smtp", {})
            agents = {}
            for name, a in data.get("agents", {}).items():
                a = dict(a)
                kind, address = a.pop("kind"), a.pop("address")
                host, port = a.pop("smtp_host", None), a.pop("smtp_port", None)
                agents[name] = AgentSpec(name, kind, address, host, port, a)
            cards = {n: Card(n, c["holder"], c["issuer"], str(c["pan"]), str(c["expiry"]),
                             str(c["credit_limit"]), c.get("currency", "EUR"))
                     for n, c in data.get("cards", {}).items()}
            mailboxes = Path(w.get("mailboxes", "mailboxes"))
            if w.get("bundle") and w["bundle"] not in agents:
                raise ValueError(f"bundle names {w['bundle']!r}, which is no agent of it")
            expiry = w.get("purchase_expiry", 86400)
            if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or expiry <= 0:
                raise ValueError(f"[world] purchase_expiry must be a number of seconds > 0, "
                                 f"not {expiry!r}")
            return cls(home, w.get("name", "world"), w.get("suite", "rsa2048"),
                       w.get("brand", "Visa"), smtp.get("host", "127.0.0.1"),
                       int(smtp.get("port", 2525)),
                       mailboxes if mailboxes.is_absolute() else home / mailboxes,
                       agents, cards, w.get("created", ""), str(w.get("bundle", "")),
                       float(expiry))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WorldError(f"{home / WORLD_FILE} is incomplete or invalid: {exc!r}") from exc


def load_world(home: str | os.PathLike | None = None) -> World:
    home = resolve_home(home)
    path = home / WORLD_FILE
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise WorldError(f"no world at {home} (create one with `setmail init --home {home}`)") \
            from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WorldError(f"cannot read {path}: {exc}") from exc
    return World.from_dict(home, data)


# -- a tiny TOML writer ------------------------------------------------------------------------
def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\t", "\\t"))
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else _scalar(key)


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Nested dicts become [tables]; everything else must be a scalar or a list of scalars."""
    lines = [f"{_key(k)} = {_scalar(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_key(k)}" if prefix else _key(k)
            has_scalars = any(not isinstance(x, dict) for x in v.values())
            if has_scalars or not v:
                out += f"\n[{name}]\n"
            out += dump_toml(v, name)
    return out
