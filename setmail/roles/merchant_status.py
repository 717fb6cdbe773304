"""What the merchant tells the cardholder about a purchase, and when it stops waiting: PRes and
InqRes built from its state, the InqReq, and expiry (docs/purchase.md).

Why a module of its own: ``roles/merchant.py`` takes the order and the cardholder's requests up to
the AuthReq; this half only reports.  The status a PResData reports is a function of the
merchant's state alone (``merchant_msgs.COMPLETION``: creditPerformed once refunded,
orderRejected once voided or expired), so an InqReq is answered in any state after PInitRes
without asking anybody, always to the order's cardholder, and after the PReq only when signed by
the cardholder certificate that signed it.  Purchases nobody continues expire (``expire_after``),
authorisations nobody captures too (``auth_expiry``), and the merchant may end a purchase
itself before the PReq arrives (``cancel``: CANCELLED, a later PInitReq or PReq gets an Error
unknownXID, an InqReq the status orderRejected).
"""
from __future__ import annotations

import datetime as dt

from setmail.asn1 import purchase as pu
from setmail.asn1.codec.strict import decode_native
from setmail.crypto import der
from setmail.crypto.operators import S, verify_S
from setmail.crypto.reader import Reader
from setmail.errors import ProtocolError
from setmail.pki.thumbs import thumbprint
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import CancelTimer, Outcome, Send
from setmail.roles.merchant_msgs import enter, expired, iso
from setmail.roles.refusal import guarded
from setmail.roles.wire import unh, unwrap, wrap


class StatusSide:
    """Handlers mixed into ``Merchant`` (which provides ``config``, ``_bci_der``, ``_ids``,
    ``_check``, ``_same_rrpid``, ``_authorized`` and ``transaction_key``)."""

    # -- PRes / InqRes ---------------------------------------------------------------------------------
    def _status(self, type_name: str, state: dict, key: str, now: dt.datetime, *, tids: bytes,
                lid_c: str, rrpid: bytes, chall_c: bytes, in_reply_to: str | None,
                answers: str | None = None) -> Send:
        """PRes or InqRes to the order's cardholder: S(M, PResData) with the state's status."""
        data = msgs.p_res_data(state, trans_ids=tids, rrpid=rrpid, chall_c=chall_c,
                               bci_der=self._bci_der)
        body = S(self.config.sig, "PResData", data, suite=self.config.suite)
        wrapper = wrap(type_name, body, now=now, rrpid=rrpid, **self._ids(lid_c, key))
        return Send(state["cardholder"], type_name, wrapper, in_reply_to or None, answers)

    def _pres(self, state: dict, key: str, now: dt.datetime) -> Send:
        """The PRes answering the PReq; it joins the PReq's dedupe record (``answers``), so a
        re-sent PReq gets it again."""
        pinit = state["pinit_req"]
        return self._status("PRes", state, key, now, tids=unh(state["trans_ids"]),
                            lid_c=pinit["lid_c"], rrpid=unh(state["preq_rrpid"]),
                            chall_c=unh(pinit["chall_c"]), in_reply_to=state.get("preq_mail_id"),
                            answers=state.get("preq_digest"))

    # -- InqReq -> InqRes --------------------------------------------------------------------------
    @guarded
    def on_InqReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        outer = Reader(parsed.body, "InqReq")
        if outer.peek() != 0xA0:
            raise ProtocolError("InqReq must be signed by the cardholder", "signatureRequired")
        signed = verify_S(der.seq(outer.value(0xA0)), "InqReqData",
                          validate=self._check(now, "card"), suite=self.config.suite)
        outer.done()
        if state.get("card_thumb") not in (None, thumbprint(signed.signer).hex()):
            raise ProtocolError("InqReq signed by another cardholder than the PReq",
                                "invalidCertificate")
        data = decode_native(pu.InqReqData, signed.content, raw=("trans_ids",))
        rrpid = data["rrpid"]
        self._same_rrpid(parsed, rrpid)
        taken = state.get("pinit_req") if "trans_ids" in state else None
        if taken is None or data["trans_ids"] != unh(state["trans_ids"]):
            taken = msgs.find_offer(state.get("offers", []), data["trans_ids"], None)
        send = self._status("InqRes", state, key, now, tids=data["trans_ids"],
                            lid_c=taken["lid_c"], rrpid=rrpid, chall_c=data["chall_c2"],
                            in_reply_to=event.mail_id)
        return Outcome(key, {**state, "inquiries": state.get("inquiries", 0) + 1}, sends=(send,),
                       peer=state["cardholder"])

    # -- expiry ---------------------------------------------------------------------------------------
    def on_timer_expire(self, state, event, now, shared) -> Outcome:
        """Nobody continued this purchase in time: EXPIRED, with why (its challenges are gone);
        an authorisation nobody captured lapses.  In other states the timer is stale."""
        key, current, cfg = self.transaction_key(event), state["state"], self.config
        waited = f"{cfg.expire_after.total_seconds() / 3600:g} h"
        why = {"ORDERED": f"no PInitReq within {waited} of the order",
               "PARKED": f"no order within {waited} of the PInitReq",
               "PINIT_SENT": f"no PReq within {waited} of the order"}.get(current)
        if why is not None:
            return Outcome(key, expired({k: v for k, v in state.items() if k != "offers"},
                                        now, why))
        if current == "AUTHORIZED":
            state, timers = self._authorized(dict(state), key, now)
            return Outcome(key, state, timers=timers)
        return Outcome(key, dict(state))

    # -- cancel -----------------------------------------------------------------------------------------
    def on_cancel(self, state, event, now, shared) -> Outcome:
        """The merchant ends a purchase nobody has paid yet (ORDERED, PARKED, PINIT_SENT):
        CANCELLED, its challenges gone.  Once the PReq went on to the gateway (AUTH_SENT) only
        the gateway's answer ends it, and an authorisation is voided, not cancelled."""
        key, current = self.transaction_key(event), state["state"]
        if current == "CANCELLED":
            return Outcome(key, dict(state))
        if current == "AUTH_SENT":
            raise ProtocolError("the AuthReq is with the gateway already: wait for its answer, "
                                "then void the authorisation (`setmail void`)")
        kept = {k: v for k, v in state.items() if k != "offers"}
        kept["cancelled"] = {"at": iso(now), "by": "merchant",
                             "reason": str(event.args.get("reason") or "cancelled by the "
                                           "merchant")[:200]}
        return Outcome(key, enter(kept, "CANCELLED", now), timers=(CancelTimer("expire"),))
