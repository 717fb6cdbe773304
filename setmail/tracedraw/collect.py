"""A purchase's trace model read from a world: ``txview.trace`` (every mail of the XID in every
Maildir, with its recipient's verdict), each party's state (``txview.agent_states``) and each
mail as ``setmail decode`` shows it (``inspect.describe_mail``: encrypted parts stay closed).

Reading only: nothing here decrypts, and the quarantine is read through the Maildir and store
functions the agents write it with, so a change of its layout carries over.
"""
from __future__ import annotations

from setmail.inspect import describe_mail
from setmail.mail import maildir
from setmail.tracedraw.model import Arrow, Lane, Trace, order_lanes, redact
from setmail.txview import TraceEntry, agent_states, each_store, trace
from setmail.world.config import World

#: (recipient, Maildir key) -> decoded detail; a mail's bytes never change once delivered
DetailCache = dict[tuple[str, str], dict]


def build(world: World, xid: str, cache: DetailCache | None = None) -> Trace:
    """The trace of purchase ``xid`` as it stands now (``--follow`` calls this on every poll
    with one ``cache``, so each mail is decoded once)."""
    cache = {} if cache is None else cache
    entries = trace(world, xid)
    reasons = _quarantine_reasons(world, {e.recipient for e in entries
                                          if e.result == "quarantined"})
    arrows, previous = [], None
    for i, entry in enumerate(entries, 1):
        arrows.append(Arrow(
            index=i, time=entry.time, delay=0.0 if previous is None else entry.time - previous,
            sender=entry.sender, recipient=entry.recipient, message_type=entry.message_type,
            size=entry.size, result=entry.result,
            reason=redact(reasons.get((entry.recipient, entry.key), "")),
            key=entry.key, detail=_detail(world, entry, cache)))
        previous = entry.time
    return Trace(xid, _lanes(world, xid, entries), tuple(arrows))


def _lanes(world: World, xid: str, entries: list[TraceEntry]) -> tuple[Lane, ...]:
    """A lane per party that holds the purchase or sent or received one of its mails."""
    states: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for label, state in agent_states(world, xid).items():
        name = label.split("[", 1)[0]  # a gateway holding the XID for two merchants: one lane
        kinds[name] = state["kind"]
        if state.get("state") and state["state"] not in states.setdefault(name, []):
            states[name].append(state["state"])
    for entry in entries:
        for name in (entry.sender, entry.recipient):
            if name not in kinds:
                kinds[name] = world.agents[name].kind if name in world.agents else "outside"
    return order_lanes([Lane(name, kind, " / ".join(states.get(name, [])))
                        for name, kind in kinds.items()])


def _detail(world: World, entry: TraceEntry, cache: DetailCache) -> dict:
    key = (entry.recipient, entry.key)
    if key not in cache:
        try:
            raw = maildir.read(world.maildir(entry.recipient), entry.key)
        except Exception as exc:  # moved or removed meanwhile: draw the arrow all the same
            return {"error": f"cannot read the mail: {type(exc).__name__}"}
        cache[key] = redact(describe_mail(raw, max_size=1 << 21))
    return cache[key]


def _quarantine_reasons(world: World, names: set[str]) -> dict[tuple[str, str], str]:
    return each_store(world, names, lambda store: ((record.maildir_key, record.reason)
                                                   for record in store.quarantined()))
