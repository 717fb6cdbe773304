"""How the wallet learns a purchase's outcome: PRes, and inquiries (InqReq/InqRes).

Why a module of its own: ``roles/wallet.py`` starts the purchase (buy, PInitRes -> PReq); this
half reads the merchant's signed status (PResData, in PRes and InqRes alike) and keeps asking
when the user wants to know.  Both answers come from the merchant certificate PInitRes pinned,
echo our RRPID and challenge and repeat the TransIDs PInitRes signed; the AcqCardMsg inside must
come from the gateway PInitRes named.  A PRes for a PReq that stopped waiting (the merchant said
orderReceived, the re-sends were spent, an Error refused it) still tells the outcome until the
purchase is answered (``_late``: the PReq's exchange record without its bytes); then any further
answer is absorbed.
"""
from __future__ import annotations

import datetime as dt

from setmail.asn1 import purchase as pu
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.operators import S, open_EncK
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.roles.base import CancelTimer, Outcome, SetTimer
from setmail.roles.exchange import subject_hex
from setmail.roles.purchase_msgs import inq_req, inq_req_data, iso_response, status_fields
from setmail.roles.refusal import guarded
from setmail.roles.wire import h, unh, unwrap, wrap

#: CompletionCode -> wallet state; any other code (orderReceived, ...) leaves the state as it is
STATUS = {"authorizationPerformed": "APPROVED", "capturePerformed": "CAPTURED",
          "authorizationDeclined": "DECLINED", "orderRejected": "REJECTED"}
ANSWERED = ("APPROVED", "CAPTURED", "DECLINED", "REJECTED")
#: the merchant's fields read as their DER (``decode_native``'s raw paths): TransIDs, kept and
#: compared byte-wise, and the BrandCRLIdentifier, verified as signed
RAW = ("trans_ids", "brand_crl_identifier")


def when(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


class StatusSide:
    """Handlers mixed into ``Wallet`` (which provides ``config``, ``purchase``, ``inquiry``,
    ``transaction_key``, ``_card``, ``_no_card``, ``_signed``, ``_echoed``, ``_bci``, ``_path``
    and ``refuse``)."""

    # -- 3. PRes / InqRes -> the purchase's status ------------------------------------------------
    @guarded
    def on_PRes(self, state, event, now, shared) -> Outcome:
        parsed = unwrap(event, now)
        rec = self.purchase.pending(state)
        if rec is None or rec["type"] != "PReq":
            # the PReq stopped waiting (orderReceived, retries spent, refused): a PRes for it
            # still tells the outcome, until the purchase is answered
            rec = state.get("_late") if state["state"] in ("PREQ_SENT", "FAILED") else None
        if rec is None:
            raise ProtocolError("PRes answers no PReq of ours", "challengeMismatch")
        signed = self._signed(parsed, "PResData", now)
        self.purchase.accept({self.purchase.slot: rec}, parsed, signed.signer)
        return self._status(dict(state), event, parsed, signed, now, shared, unh(rec["rrpid"]),
                            unh(state["_chall_c"]))

    @guarded
    def on_InqRes(self, state, event, now, shared) -> Outcome:
        parsed = unwrap(event, now)
        rec = self.inquiry.pending(state)
        if rec is None:
            raise ProtocolError("InqRes answers no InqReq outstanding", "challengeMismatch")
        signed = self._signed(parsed, "PResData", now)
        self.inquiry.accept(state, parsed, signed.signer)
        return self._status(dict(state), event, parsed, signed, now, shared, unh(rec["rrpid"]),
                            unh(state["_inq_chall"]))

    def _status(self, state: dict, event, parsed, signed, now: dt.datetime, shared, rrpid: bytes,
                chall: bytes) -> Outcome:
        key = self.transaction_key(event)
        data = decode_native(pu.PResData, signed.content, raw=RAW)
        self._echoed(state, parsed, data, rrpid, chall)
        if data["trans_ids"].hex() != state.get("_trans_ids"):
            raise ProtocolError("TransIDs differ from the ones PInitRes signed", "unknownXID")
        payloads = data["p_res_payload_seq"]
        if len(payloads) != 1:
            raise ProtocolError("PResData must carry exactly one PResPayload")
        fields = {**status_fields(payloads[0], state["amount"]),
                  **self._acq_card(payloads[0], state, now)}
        seen = self._bci(data, signed, now, shared)
        new = STATUS.get(fields["completion"], state["state"])
        timers: list = []
        if event.message_type == "InqRes":
            state, settled = self.inquiry.settle(state)
            timers += settled
            state["inquiry_pending"] = False
            for gone in ("inquiry_error", "_inq_chall"):
                state.pop(gone, None)
        rec = self.purchase.pending(state)
        if rec is not None and (new in ANSWERED or event.message_type == "PRes"):
            state, settled = self.purchase.settle(state)  # the merchant has our PReq
            state["_late"] = {k: v for k, v in rec.items() if k != "der"}
            timers += settled
            if new not in ANSWERED:  # orderReceived: wait for the outcome, not for ever
                timers.append(SetTimer("expire", now + self.config.expire_after,
                                       {"transaction": key}))
        if new in ANSWERED:
            for gone in ("secret", "failure", "error_code", "refused", "_late", "expired"):
                state.pop(gone, None)
            state.setdefault("completed", when(now))
            timers.append(CancelTimer("expire"))
        state.update(fields, state=new)
        state["captured"] = new == "CAPTURED" or bool(fields.get("captured"))
        return Outcome(key, state, timers=tuple(timers), shared=seen, peer=state["merchant"])

    def _acq_card(self, payload, state: dict, now: dt.datetime) -> dict:
        """The gateway's AcqCardMsg, opened with our back key: signer path ``pgwy`` and the very
        gateway PInitRes named by PEThumb (same subject)."""
        results = payload["results"]
        if results is None or results["acq_card_msg"] is None:
            return {}
        back_key = (state.get("secret") or {}).get("back_key")
        if back_key is None:
            return {}  # read when the purchase was answered; a repeat says nothing new
        opened = open_EncK(results["acq_card_msg"], unh(back_key), "AcqCardCodeMsgTBE",
                           "AcqCardCodeMsg", suite=self.config.suite,
                           validate=self._path(now, "pgwy"))
        if subject_hex(opened.signed.signer) != state.get("_gateway"):
            raise ProtocolError("AcqCardMsg signed by another gateway than PInitRes named",
                                "invalidCertificate")
        msg = decode_native(pu.AcqCardCodeMsg, opened.content)
        iso_code, iso_text = iso_response(msg["acq_card_msg_data"]["acq_card_text"])
        return {"acq_card_code": msg["acq_card_code"], "iso_code": iso_code,
                "iso_text": iso_text}

    # -- 4. inquire -> InqReq ---------------------------------------------------------------------
    def on_inquire(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        if not state.get("_trans_ids"):
            raise ProtocolError(f"purchase {key[:16]}… never got a PInitRes: nothing to inquire about")
        card = self._card(state)
        if card is None:
            raise ProtocolError(self._no_card(state))
        rrpid, chall, xid = fresh(), fresh(), unh(key)
        data = inq_req_data(trans_ids_der=unh(state["_trans_ids"]), rrpid=rrpid, chall_c2=chall)
        msg = inq_req(S(card.identity, "InqReqData", data, suite=self.config.suite))
        der = wrap("InqReq", msg, now=now, rrpid=rrpid, lid_c=unh(state["lid_c"]), lid_m=xid, xid=xid)
        state.update(inquiries=state.get("inquiries", 0) + 1, inquiry_pending=True,
                     inquired=when(now), _inq_chall=h(chall))
        state.pop("inquiry_error", None)
        return self.inquiry.ask(state, key, to=state["merchant"], type_name="InqReq", der=der,
                                rrpid=rrpid, expects=("InqRes",),
                                pin_={"thumb": state["_merchant_cert"]}, now=now)

    def on_timer_inquiry(self, state, event, now, shared) -> Outcome:
        """Re-send the same InqReq bytes; give up (the purchase itself unchanged) when spent."""
        key = self.transaction_key(event)
        return self.inquiry.on_timer(state, key, now, lambda why: self._inquiry_failed(
            state, key, why))

    def _inquiry_failed(self, state, key: str, why: str) -> Outcome:
        """The InqReq's re-sends are spent: the inquiry ends, the purchase is unchanged."""
        state, timers = self.inquiry.settle(state)
        state.update(inquiry_pending=False, inquiry_error=why)
        state.pop("_inq_chall", None)
        return Outcome(key, state, timers=timers)

    # -- 5. cancel --------------------------------------------------------------------------------
    def on_cancel(self, state, event, now, shared) -> Outcome:
        """The cardholder gives up before paying (PINIT_SENT): CANCELLED, the PInitReq's
        re-sends and the card data gone.  Once the PReq is out the merchant holds the payment
        instructions: the wallet cannot take them back."""
        key = self.transaction_key(event)
        if state["state"] == "CANCELLED":
            return Outcome(key, dict(state))
        if state["state"] != "PINIT_SENT":
            raise ProtocolError("the PReq (the payment) went to the merchant already: only the "
                                "merchant can stop it now, before it authorises")
        state, _ = self.purchase.settle(dict(state))
        state, _ = self.inquiry.settle(state)
        state.update(state="CANCELLED", cancelled={"at": when(now), "by": "cardholder"},
                     inquiry_pending=False)
        state.pop("secret", None)
        return Outcome(key, state, timers=tuple(CancelTimer(n) for n in (
            "retry", "inquiry", "expire", "abandon")))
