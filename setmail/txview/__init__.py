"""Read-only views of purchases across a world's agents: what ``setmail tx``/``trace`` print.

Every purchase role keys its state by the XID (hex) in its own store: ``tx/<xid>`` at the wallet and
the merchant, ``tx/<xid>.<tag>`` at the gateway and the issuer, where a purchase is one merchant's
XID (D-140, D-141: two merchants' purchases under one XID stay apart).  Every mail an agent sends
names its key in its Subject (``SET <type> <key>``), so one XID finds the purchase everywhere.  Nothing here decrypts anything: states are shown without their
``secret`` part, mails by their clear headers.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from setmail.world.config import World

PURCHASE_KINDS = ("cardholder", "merchant", "gateway", "issuer")
#: state keys never shown (secrets, raw DER of requests kept for re-sending)
HIDDEN = frozenset({"secret", "last", "pi", "preq", "pinit_req", "parked", "out", "inq", "offers"})
_XID = re.compile(r"^[0-9a-f]{40}$")


_PREFIX = re.compile(r"^[0-9a-f]{4,40}$")
#: the short form of an XID every listing shows (like git's abbreviated hashes): any unique
#: prefix of at least 4 hex digits is accepted wherever an XID is asked for
SHORT_XID = 12


def short_xid(xid: str) -> str:
    return str(xid)[:SHORT_XID]


def normalise_xid(text: str) -> str:
    """A whole XID as typed (40 hex digits): for a new purchase's ``--xid``."""
    from setmail.errors import SetmailError
    xid = text.strip().lower()
    if not _XID.match(xid):
        raise SetmailError(f"{text!r} is not an XID (40 hex digits, as `setmail buy` prints)")
    return xid


def known_xids(world: World, prefix: str) -> set[str]:
    """The XIDs starting with ``prefix`` that any purchase party of the world holds (a range
    scan of each store's keys: ``tx/<xid>`` and ``tx/<xid>.<tag>``)."""
    found: set[str] = set()
    for spec in world.agents.values():
        if spec.kind not in PURCHASE_KINDS or not world.store_path(spec.name).exists():
            continue
        store = open_store(world, spec.name)
        try:
            keys = store.query("SELECT txkey FROM role_state WHERE txkey >= ? AND txkey < ?",
                               (f"tx/{prefix}", f"tx/{prefix}g"))
        finally:
            store.close()
        found.update(k[3:43] for k, in keys if _XID.match(k[3:43]))
    return found


def resolve_xid(world: World, text: str) -> str:
    """The XID a user means by ``text``: the whole XID, or any prefix of at least 4 hex digits
    that names one purchase of the world (a trailing "…" as listings once printed is ignored).
    SetmailError (exit 2) for junk, an ambiguous prefix (the candidates listed) or a prefix
    nobody knows; a whole XID nobody knows is returned (its mails may still be traced)."""
    from setmail.errors import SetmailError
    typed = text.strip().lower().rstrip("…").rstrip(".")
    if not _PREFIX.match(typed):
        raise SetmailError(f"{text!r} is not an XID (40 hex digits, or the first 4 or more of "
                           "them, as `setmail tx list` shows them)")
    found = sorted(known_xids(world, typed))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        shown = ", ".join(short_xid(x) if len(typed) < SHORT_XID else x for x in found[:8])
        more = f" and {len(found) - 8} more" if len(found) > 8 else ""
        raise SetmailError(f"XID prefix {typed!r} is ambiguous: {len(found)} purchases start "
                           f"with it ({shown}{more}); type more digits")
    if len(typed) == 40:
        return typed
    raise SetmailError(f"no purchase of this world has an XID starting with {typed!r} "
                       "(`setmail tx list` shows them)")


def open_store(world: World, name: str):
    from setmail.agent.commands import open_store as _open
    return _open(world.store_path(name))


def _public(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in HIDDEN and not k.startswith("_")}


def purchase_states(store, xid: str) -> list[tuple[str, dict[str, Any]]]:
    """(key, state) of every transaction of ``xid`` in one agent's store: ``tx/<xid>`` and the
    ``tx/<xid>.<tag>`` keys of the gateway and the issuer (a range scan of the primary key)."""
    keys = [k for k, in store.query(
        "SELECT txkey FROM role_state WHERE txkey = ? OR (txkey > ? AND txkey < ?) ORDER BY txkey",
        (f"tx/{xid}", f"tx/{xid}.", f"tx/{xid}/"))]
    return [(k, s) for k in keys if (s := store.get_state(k))]


def agent_states(world: World, xid: str) -> dict[str, dict[str, Any]]:
    """agent name -> its (public) state of purchase ``xid``, for every agent that has one; an
    agent holding the XID for several merchants (a gateway, an issuer) is listed once per
    merchant as ``name[merID]``."""
    out = {}
    for spec in world.agents.values():
        if spec.kind not in PURCHASE_KINDS or not world.store_path(spec.name).exists():
            continue
        store = open_store(world, spec.name)
        try:
            found = purchase_states(store, xid)
        finally:
            store.close()
        for _, state in found:
            label = spec.name
            if len(found) > 1:
                label += f"[{state.get('mer_id') or state.get('merchant_id') or '?'}]"
            out[label] = {"kind": spec.kind, **_public(state)}
    return out


def transactions(world: World) -> list[dict[str, Any]]:
    """Every purchase the merchants and cardholders know, newest last: xid, each holder and its
    state, ``created``.  Read from the store's ``state_name`` and ``created`` columns, not the
    states' JSON, so 100,000 purchases list in a fraction of a second; ``with_details`` adds the
    amounts of the rows that are shown."""
    rows: dict[str, dict[str, Any]] = {}
    for spec in world.agents.values():
        if spec.kind not in ("merchant", "cardholder") or not world.store_path(spec.name).exists():
            continue
        store = open_store(world, spec.name)
        try:
            found = store.query("SELECT txkey, state_name, created FROM role_state "
                                "WHERE txkey > 'tx/' AND txkey < 'tx0'")
        finally:
            store.close()
        for key, name, created in found:
            if not _XID.match(key[3:]):
                continue
            row = rows.setdefault(key[3:], {"xid": key[3:]})
            row[spec.kind] = spec.name
            row[spec.kind + "_state"] = name
            if created is not None and "created" not in row:
                row["created"] = created
    return sorted(rows.values(), key=lambda r: str(r.get("created", "")))


def with_details(world: World, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of ``transactions`` with the amount, currency and description their holders'
    states record (read for these rows only)."""
    fields = ("amount", "currency", "amt_exp10", "description")
    for name in {r[k] for r in rows for k in ("merchant", "cardholder") if k in r}:
        store = open_store(world, name)
        try:
            kind = world.agent(name).kind
            for row in rows:
                if row.get(kind) != name:
                    continue
                state = store.get_state("tx/" + row["xid"]) or {}
                for field in fields:
                    if state.get(field) is not None and field not in row:
                        row[field] = state[field]
        finally:
            store.close()
    return rows


@dataclass(frozen=True)
class TraceEntry:
    time: float
    sender: str
    recipient: str
    message_type: str
    size: int
    result: str
    key: str


def _mails(world: World, xid: str) -> Iterator[tuple[Any, bytes]]:
    """(mail, bytes) of every mail of purchase ``xid`` in every local Maildir (its quarantine
    and archive folders too): the store's index names them (``txview.mails``), and only mail
    the index does not know yet is searched by reading its head."""
    from setmail.mail import maildir
    from setmail.txview import mails as mv
    needle = f" {xid}".encode()
    for name in world.agents:
        root = world.maildir(name)
        if not root.exists():
            continue
        store = open_store(world, name) if world.store_path(name).exists() else None
        try:
            found = mv.of_purchase(world, name, store, xid, needle)
        finally:
            if store is not None:
                store.close()
        for mail in found:
            base = root / mail.folder if mail.folder.startswith(".Archive.") else root
            try:
                yield mail, maildir.read(base, mail.key)
            except Exception:
                continue


def trace(world: World, xid: str) -> list[TraceEntry]:
    """Every mail of purchase ``xid`` in every Maildir, in delivery order, with what its
    recipient made of it: accepted, refused (the SET Error code it answered with), quarantined,
    duplicate, or not yet processed."""
    from setmail.mail.mime import parse_mail
    peers = world.peers()
    mails = []
    for found, raw in _mails(world, xid):
        try:
            mail = parse_mail(raw, max_size=1 << 21)
        except Exception:
            continue
        mtype = mail.header("X-SET-Message-Type") or "?"
        mails.append((found, mail, mtype))
    refusals = {}
    for _, mail, mtype in mails:
        if mtype == "Error" and mail.in_reply_to:
            refusals[mail.in_reply_to] = _error_code(mail.der)
    out = []
    for found, mail, mtype in sorted(mails, key=lambda m: (m[0].time, m[0].key)):
        status = found.status
        if found.folder == "quarantine":
            result = "quarantined"
        elif mail.message_id in refusals:
            result = f"refused ({refusals[mail.message_id]})"
        elif status is None:
            result = "not yet processed"
        elif status == "done":
            result = "accepted"
        else:
            result = status
        out.append(TraceEntry(found.time, peers.get(mail.sender.lower(), mail.sender),
                              found.agent, mtype, len(mail.der), result, found.key))
    return out


def _error_code(der: bytes) -> str:
    try:
        from setmail.asn1.base import decode
        from setmail.asn1.error import Error
        from setmail.asn1.wrapper import decode_wrapper, message_body
        error = decode(Error, message_body(decode_wrapper(der)).dump())
        if error.name == "unsigned_error":
            return error.chosen["error_code"].native
        return "signed Error"
    except Exception:
        return "Error"


def each_store(world: World, names, read: Callable[[Any], Iterable[tuple[str, Any]]]
               ) -> dict[tuple[str, str], Any]:
    """(agent, key) -> value for every (key, value) ``read(store)`` yields from the store of each
    agent in ``names`` that has one."""
    out = {}
    for name in names:
        if not world.store_path(name).exists():
            continue
        store = open_store(world, name)
        try:
            for key, value in read(store):
                out[(name, key)] = value
        finally:
            store.close()
    return out


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
