"""``setmail buy``, ``capture`` and ``inquire`` (``tx``/``cancel`` live in ``tx_cmds``, the
lifecycle after the authorisation in ``lifecycle_cmds``, ``ledger`` in ``ledger_cmds``).

``buy`` plays the shopping phase SET leaves outside the protocol: it picks the XID, hands the
order (description, amount) to the merchant's agent and the purchase to the cardholder's wallet,
both as queued commands; the agents do the rest by mail.  With ``--wait`` every command follows
its purchase through ``waiting``: each step as it happens, the outcome as soon as it is known.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from setmail.cli.common import (agent_of_kind, cards_for, fail, holder_of, home_option,
                                json_option, load, read_state, wait_option, xid_of)
from setmail.cli.show import explain, money, money_json, short_xid
from setmail.cli.waiting import End, View, Wait, report


def buy(cardholder: str = typer.Option(..., "--cardholder", help="cardholder agent, e.g. alice"),
        merchant: str = typer.Option(..., "--merchant", help="merchant agent, e.g. shop"),
        amount: str = typer.Option(..., "--amount", help="amount in currency units, e.g. 12.34"),
        currency: str = typer.Option(None, "--currency",
                                     help="ISO 4217 code; must be the card's (the default)"),
        description: str = typer.Option("setmail order", "--description",
                                         help="order description (only the merchant sees it)"),
        card: str = typer.Option(None, "--card", help="card name in world.toml "
                                 "(default: the cardholder's first card)"),
        ship_now: str = typer.Option(None, "--ship-now", help="authorise only this much now "
                                     "(a split shipment; the rest with `setmail authorize`)"),
        instalments: int = typer.Option(None, "--instalments", help="pay in N instalments "
                                        "(terms the cardholder signs in HOD)"),
        recurring: int = typer.Option(None, "--recurring", help="a recurring payment every DAYS "
                                      "days (with --until)"),
        until: str = typer.Option(None, "--until", help="last day of the recurring payments, "
                                  "YYYYMMDD"),
        wait: float = wait_option("the outcome (approved, declined, refused)"),
        json_out: bool = json_option(),
        xid: str = typer.Option(None, "--xid", help="the order's XID, when the merchant runs on "
                                "another host and took the order there (`setmail order`)"),
        home: Path = home_option()) -> None:
    """Start a purchase and print its XID; with --wait, follow it to its outcome.

    Exit 0 approved, 1 declined by the card's issuer, 3 refused (a party refused a message or
    the command), 4 no outcome in time (a command not picked up is withdrawn)."""
    from setmail.crypto.suite import fresh
    from setmail.money import currency_number, parse_amount
    from setmail.txview import normalise_xid
    world = load(home)
    holder = agent_of_kind(world, cardholder, "cardholder")
    shop = agent_of_kind(world, merchant, "merchant")
    if not description.strip() or len(description) > 1000:
        fail("--description must be 1..1000 characters")
    chosen = cards_for(world, cardholder, card)[0]
    if currency:
        currency_number(currency)  # an unknown code says so (exit 2)
    if currency and currency.strip().upper() != chosen.currency.upper():
        fail(f"{cardholder}'s card {chosen.name} is in {chosen.currency}: it cannot pay in "
             f"{currency.strip().upper()} (leave --currency out, or choose another --card)")
    minor, number, exp10 = parse_amount(amount, chosen.currency)
    terms = _terms(instalments, recurring, until)
    shop_here = merchant in world.local_agents()  # else its host took the order
    if not shop_here and not xid:
        fail(f"{merchant} runs on another host: take the order there (`setmail order`) and "
             "give its --xid")
    xid = normalise_xid(xid) if xid else fresh(20).hex()
    order = {"xid": xid, "description": description, "amount": minor, "currency": number,
             "amt_exp10": exp10, "cardholder": holder.address, **terms}
    if ship_now is not None:
        order["ship_now"] = parse_amount(ship_now, chosen.currency)[0]
        if order["ship_now"] > minor:
            fail("--ship-now is more than the amount")
    shown = money(minor, number, exp10)
    waiting = Wait(world, wait, what=f"{cardholder} pays {shown} at {merchant}",
                   json_out=json_out)
    if wait > 0:
        waiting.watch_purchase(xid)
    if shop_here:
        waiting.submit(merchant, "order", order)
    waiting.submit(cardholder, "buy", {
        "xid": xid, "merchant": shop.address, "pan": chosen.pan, "expiry": chosen.expiry,
        "description": description, "amount": minor, "currency": number, "amt_exp10": exp10,
        "brand": world.brand, **terms})
    fields = {"xid": xid, "cardholder": cardholder, "merchant": merchant,
              "amount": money_json(minor, number, exp10)}
    if wait <= 0:
        typer.echo(json.dumps({**fields, "commands": [q.ref for q in waiting.queued]})
                   if json_out else xid)
        return
    if not json_out:
        typer.echo(f"{xid}  {cardholder} -> {merchant}  {shown}  (card ending "
                   f"{chosen.pan[-4:]})")
    purchase = _Purchase(xid, cardholder, merchant if shop_here else None, chosen.issuer,
                         bool(shop.options.get("auto_capture") or shop.options.get("sale")),
                         fields)
    end = waiting.until(purchase.end, where=purchase.where)
    if end.outcome == "timed out":
        end = _abandon(waiting, end, purchase)
    report(end, json_out=json_out, wait=waiting)


class _Purchase:
    """How a purchase ends, read from the wallet's state and the merchant's (when local)."""

    def __init__(self, xid, cardholder, merchant, issuer, captures, fields):
        self.xid, self.cardholder, self.merchant, self.issuer = xid, cardholder, merchant, issuer
        self.captures, self.fields = captures, fields

    def _fields(self, w: dict, m: dict) -> dict:
        out = {**self.fields, "state": w.get("state")}
        for key in ("completion", "auth_code", "iso_code", "iso_text", "failure", "error_code",
                    "refused"):
            if w.get(key) not in (None, ""):
                out[key] = w[key]
        if isinstance(w.get("auth_amt"), int):
            out["auth_amt"] = money_json(w["auth_amt"], w.get("currency"), w.get("amt_exp10", -2))
        out["captured"] = w.get("state") == "CAPTURED" or m.get("state") == "CAPTURED"
        if m:
            out["merchant_state"] = m.get("state")
        return out

    def end(self, view: View) -> End | None:
        w = view.state(self.cardholder, self.xid)
        m = view.state(self.merchant, self.xid) if self.merchant else {}
        s, fields, who = w.get("state"), self._fields(w, m), self.cardholder
        amount = self.fields["amount"]
        paid = f"{amount['amount']} {amount['currency']}"
        if s in ("APPROVED", "CAPTURED"):
            cap = m.get("cap_code")
            if self.captures and not fields["captured"] and cap in (None, "success") \
                    and m.get("state") not in ("DECLINED", "REJECTED", "EXPIRED"):
                return None  # the merchant captures at once: wait for its CapRes
            said = f"{paid} by {who} at {self.merchant or 'the merchant'}" + (
                f", auth code {w['auth_code']}" if w.get("auth_code") else "")
            if fields["captured"]:
                said += ", captured"
            elif cap not in (None, "success"):
                said += f"; the capture was refused: {explain(cap)}"
            return End("approved", said, party=self.issuer, fields=fields)
        if s == "DECLINED":
            return End("declined", f"the card's issuer ({self.issuer}) declined: "
                       f"{w.get('iso_code', '?')} {w.get('iso_text', '')}".rstrip(),
                       party=self.issuer, code=str(w.get("iso_code") or "") or None,
                       fields=fields)
        if s in ("REJECTED", "FAILED", "CANCELLED"):
            return self._stopped(s, w, m, fields)
        refused = w.get("refused")
        if isinstance(refused, dict):
            shop, code = self.merchant or "the merchant", explain(refused.get("code"))
            said = (f"{shop} answered with an Error: {code}" if refused.get("type") == "Error"
                    else f"{who} refused {shop}'s {refused.get('type')}: {code}")
            return End("refused", said, party=(self.merchant if refused.get("type") == "Error"
                                                else who),
                       code=refused.get("code"), detail=refused.get("reason"), fields=fields,
                       hints=[f"the purchase stays open at {who} ({s}) until its re-sends are "
                              "spent, unless a valid answer comes; `setmail cancel "
                              f"{short_xid(self.xid)}` ends it now"])
        from setmail.cli.story import new_refusals
        mine = [e for e in new_refusals({}, m) if e.get("by") == "merchant"]
        if mine:
            e = mine[-1]
            return End("refused", f"{self.merchant} refused {who}'s {e.get('message')}: "
                       f"{explain(e.get('code'))}", party=self.merchant, code=e.get("code"),
                       detail=e.get("reason"), fields=fields)
        if m.get("state") in ("REJECTED", "EXPIRED", "CANCELLED"):
            return self._stopped(m["state"], m, m, fields, party=self.merchant)
        return None

    def _stopped(self, s: str, st: dict, m: dict, fields: dict, party: str | None = None):
        """The purchase stopped before an answer of the issuer: rejected (the gateway refused
        the merchant), failed (refused by the merchant's Error, or no answer), cancelled or
        expired; ``party``: the merchant's own state says so."""
        shop = self.merchant or "the merchant"
        code = st.get("error_code") or (m.get("result") or {}).get("code") if s != "FAILED" \
            else st.get("error_code")
        why = (st.get("failure") or (st.get("expired") or {}).get("reason")
               or (st.get("cancelled") or {}).get("reason") or m.get("failure") or "")
        if s == "REJECTED":
            who, text = party or shop, f"{shop} rejected the order"
        elif s == "FAILED" and code:
            who, text = shop, f"{shop} refused it"
        else:
            who, text = party or self.cardholder, f"{s.lower()} at {party or self.cardholder}"
        text += f": {why}" if why else ""
        text += f" — {explain(code)}" if code else ""
        outcome = "refused" if code or s == "REJECTED" else "failed"
        return End(outcome, text, party=who, code=code, fields=fields)

    def where(self, view: View) -> str:
        w = view.state(self.cardholder, self.xid)
        m = view.state(self.merchant, self.xid) if self.merchant else {}
        at = [f"{w.get('state', 'nothing')} at {self.cardholder}"]
        if self.merchant:
            at.append(f"{m.get('state', 'nothing')} at {self.merchant}")
        return (f"the purchase is {', '.join(at)}; follow it with `setmail tx show "
                f"{short_xid(self.xid)}` or `setmail trace {short_xid(self.xid)} --follow`")


def _abandon(waiting: Wait, end: End, purchase: _Purchase) -> End:
    """A wait that ran out before the wallet took the purchase: it never starts, and the
    merchant's order (if the merchant took it) is cancelled, not left to expire."""
    withdrawn = set(end.fields.get("withdrawn", []))
    buy_ref = next(q.ref for q in waiting.queued if q.name == "buy")
    orders = [q for q in waiting.queued if q.name == "order" and q.ref not in withdrawn]
    if buy_ref in withdrawn and orders:
        queued = waiting.submit(purchase.merchant, "cancel", {
            "xid": purchase.xid, "reason": "the cardholder's purchase was withdrawn"})
        end.message += f"; {purchase.merchant}'s order is cancelled ({queued.ref})"
    return end


def _terms(instalments: int | None, recurring: int | None, until: str | None) -> dict:
    """The ``buy``/``order`` arguments of the instalment or recurring terms (checked as the
    wallet and the merchant check them: one line and exit 2 otherwise)."""
    from setmail.roles.purchase_msgs import order_terms
    if (recurring is None) != (until is None):
        fail("--recurring DAYS and --until YYYYMMDD go together")
    args = {"instalments": instalments} if instalments is not None else {}
    if recurring is not None:
        args["recurring"] = {"days": recurring, "until": until}
    try:
        order_terms(args)
    except ValueError as exc:
        fail(str(exc))
    return args


def capture(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
            amount: str = typer.Option(None, "--amount", help="amount to capture "
                                       "(default: what is authorised and not captured)"),
            reverse: bool = typer.Option(False, "--reverse", help="undo the latest capture "
                                         "instead (CapRevReq; `setmail capture-reverse`)"),
            wait: float = wait_option("the gateway's CapRes"),
            json_out: bool = json_option(), home: Path = home_option()) -> None:
    """Ask the merchant's agent to capture an authorised purchase (CapReq to the gateway)."""
    from setmail.cli.lifecycle_cmds import ask_merchant, capture_reverse, minor_of, purchase
    if reverse:
        if amount is not None:
            fail("--reverse takes back the latest capture: it has no --amount")
        capture_reverse(xid, wait=wait, json_out=json_out, home=home)
        return
    world = load(home)
    xid, merchant, state = purchase(world, xid)
    args = {} if amount is None else {"amount": minor_of(amount, state)}
    ask_merchant(world, xid, merchant, state, "capture", args, "capture", wait, json_out)


def inquire(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
            wait: float = wait_option("the merchant's InqRes"),
            json_out: bool = json_option(), home: Path = home_option()) -> None:
    """Ask the merchant, by the cardholder's wallet, how a purchase stands (InqReq/InqRes)."""
    world = load(home)
    xid = xid_of(world, xid)
    holder = holder_of(world, xid, "cardholder")
    before = read_state(world, holder, xid).get("inquiries", 0)
    waiting = Wait(world, wait, what=f"{holder} asks about {short_xid(xid)}", json_out=json_out)
    waiting.watch_purchase(xid)
    waiting.submit(holder, "inquire", {"xid": xid})

    def answered(view: View) -> End | None:
        s = view.state(holder, xid)
        if s.get("inquiries", 0) <= before or s.get("inquiry_pending"):
            return None
        fields = {"xid": xid, "state": s.get("state"), "completion": s.get("completion"),
                  **({"iso_code": s["iso_code"]} if s.get("iso_code") else {})}
        if s.get("inquiry_error"):
            return End("refused", f"the inquiry got no answer: {s['inquiry_error']}",
                       party=s.get("merchant"), fields=fields)
        return End("done", f"{short_xid(xid)} is {s.get('state')} ({s.get('completion')}), "
                   "as the merchant says", party=s.get("merchant"), fields=fields)

    end = waiting.until(answered)
    if end.outcome == "queued":
        end.message = f"queued inquiry of {short_xid(xid)} at {holder} ({waiting.queued[0].ref})"
        end.fields = {"xid": xid, "commands": [waiting.queued[0].ref]}
    report(end, json_out=json_out, wait=waiting)


def register_commands(app: typer.Typer) -> None:
    app.command("buy")(buy)
    app.command("capture")(capture)
    app.command("inquire")(inquire)
    from setmail.cli import tx_cmds  # tx list|show, cancel
    tx_cmds.register_commands(app)
    from setmail.cli.trace_cmds import trace  # the pictures: setmail/tracedraw/
    app.command("trace")(trace)
