"""JWZ message threading (https://www.jwz.org/doc/threading.html), as mail clients thread.

Steps 1-4 of the algorithm: a container per Message-ID (also for ids only referenced), References
linked pairwise (never making a loop, never re-parenting a linked container), each message's
parent set to its last reference (In-Reply-To when it has none), the roots found, and empty
containers pruned (an empty root with one child gives way to it).  Subject grouping (step 5) is
left out: SET mails all carry "SET <type> ..." subjects, and the test is about the headers.
"""
from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from email.policy import compat32

_ANGLE_ID = re.compile(r"<([^<>\s]+)>")


@dataclass(eq=False)
class Container:
    ident: str
    message: object = None          # whatever the caller threads (None: an empty container)
    parent: "Container | None" = None
    children: list["Container"] = field(default_factory=list)

    def reaches(self, other: "Container") -> bool:
        """Is ``other`` this container or one of its descendants?"""
        return other is self or any(c.reaches(other) for c in self.children)

    def walk(self, depth: int = 0):
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


def _link(parent: Container, child: Container) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def thread(messages: list[tuple[str, tuple[str, ...], object]]) -> list[Container]:
    """Root containers of ``messages``: (Message-ID, References (In-Reply-To appended when
    References is empty), payload) each."""
    table: dict[str, Container] = {}

    def get(ident: str) -> Container:
        return table.setdefault(ident, Container(ident))

    for ident, refs, payload in messages:
        own = get(ident)
        if own.message is not None:  # a duplicate Message-ID: keep the first, as JWZ says
            continue
        own.message = payload
        for a, b in zip(refs, refs[1:]):
            pa, ch = get(a), get(b)
            if ch.parent is None and not ch.reaches(pa):
                _link(pa, ch)
        if refs:
            parent = get(refs[-1])
            if not own.reaches(parent):
                _link(parent, own)
        elif own.parent is not None:
            own.parent.children.remove(own)
            own.parent = None
    roots = [c for c in table.values() if c.parent is None]
    return [r for root in roots for r in _prune(root)]


def _prune(container: Container) -> list[Container]:
    """The container, or what stands in for it once empty containers are pruned."""
    kids = [k for child in list(container.children) for k in _prune(child)]
    container.children = kids
    for kid in kids:
        kid.parent = container
    if container.message is None and (len(kids) <= 1 or container.parent is not None):
        for kid in kids:
            kid.parent = None
        return kids
    return [container]


def thread_files(raws: list[bytes]) -> list[Container]:
    """Thread raw mails by their Message-ID, References and In-Reply-To headers; each
    container's message is the parsed ``email.message.Message``."""
    messages = []
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=compat32)
        ident = _ANGLE_ID.findall(str(msg["Message-ID"]))[0]
        refs = tuple(_ANGLE_ID.findall(" ".join(str(v) for v in msg.get_all("References") or ())))
        if not refs:
            refs = tuple(_ANGLE_ID.findall(str(msg.get("In-Reply-To", ""))))[:1]
        messages.append((ident, refs, msg))
    return thread(messages)
