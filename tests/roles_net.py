"""A tiny in-memory "network" for sans-I/O roles: feeds each Send to the peer role's ``step``,
keeping every party's transaction states and shared state in dicts (what the agent does with its
store), and records effects and timers so tests can assert on them."""
from __future__ import annotations

from dataclasses import dataclass, field

from setmail.roles.base import CancelTimer, Inbound, Outcome, SetTimer


@dataclass
class Net:
    roles: dict  # address -> Role
    states: dict = field(default_factory=dict)   # (address, transaction) -> state
    shared: dict = field(default_factory=dict)   # address -> shared state
    effects: list = field(default_factory=list)  # (address, Effect)
    timers: dict = field(default_factory=dict)   # (address, transaction, name) -> SetTimer
    log: list = field(default_factory=list)      # (from, to, message_type)
    #: optional hook (to, Send) -> Send | None to tamper with or drop messages in flight
    tamper: object = None

    def step(self, address: str, event, now) -> Outcome:
        role = self.roles[address]
        key = role.transaction_key(event)
        shared = self.shared.get(address) if role.shared_key else None
        out = role.step(self.states.get((address, key)), event, now, shared)
        if out.state is None:
            self.states.pop((address, key), None)
        else:
            self.states[(address, key)] = dict(out.state)
        if out.shared is not None:
            self.shared[address] = dict(out.shared)
        self.effects.extend((address, e) for e in out.effects)
        for t in out.timers:
            if isinstance(t, SetTimer):
                self.timers[(address, key, t.name)] = t
            elif isinstance(t, CancelTimer):
                self.timers.pop((address, key, t.name), None)
        return out

    def run(self, address: str, event, now, *, max_hops: int = 20) -> list[tuple[str, Outcome]]:
        """Step ``event`` at ``address`` and deliver every resulting Send until quiet."""
        queue = [(address, event)]
        done = []
        while queue:
            if len(done) >= max_hops:
                raise AssertionError("message loop")
            to, ev = queue.pop(0)
            out = self.step(to, ev, now)
            done.append((to, out))
            for send in out.sends:
                if self.tamper is not None:
                    send = self.tamper(to, send)
                    if send is None:
                        continue
                self.log.append((to, send.to, send.message_type))
                if send.to in self.roles:
                    queue.append((send.to, Inbound(send.message_type, send.wrapper_der, to)))
        return done

    def state(self, address: str) -> dict:
        """The one transaction state this address holds (tests run one transaction at a time)."""
        mine = [s for (a, _), s in self.states.items() if a == address]
        assert len(mine) == 1, mine
        return mine[0]

    def effect(self, address: str, kind: str):
        found = [e for a, e in self.effects if a == address and e.kind == kind]
        assert found, f"no {kind} effect at {address}"
        return found[-1]
