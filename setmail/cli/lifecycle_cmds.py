"""``setmail void``, ``refund``, ``authorize``, ``capture-reverse`` (and ``capture``): what a
merchant does after the authorisation (docs/lifecycle.md); batches are in ``batch_cmds``.

Each command queues one command for the merchant's agent (the merchant that knows the purchase)
and, with ``--wait``, follows it (``waiting``) until the gateway's answer is in: the purchase's
``result`` names another request than before and the merchant waits no more.  Exit 0 when the
gateway did it (approved, success), 1 when the card's issuer declined a further authorisation,
3 when the gateway refused (its SET code with a sentence) or the merchant refused the command
(its reason), 4 when no answer came in time.  The report shows the amounts (``12.34 EUR``;
with ``--json`` as ``{amount, currency, minor}``).
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

import typer

from setmail.cli.common import fail, holder_of, home_option, json_option, load, read_state
from setmail.cli.common import wait_option, xid_of
from setmail.cli.show import explain, money_json, short_xid
from setmail.cli.waiting import End, View, Wait, report

#: the merchant's states that wait for the gateway after the authorisation
WAITING = ("CAP_SENT", "REAUTH_SENT", "AUTHREV_SENT", "CRED_SENT", "CREDREV_SENT", "CAPREV_SENT")
#: SET codes that say the gateway did what was asked; those that say the card's issuer said no
DONE, DECLINES = ("approved", "success"), ("declined", "expiredCard", "callIssuer")
#: after a refusal, what to do instead
ADVICE = {"originalProcessed": "the batch is settled: refund instead (`setmail refund`)",
          "alreadyCaptured": "captured already: refund instead (`setmail refund`)",
          "authExpired": "ask the cardholder for a new purchase"}


def minor_of(text: str, state: dict, *, zero: bool = False) -> int:
    """An amount typed in currency units, in the purchase's currency (minor units)."""
    from setmail.money import currency_code, parse_amount
    if zero:
        try:
            if Decimal(text.strip()) == 0:
                return 0
        except (InvalidOperation, AttributeError):
            pass
    return parse_amount(text, currency_code(state.get("currency", 840)))[0]


def purchase(world, xid: str) -> tuple[str, str, dict]:
    """(the XID typed, in full; the local merchant holding it; its state)."""
    xid = xid_of(world, xid)
    merchant = holder_of(world, xid, "merchant")
    return xid, merchant, read_state(world, merchant, xid)


def _fields(xid: str, state: dict) -> dict:
    result = state.get("result") or {}
    amount = (lambda v: money_json(v, state.get("currency"), state.get("amt_exp10", -2)))
    out = {"xid": xid, "state": state.get("state"), "request": result.get("request"),
           "code": result.get("code"), "amount": amount(result.get("amount")),
           "authorized": amount(state.get("auth_amt")),
           "captured": amount(state.get("captured", 0)),
           "credited": amount(state.get("credited", 0))}
    if state.get("advice"):
        out["advice"] = state["advice"]
    return out


def _line(fields: dict) -> str:
    text = lambda a: f"{a['amount']} {a['currency']}" if a else "-"  # noqa: E731
    return (f"{short_xid(fields['xid'])}  {fields['state']}  {fields['request']} "
            f"{fields['code']}  amount {text(fields['amount'])}  authorized "
            f"{text(fields['authorized'])}  captured {text(fields['captured'])}  credited "
            f"{text(fields['credited'])}")


def ask_merchant(world, xid: str, merchant: str, before: dict, command: str, args: dict,
                 what: str, wait: float, json_out: bool) -> None:
    """Queue ``command`` for the merchant, and with ``wait`` follow it to the gateway's answer."""
    old = (before.get("result") or {}).get("rrpid")
    waiting = Wait(world, wait, what=f"{merchant}: {what} of {short_xid(xid)}",
                   json_out=json_out)
    waiting.watch_purchase(xid)
    queued = waiting.submit(merchant, command, {"xid": xid, **args})

    def answered(view: View) -> End | None:
        state = view.state(merchant, xid)
        result = state.get("result") or {}
        if result.get("rrpid") in (None, old) or state.get("state") in WAITING:
            return None
        fields, code = _fields(xid, state), result.get("code")
        if code in DONE:
            return End("done", f"{what}: {_line(fields)}", party=merchant, code=code,
                       fields=fields)
        advice = state.get("advice") or ADVICE.get(code)
        outcome = "declined" if code in DECLINES else "refused"
        return End(outcome, f"the gateway answered the {what} with {explain(code)}: "
                   f"{_line(fields)}", party="gateway", code=code, fields=fields,
                   hints=[advice] if advice else [])

    end = waiting.until(answered, where=lambda v: (
        f"{merchant} took it and waits for the gateway ({v.state(merchant, xid).get('state')}):"
        f" follow it with `setmail tx show {short_xid(xid)}`"))
    if end.outcome == "queued":
        end.message = f"queued {what} of {short_xid(xid)} for {merchant} as {queued.ref}"
        end.fields = {"xid": xid, "merchant": merchant, "commands": [queued.ref]}
    report(end, json_out=json_out, wait=waiting)


def void(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
         amount: str = typer.Option(None, "--amount", help="what stays authorised, e.g. 5.00 "
                                    "(default: nothing: the whole authorisation is cancelled)"),
         wait: float = wait_option("the gateway's answer"), json_out: bool = json_option(),
         home: Path = home_option()) -> None:
    """Cancel an authorisation, or reduce it before capture (AuthRevReq)."""
    world = load(home)
    xid, merchant, state = purchase(world, xid)
    args = {} if amount is None else {"amount": minor_of(amount, state, zero=True)}
    ask_merchant(world, xid, merchant, state, "void", args, "void", wait, json_out)


def refund(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
           amount: str = typer.Option(None, "--amount", help="amount to credit (default: what "
                                      "is still refundable)"),
           reverse: bool = typer.Option(False, "--reverse", help="reverse the latest credit "
                                        "not yet settled instead (CredRevReq)"),
           wait: float = wait_option("the gateway's answer"), json_out: bool = json_option(),
           home: Path = home_option()) -> None:
    """Credit a captured purchase (CredReq), or reverse its latest credit (--reverse)."""
    world = load(home)
    if reverse and amount is not None:
        fail("--reverse takes back the latest credit: it has no --amount")
    xid, merchant, state = purchase(world, xid)
    if reverse:
        ask_merchant(world, xid, merchant, state, "refund_reverse", {}, "refund reversal", wait,
                     json_out)
        return
    args = {} if amount is None else {"amount": minor_of(amount, state)}
    ask_merchant(world, xid, merchant, state, "refund", args, "refund", wait, json_out)


def capture_reverse(xid: str = typer.Argument(..., help="the purchase's XID (or a unique "
                                              "prefix)"),
                    wait: float = wait_option("the gateway's answer"),
                    json_out: bool = json_option(), home: Path = home_option()) -> None:
    """Undo the latest capture before its batch settles (CapRevReq); the purchase is
    AUTHORIZED again.  Settled: the gateway says originalProcessed (refund instead)."""
    world = load(home)
    xid, merchant, state = purchase(world, xid)
    ask_merchant(world, xid, merchant, state, "capture_reverse", {}, "capture reversal", wait,
                 json_out)


def authorize(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
              amount: str = typer.Option(None, "--amount", help="amount to authorise (default: "
                                         "the rest of a split order, the next instalment or "
                                         "recurring payment)"),
              wait: float = wait_option("the gateway's answer"), json_out: bool = json_option(),
              home: Path = home_option()) -> None:
    """Authorise more of a purchase with the gateway's AuthToken (split shipment, instalments,
    recurring payments)."""
    world = load(home)
    xid, merchant, state = purchase(world, xid)
    args = {} if amount is None else {"amount": minor_of(amount, state)}
    ask_merchant(world, xid, merchant, state, "authorize", args, "authorisation", wait,
                 json_out)


def register_commands(app: typer.Typer) -> None:
    app.command("void")(void)
    app.command("refund")(refund)
    app.command("authorize")(authorize)
    app.command("capture-reverse")(capture_reverse)
    from setmail.cli import batch_cmds
    batch_cmds.register_commands(app)

