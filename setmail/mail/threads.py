"""Threading headers for mail clients: one thread per purchase, whichever agent's mailbox is read.

Agents share no state, so the thread's root is derived from what every party of a purchase reads
in the clear MessageHeader of each message: its XID.  ``thread_root(xid)`` is the Message-ID of
the wallet's first PInitReq, and every other mail of the purchase lists it first in References;
its parent (In-Reply-To, References' last) is the mail it answers (``reply_headers``).  A mail
the agent sends from a command or a timer (an inquiry, a void, a re-send) answers the root.

These headers are for people only (D-420): no agent reads them to decide anything; which
purchase a message belongs to and who sent it come from the signed SET content.
"""
from __future__ import annotations

#: the right-hand side of thread roots: no host's domain (the root is every party's to compute,
#: so it names none of them); ``.invalid`` (RFC 2606) cannot clash with a real one
ROOT_DOMAIN = "purchase.setmail.invalid"
#: References keep the root and the latest ancestors (RFC 5322 3.6.4 allows trimming; JWZ threading
#: and mutt need only the root and the parent)
MAX_REFERENCES = 10


def thread_root(xid: str) -> str:
    """The Message-ID (bare) every mail of purchase ``xid`` (hex) hangs from."""
    return f"{xid.lower()}@{ROOT_DOMAIN}"


def reply_headers(message_id: str, *, root: str | None = None, answers: str | None = None,
                  request: tuple[str, tuple[str, ...]] | None = None
                  ) -> tuple[str | None, tuple[str, ...]]:
    """(In-Reply-To, References) of an outgoing mail ``message_id``.

    ``root``: its purchase's thread root (None: not a purchase's mail); ``answers``: the mail id
    the role says it answers (a PRes its PReq, a parked PInitReq's PInitRes that PInitReq);
    ``request``: (Message-ID, References) of the mail whose processing sends it, if any.  The
    parent is ``answers``, else the request, else the root; its ancestors are taken from the
    request's chain when the parent is in it, so References list only true ancestors, root
    first.  A request of another thread (a batch's mail answered by a purchase's) is not one."""
    if root is not None and message_id == root:
        return None, ()
    chain: tuple[str, ...] = ()
    if request is not None and (root is None or root == request[0] or root in request[1]):
        chain = (*request[1], request[0])
    parent = answers or (chain[-1] if chain else root)
    if parent is None:
        return None, ()
    ancestors = chain[:chain.index(parent)] if parent in chain else ()
    refs = [r for r in dict.fromkeys(ancestors) if r not in (root, parent)]
    refs = ([root] if root is not None and root != parent else []) + refs + [parent]
    if len(refs) > MAX_REFERENCES:
        refs = refs[:1] + refs[1 - MAX_REFERENCES:]
    return parent, tuple(refs)
