"""The trace model every drawing is made from: lanes (the parties) and arrows (the mails).

Plain frozen data, built by ``collect.build`` from a world and drawn by ``text``/``svg``/``html``
without touching one, so the pictures are tested on hand-made models too.  An arrow's ``detail``
is what ``setmail decode`` shows of the mail (its MIME headers and SET MessageHeader, encrypted
parts unopened), passed once more through ``redact`` so that no card number can reach a picture.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from setmail.roles.purchase_msgs import mask_pan

#: lane order: the purchase flows left to right, the CAs (registration) at the far right
KIND_ORDER = ("cardholder", "merchant", "gateway", "issuer", "ca")
#: what a lane's kind is called under its name (a cardholder's agent is its wallet)
KIND_ROLE = {"cardholder": "wallet", "merchant": "merchant", "gateway": "gateway",
             "issuer": "issuer", "ca": "CA"}
#: the wallet's outcome states (as `setmail buy --wait` ends on them)
WALLET_FINAL = ("APPROVED", "CAPTURED", "DECLINED", "REJECTED", "FAILED")
#: a party in one of these states waits for an answer (or has not answered yet)
_WAITING = ("START", "ORDERED", "PARKED", "REVERSING", "CLEARING")


@dataclass(frozen=True)
class Lane:
    name: str          # the agent's name in world.toml, or the From address of a stranger
    kind: str          # cardholder, merchant, gateway, issuer, ca, or "outside"
    state: str = ""    # its state of the purchase ("A / B" when it holds two merchants' XIDs)

    @property
    def states(self) -> list[str]:
        return [s for s in self.state.split(" / ") if s]

    @property
    def role(self) -> str:
        return KIND_ROLE.get(self.kind, self.kind)


@dataclass(frozen=True)
class Arrow:
    index: int            # 1-based, in delivery order
    time: float           # delivery to the recipient's Maildir (Unix seconds)
    delay: float          # seconds since the previous mail's delivery (0 for the first)
    sender: str           # lane name (as the From header says: the recipient's verdict tells
    recipient: str        # whether a signature backed it)
    message_type: str
    size: int             # octets of the SET MessageWrapper
    result: str           # accepted, refused (code), quarantined, duplicate, not yet processed
    reason: str = ""      # why a mail was quarantined
    key: str = ""         # its Maildir key at the recipient
    detail: dict = field(default_factory=dict, compare=False)

    @property
    def verdict(self) -> str:
        """One word a drawing styles by: ok, refused, quarantined, duplicate, pending."""
        if self.result == "accepted":
            return "ok"
        if self.result == "not yet processed":
            return "pending"
        return self.result.split(" ", 1)[0]

    @property
    def mark(self) -> str:
        return {"ok": "✓", "pending": "…", "duplicate": "=", "quarantined": "⚠"}.get(
            self.verdict, "✗")

    @property
    def label(self) -> str:
        """``PReq 2.1 kB ✓`` : what an arrow says about its mail."""
        return f"{self.message_type} {human_size(self.size)} {self.mark}"

    @property
    def outcome(self) -> str:
        """The verdict in words, with the quarantine's reason."""
        return f"{self.result}: {self.reason}" if self.reason else self.result


@dataclass(frozen=True)
class Trace:
    xid: str
    lanes: tuple[Lane, ...]
    arrows: tuple[Arrow, ...]

    @property
    def settled(self) -> bool:
        """The purchase reached a final state: the wallet has its outcome, no party waits for an
        answer and every mail has been processed (D-440)."""
        wallet = [s for lane in self.lanes if lane.kind == "cardholder" for s in lane.states]
        if not wallet or any(s not in WALLET_FINAL for s in wallet):
            return False
        if any(a.verdict == "pending" for a in self.arrows):
            return False
        return not any(s.endswith("SENT") or s.startswith("ISSUER_") or s in _WAITING
                       for lane in self.lanes for s in lane.states)

    def lane_index(self, name: str) -> int:
        return next(i for i, lane in enumerate(self.lanes) if lane.name == name)


def human_size(size: int) -> str:
    return f"{size} B" if size < 1000 else f"{size / 1000:.1f} kB"


def human_delay(seconds: float) -> str:
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"+{seconds:.2f} s"
    return f"+{seconds / 60:.1f} min"


def order_lanes(lanes: list[Lane]) -> tuple[Lane, ...]:
    """Wallets, merchants, gateways, issuers, CAs, then strangers; by name within a kind."""
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    return tuple(sorted(lanes, key=lambda lane: (rank.get(lane.kind, len(rank)), lane.name)))


# -- never a card number ----------------------------------------------------------------------
_DIGITS = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _mask(match: re.Match) -> str:
    digits = match.group(0)
    return mask_pan(digits) if _luhn(digits) else digits


def redact(value: Any) -> Any:
    """``value`` with every Luhn-valid 13-19 digit run shown as its last four digits.  SET keeps
    PANs inside encrypted parts, which the decoder never opens; this catches one that a
    misbehaving party put in clear (a header, a free-text field)."""
    if isinstance(value, str):
        return _DIGITS.sub(_mask, value)
    if isinstance(value, dict):
        return {redact(str(k)): redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
