"""What the payment gateway answers a merchant (and, through it, the cardholder): AuthRes,
CapRes, AuthRevRes, CapRevRes/CredRes/CredRevRes and BatchAdminRes, built from the state a
request left (``reply_to``: the directory address, the RRPID and the fields to echo as the
merchant signed them).

Why apart from the checks: an answer is often built in a later step than its request (once the
issuer has answered), from JSON state only; the builders take nothing else.  Every answer is
signed by the gateway and enveloped for the merchant's key-exchange certificate the request
carried (``reply["mer_kex"]``); one sent in a later step carries ``Send.answers`` (the
request's digest) so the agent's dedupe gives it to exact repeats of the request.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.codec.fastder import Raw, encode
from setmail.crypto.operators import Enc, EncB, EncK
from setmail.roles.base import Send
from setmail.roles.certs import load_cert_hex
from setmail.roles.network_msgs import RESPONSE_CODES
from setmail.roles.wire import unh, wrap


def send(reply: Mapping, type_name: str, body: bytes, now: dt.datetime,
         answers: str | None) -> Send:
    """The wrapped answer to the directory address the reply names, repeating the request's
    RRPID and ids."""
    ids = {k: unh(v) for k, v in reply["ids"].items()}
    der_ = wrap(type_name, body, now=now, rrpid=unh(reply["rrpid"]), **ids)
    return Send(reply["to"], type_name, der_, reply["mail"], answers=answers)


_BCI_DER: dict[int, tuple[Any, bytes]] = {}


def bci_field(bci, name: str = "brand_crl_identifier") -> dict:
    """The BrandCRLIdentifier field of an answer: the configured one (an asn1crypto value), if
    any, dumped once: a value whose fields were read re-checks them all at every dump()."""
    if bci is None:
        return {}
    held = _BCI_DER.get(id(bci))
    if held is None or held[0] is not bci:
        if len(_BCI_DER) >= 8:
            _BCI_DER.clear()
        held = _BCI_DER[id(bci)] = (bci, bci.dump())
    return {name: Raw(held[1])}


# --- AuthRes ---------------------------------------------------------------------------------------
def acq_card_msg(cfg, back_key: bytes, iso: str) -> bytes:
    """EncK(back key, P, AcqCardCodeMsg): the issuer's verdict for the cardholder's eyes only."""
    return EncK(back_key, cfg.signature, "AcqCardCodeMsg", acq_card_code_msg(iso),
                "AcqCardCodeMsgTBE", suite=cfg.suite)


def acq_card_code_msg(iso: str) -> bytes:
    """AcqCardCodeMsg: "<ISO code> <meaning>" as accountInfo text (the wallet reads it back)."""
    return encode(pu.AcqCardCodeMsg, {"acq_card_code": "accountInfo", "acq_card_msg_data": {
        "acq_card_text": f"{iso} {RESPONSE_CODES.get(iso, 'unknown response')}"}})


def cap_res_payload(code: str, amount: Mapping, batch: tuple[int, int] | None = None) -> dict:
    """CapResPayload: the capture's code and amount, and (captured) its batch and sequence."""
    out: dict[str, Any] = {"cap_code": code, "cap_amt": dict(amount)}
    if batch is not None:
        out.update(batch_id=batch[0], batch_sequence_num=batch[1])
    return out


def auth_res_payload(*, code: str, amount: Mapping, iso: str | None = None,
                     approval: str | None = None, captured: Mapping | None = None) -> dict:
    """AuthResPayload: AuthHeader and, for a sale (CaptureNow), the capture's CapResPayload."""
    response: dict[str, Any] = {}
    if approval:
        response["auth_val_codes"] = {"approval_code": approval}
    if iso:
        response.update(resp_reason="issuer", log_ref_id=iso.encode())
    out: dict[str, Any] = {"auth_header": {"auth_amt": dict(amount), "auth_code": code,
                                           "response_data": response}}
    if captured is not None:
        out["cap_res_payload"] = dict(captured)
    return out


def auth_res_data(bci, reply: Mapping, *, code: str, amount: Mapping, iso: str | None = None,
                  approval: str | None = None, captured: Mapping | None = None) -> bytes:
    """AuthResData echoing the AuthReq's AuthTags (as received) and naming the merchant's
    certificate; ``iso``/``approval``: the issuer's response code and approval code;
    ``captured``: a sale's CapResPayload."""
    return encode(gw.AuthResData, {
        "auth_tags": Raw(unh(reply["auth_tags"])), **bci_field(bci),
        "auth_res_payload": auth_res_payload(code=code, amount=amount, iso=iso,
                                             approval=approval, captured=captured),
        "mer_thumb": unh(reply["mer_thumb"])})


def auth_res_baggage(token: bytes | None = None, acq: bytes | None = None,
                     auth_token: bytes | None = None) -> bytes:
    """AuthResBaggage: the CapToken, the AcqCardMsg and the AuthToken, as the gateway sealed
    them."""
    baggage = {name: Raw(der) for name, der in (("cap_token", token), ("acq_card_msg", acq),
                                                ("auth_token", auth_token)) if der is not None}
    return encode(gw.AuthResBaggage, baggage)


def auth_res(cfg, reply: Mapping, now: dt.datetime, *, code: str, amount: Mapping,
             iso: str | None = None, approval: str | None = None, token: bytes | None = None,
             acq: bytes | None = None, answers: str | None = None,
             auth_token: bytes | None = None, captured: Mapping | None = None) -> Send:
    """EncB(P, M, AuthResData, AuthResBaggage) echoing the AuthReq's AuthTags; ``answers``: the
    AuthReq's digest when answered in a later step (``Send.answers``)."""
    data = auth_res_data(cfg.bci, reply, code=code, amount=amount, iso=iso, approval=approval,
                         captured=captured)
    body = EncB(cfg.signature, load_cert_hex(reply["mer_kex"]), "AuthResTBS", data,
                "AuthResBaggage", auth_res_baggage(token, acq, auth_token), "AuthResTBE",
                suite=cfg.suite)
    return send(reply, "AuthRes", body, now, answers)


# --- CapRes ----------------------------------------------------------------------------------------
def cap_res_data(bci, reply: Mapping, *, code: str, amount: Mapping,
                 batch: tuple[int, int] | None = None) -> bytes:
    """CapResData with one item for the CapReq's one item (its RRTags and TransIDs as received);
    ``batch``: (batch id, sequence number) of a capture that succeeded."""
    return encode(cap.CapResData, {
        "cap_rr_tags": Raw(unh(reply["cap_rr_tags"])), **bci_field(bci),
        "cap_res_item_seq": [{"trans_ids": Raw(unh(reply["trans_ids"])),
                              "auth_rrpid": unh(reply["auth_rrpid"]),
                              "cap_res_payload": cap_res_payload(code, amount, batch)}]})


def cap_res(cfg, reply: Mapping, now: dt.datetime, *, code: str, amount: Mapping,
            answers: str | None = None, batch: tuple[int, int] | None = None) -> Send:
    """Enc(P, M, CapResData) with one item for the CapReq's one item."""
    body = Enc(cfg.signature, load_cert_hex(reply["mer_kex"]), "CapResData",
               cap_res_data(cfg.bci, reply, code=code, amount=amount, batch=batch), "CapResTBE",
               suite=cfg.suite)
    return send(reply, "CapRes", body, now, answers)


# --- AuthRevRes ------------------------------------------------------------------------------------
def auth_rev_res(cfg, reply: Mapping, now: dt.datetime, *, code: str, new_amount: Mapping,
                 payload_new: Mapping | None = None, cap_token: bytes | None = None,
                 auth_token: bytes | None = None, answers: str | None = None) -> Send:
    """AuthRevRes (D-107): Enc(P, M, AuthRevResData), or, when new tokens go back (a partial
    reversal), EncB(P, M, AuthRevResData, AuthRevResBaggage{capTokenNew, authTokenNew}).  The
    CHOICE tag says which: [0] the Enc form, [1] the EncB form."""
    data = encode(gw.AuthRevResData, {
        "auth_rev_tags": Raw(unh(reply["auth_rev_tags"])), **bci_field(cfg.bci),
        "auth_rev_code": code, "auth_new_amt": dict(new_amount),
        **({"auth_res_payload_new": dict(payload_new)} if payload_new is not None else {})})
    kex = load_cert_hex(reply["mer_kex"])
    if cap_token is None and auth_token is None:
        inner = Enc(cfg.signature, kex, "AuthRevResData", data, "AuthRevResTBE", suite=cfg.suite)
        body = b"\xa0" + inner[1:]  # [0] IMPLICIT ContentInfo
    else:
        baggage = encode(gw.AuthRevResBaggage, {
            name: Raw(der) for name, der in (("cap_token_new", cap_token),
                                             ("auth_token_new", auth_token)) if der is not None})
        inner = EncB(cfg.signature, kex, "AuthRevResTBS", data, "AuthRevResBaggage", baggage,
                     "AuthRevResTBEB", suite=cfg.suite)
        body = b"\xa1" + inner[1:]  # [1] IMPLICIT AuthRevResEncB
    return send(reply, "AuthRevRes", body, now, answers)


# --- CapRevRes, CredRes, CredRevRes ----------------------------------------------------------------
def cap_rev_or_cred_res(cfg, reply: Mapping, now: dt.datetime, *, type_name: str, code: str,
                        amount: Mapping, batch: tuple[int, int] | None = None,
                        answers: str | None = None) -> Send:
    """Enc(P, M, <X>ResData) (the shared CapRevOrCred layout, set-protocol.md §5.7) with one item
    for the request's one item: its code, the amount acted on, and the batch and sequence number
    of the capture or credit it concerns."""
    payload: dict[str, Any] = {"cap_rev_or_cred_code": code, "cap_rev_or_cred_act_amt": dict(amount)}
    if batch is not None:
        payload.update(batch_id=batch[0], batch_sequence_num=batch[1])
    data = encode(cap.CapRevOrCredResData, {
        "cap_rev_or_cred_rr_tags": Raw(unh(reply["rr_tags"])), **bci_field(cfg.bci),
        "cap_rev_or_cred_res_item_seq": [{"trans_ids": Raw(unh(reply["trans_ids"])),
                                          "auth_rrpid": unh(reply["auth_rrpid"]),
                                          "cap_rev_or_cred_res_payload": payload}]})
    body = Enc(cfg.signature, load_cert_hex(reply["mer_kex"]), f"{type_name}Data", data,
               f"{type_name}TBE", suite=cfg.suite)
    return send(reply, type_name, body, now, answers)


# --- BatchAdminRes ---------------------------------------------------------------------------------
def batch_admin_res(cfg, reply: Mapping, now: dt.datetime, *, status: str,
                    batch_id: int | None = None, batch_status: Mapping | None = None,
                    details: list | None = None) -> Send:
    """Enc(P, M, BatchAdminResData): the BAStatus, the batch it concerns, its BatchStatus (with
    totals when asked or closed) and its TransDetailSeq (when asked)."""
    fields: dict[str, Any] = {"batch_admin_rr_tags": Raw(unh(reply["rr_tags"])),
                              "ba_status": status}
    if batch_id is not None:
        fields["batch_id"] = batch_id
    if batch_status is not None:
        fields["batch_status"] = dict(batch_status)
    if details is not None:
        fields["trans_detail_seq"] = [
            {"trans_ids": Raw(unh(d["trans_ids"])), "auth_rrpid": unh(d["auth_rrpid"]),
             "cap_amt": {"currency": d["currency"], "amount": d["amount"],
                         "amt_exp10": d["exp"]}, "batch_sequence_num": d["seq"]}
            for d in details]
    body = Enc(cfg.signature, load_cert_hex(reply["mer_kex"]), "BatchAdminResData",
               encode(cap.BatchAdminResData, {**fields, **bci_field(cfg.bci,
                                                                    "brand_crl_identifier")}),
               "BatchAdminResTBE", suite=cfg.suite)
    return send(reply, "BatchAdminRes", body, now, None)
