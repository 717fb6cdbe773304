"""Forged SET messages: Errors and the purchase's messages as any party (plain values in,
wrapper DER out, following docs/purchase.md).  Each builder takes the genuine messages it needs,
what the attacker saw on the wire, as DER.  ``Messages`` is mixed into ``forge.Forge``, which
gives it ``world``, ``suite``, ``current_bci()`` and the attacker's ``evilcard``."""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING

from cryptography import x509

from setmail.asn1 import capture as cap
from setmail.asn1 import gateway as gw
from setmail.asn1 import purchase as pu
from setmail.asn1.base import MessageHeader, TransIDs
from setmail.asn1.error import Error, ErrorTBS
from setmail.asn1.codec.fastder import Raw, encode
from setmail.asn1.codec.strict import decode_native
from setmail.asn1.wrapper import header_der
from setmail.crypto import der as cder
from setmail.crypto.cms import Identity
from setmail.crypto.dual import dual_sign
from setmail.crypto.operators import DD, Enc, EncB, EncK, S, verify_S
from setmail.crypto.suite import fresh
from setmail.pki.setext import read_merchant_data
from setmail.pki.thumbs import thumbprint
from setmail.roles import purchase_msgs as pm
from tests.adversary.wire import preq_parts, rewrap, split, utcnow, wrap

if TYPE_CHECKING:
    from tests.adversary.forge import Card, Party


class Messages:
    # -- Errors -----------------------------------------------------------------------------------
    def error(self, code: str = "unspecifiedFailure", *, about: bytes | None = None,
              rrpid: bytes | None = None, ids: dict | None = None, signer: Identity | None = None,
              refused_hash: bytes | None = None, bad_wrapper: bytes | None = None,
              now: dt.datetime | None = None) -> bytes:
        """A SET Error: naming ``about`` (a genuine wrapper: its clear header and, unless given,
        its SHA-256 as refusedHash), or any ``rrpid``/``ids``, or an empty/partial BadWrapper;
        unsigned unless ``signer``."""
        now = now or utcnow()
        if about is not None:
            p = split(about)
            rrpid, ids = p.rrpid, p.ids
            refused_hash = hashlib.sha256(about).digest() if refused_hash is None else refused_hash
        ids = {k: v for k, v in (ids or {}).items() if v is not None}
        if bad_wrapper is not None:
            msg = {"bad_wrapper": bad_wrapper}
        else:
            msg = {"message_header": MessageHeader.load(header_der(
                date=now, sw_ident="setmail/0.1", rrpid=rrpid, **ids))}
        fields = {"error_code": code, "error_nonce": fresh(), "error_msg": msg}
        if refused_hash is not None:
            fields["refused_hash"] = refused_hash
        tbs = ErrorTBS(fields)
        if signer is None:
            error = Error(name="unsigned_error", value=tbs)
        else:
            from asn1crypto import cms
            error = Error(name="signed_error", value=cms.ContentInfo.load(
                S(signer, "ErrorTBS", tbs.dump(), suite=self.suite)))
        return wrap("Error", error.dump(), now=now, rrpid=rrpid, **ids)

    # -- purchase messages ------------------------------------------------------------------------
    def pinit_req(self, *, xid: bytes | None = None, card: Card | None = None,
                  now: dt.datetime | None = None) -> bytes:
        """A PInitReq of the attacker's own (a fresh XID unless ``xid``)."""
        xid, lid_c, rrpid = xid or fresh(20), fresh(16), fresh()
        card = card or self.evilcard
        body = pm.pinit_req(rrpid=rrpid, language="en", lid_c=lid_c, xid=xid, chall_c=fresh(),
                            brand_id=self.world.brand, bin_=card.pan[:6])
        return wrap("PInitReq", body, now=now, rrpid=rrpid, lid_c=lid_c, lid_m=xid)

    def purchase(self, merchant: Party, gateway: Party, *, card: Card | None = None,
                 order: pm.Order | None = None, signer: Party | None = None) -> bytes:
        """A whole purchase of the attacker's own, as far as the AuthReq ``merchant`` sends to
        ``gateway`` (signed by ``signer``, default the merchant itself): fresh XID, the attacker's
        card unless ``card``."""
        card, order = card or self.evilcard, order or pm.Order("the attacker's order", 700, 978)
        req = self.pinit_req(card=card)
        res = self.pinit_res(req, merchant=merchant, gateway=gateway)
        preq = self.preq(card, pinit_req=req, pinit_res=res, order=order)
        return self.auth_req(signer or merchant, preq=preq, amount=order.purch_amt,
                             gateway_kex=gateway.kex.cert)

    def pinit_res(self, pinit_req: bytes, *, merchant: Party, gateway: Party,
                  bci: bytes | None | str = "current", extra_certs=(),
                  now: dt.datetime | None = None) -> bytes:
        """PInitRes answering a genuine PInitReq, signed by ``merchant``, naming ``gateway``'s
        key-exchange certificate as PEThumb."""
        now = now or utcnow()
        req = decode_native(pu.PInitReq, split(pinit_req).body)
        xid, lid_c = req["local_id_m"], req["local_id_c"]
        tids = pm.trans_ids(lid_c=lid_c, lid_m=xid, xid=xid, p_req_date=now,
                            language=req["language"])
        bci = self.current_bci() if bci == "current" else bci
        data = encode(pu.PInitResData, {
            "trans_ids": Raw(tids), "rrpid": req["rrpid"], "chall_c": req["chall_c"],
            "chall_m": fresh(), "pe_thumb": thumbprint(gateway.kex.cert),
            **({} if bci is None else {"brand_crl_identifier": Raw(bci)})})
        certs = [*merchant.certs, gateway.kex.cert, *gateway.kex.chain, *extra_certs]
        body = S(merchant.sig, "PInitResData", data, certs=certs, suite=self.suite)
        return wrap("PInitRes", body, now=now, like=pinit_req, rrpid=req["rrpid"], lid_c=lid_c,
                    lid_m=xid, xid=xid)

    def preq(self, card: Card, *, pinit_req: bytes, pinit_res: bytes, order: pm.Order,
             merchant_id: str | None = None, now: dt.datetime | None = None) -> bytes:
        """A dual-signed PReq by ``card`` for the purchase PInitReq/PInitRes opened (the attacker
        holds that cardholder's key, PAN and PANSecret)."""
        now = now or utcnow()
        req = decode_native(pu.PInitReq, split(pinit_req).body)
        signed = verify_S(split(pinit_res).body, "PInitResData", suite=self.suite)
        res = decode_native(pu.PInitResData, signed.content, raw=("trans_ids",))
        tids = bytes(res["trans_ids"])
        gateway = next(c for c in signed.certificates if thumbprint(c) == res["pe_thumb"])
        mer_id = merchant_id or read_merchant_data(signed.signer).mer_id
        rrpid, salt, xid = fresh(), fresh(), req["local_id_m"]
        hod = pm.hod(order, salt, self.suite)
        oi = pm.oi_data(trans_ids_der=tids, rrpid=rrpid, chall_c=req["chall_c"], hod_dd=hod,
                        od_salt=salt, brand_id=req["brand_id"], bin_=card.pan[:6],
                        chall_m=res["chall_m"])
        head = pm.pi_head(trans_ids_der=tids, hod_dd=hod, order=order, merchant_id=mer_id,
                          trans_stain_=pm.trans_stain(xid, card.pan_secret, self.suite),
                          sw_ident="setmail/0.1", pe_thumb=res["pe_thumb"], acq_back_key=fresh(32))
        pan = pm.pan_data(pan=card.pan, expiry=card.expiry, pan_secret=card.pan_secret,
                          ex_nonce=fresh())
        dual = dual_sign(card.identity, gateway, head, oi, pan, suite=self.suite)
        return wrap("PReq", pm.p_req(dual.p_req_dual_signed), now=now, like=pinit_req,
                    rrpid=rrpid, lid_c=req["local_id_c"], lid_m=xid, xid=xid)

    def auth_req(self, merchant: Party, *, preq: bytes, amount: dict, gateway_kex: x509.Certificate,
                 now: dt.datetime | None = None) -> bytes:
        """An AuthReq by ``merchant`` carrying the PI of ``preq`` (any purchase's PReq seen on
        the wire), its OIData digests and the XID its TransIDs name."""
        now = now or utcnow()
        pi, oi, values = preq_parts(preq)
        tids = bytes(values["trans_ids"])
        xid = values["trans_ids"].native["xid"]
        rrpid = fresh()
        data = encode(gw.AuthReqData, {"auth_req_item": {
            "auth_tags": {"auth_rr_tags": _rr_tags(rrpid, merchant.mer_id, now),
                          "trans_ids": Raw(tids)},
            "check_digests": {"h_oi_data": Raw(DD("OIData", oi, self.suite)),
                              "hod2": Raw(bytes(values["hod"]))},
            "auth_req_payload": {"subsequent_auth_ind": False, "auth_req_amt": amount,
                                 "request_card_type_ind": False, "merch_data": {}}}})
        pi_field = cder.implicit_constructed(1, cder.content_of(pi))
        body = EncB(merchant.sig, gateway_kex, "AuthReqTBS", data, "PI", pi_field, "AuthReqTBE",
                    certs=merchant.certs, suite=self.suite)
        lid_c = values["trans_ids"].native["lid_c"]
        return wrap("AuthReq", body, now=now, like=preq, rrpid=rrpid, lid_c=lid_c, lid_m=xid,
                    xid=xid)

    def auth_res(self, gateway: Party, *, auth_req: bytes, trans_ids: bytes, merchant: Party,
                 amount: dict, code: str = "approved", iso: str = "00",
                 bci: bytes | None | str = "current", now: dt.datetime | None = None) -> bytes:
        """An AuthRes by ``gateway`` answering an AuthReq seen on the wire (its clear header) for
        the purchase with TransIDs ``trans_ids`` (DER, clear in PInitRes/OIData), approved with a
        CapToken of its own."""
        now = now or utcnow()
        p = split(auth_req)
        xid = p.xid
        tags = {"auth_rr_tags": _rr_tags(p.rrpid, merchant.mer_id, now),
                "trans_ids": Raw(trans_ids)}
        response = {"resp_reason": "issuer", "log_ref_id": iso.encode()}
        if code == "approved":
            response["auth_val_codes"] = {"approval_code": "EVIL01"}
        bci = self.current_bci() if bci == "current" else bci
        data = encode(gw.AuthResData, {
            "auth_tags": tags, **({} if bci is None else {"brand_crl_identifier": Raw(bci)}),
            "auth_res_payload": {"auth_header": {"auth_amt": amount, "auth_code": code,
                                                 "response_data": response}},
            "mer_thumb": thumbprint(merchant.sig.cert)})
        token = Enc(gateway.sig, gateway.kex.cert, "CapTokenData", encode(gw.CapTokenData, {
            "auth_rrpid": p.rrpid, "auth_amt": amount, "token_opaque": xid}), "CapTokenTBE",
            certs=(), suite=self.suite)
        baggage = encode(gw.AuthResBaggage, {"cap_token": Raw(token)})
        body = EncB(gateway.sig, merchant.kex.cert, "AuthResTBS", data, "AuthResBaggage", baggage,
                    "AuthResTBE", certs=[gateway.sig.cert, *gateway.sig.chain], suite=self.suite)
        return wrap("AuthRes", body, now=now, like=auth_req, rrpid=p.rrpid, **p.ids)

    def cap_res(self, gateway: Party, *, cap_req: bytes, auth_rrpid: bytes, trans_ids: bytes,
                merchant: Party, amount: dict, code: str = "success",
                now: dt.datetime | None = None) -> bytes:
        """A CapRes by ``gateway`` answering a CapReq seen on the wire (its clear header) for
        the authorisation ``auth_rrpid`` (the AuthReq's clear RRPID) of the purchase with TransIDs
        ``trans_ids``."""
        now, p = now or utcnow(), split(cap_req)
        data = encode(cap.CapResData, {
            "cap_rr_tags": _rr_tags(p.rrpid, merchant.mer_id, now),
            "brand_crl_identifier": Raw(self.current_bci()),
            "cap_res_item_seq": [{"trans_ids": Raw(trans_ids), "auth_rrpid": auth_rrpid,
                                  "cap_res_payload": {"cap_code": code, "cap_amt": amount}}]})
        body = Enc(gateway.sig, merchant.kex.cert, "CapResData", data, "CapResTBE",
                   certs=[gateway.sig.cert, *gateway.sig.chain], suite=self.suite)
        return wrap("CapRes", body, now=now, like=cap_req, rrpid=p.rrpid, **p.ids)

    def cap_req(self, merchant: Party, *, cap_token: bytes, trans_ids: bytes, auth_rrpid: bytes,
                amount: dict, gateway_kex: x509.Certificate, like: bytes,
                now: dt.datetime | None = None) -> bytes:
        """A CapReq by ``merchant`` presenting ``cap_token`` (another merchant's)."""
        now, rrpid = now or utcnow(), fresh()
        tids = decode_native(TransIDs, trans_ids)
        data = encode(cap.CapReqData, {
            "cap_rr_tags": _rr_tags(rrpid, merchant.mer_id, now),
            "cap_item_seq": [{"trans_ids": Raw(trans_ids), "auth_rrpid": auth_rrpid,
                              "cap_payload": {"cap_date": now, "cap_req_amt": amount}}]})
        body = EncB(merchant.sig, gateway_kex, "CapReqTBS", data, "CapTokenSeq",
                    encode(gw.CapTokenSeq, [Raw(cap_token)]), "CapReqTBE", certs=merchant.certs,
                    suite=self.suite)
        return wrap("CapReq", body, now=now, like=like, rrpid=rrpid, lid_c=tids["lid_c"],
                    lid_m=tids["xid"], xid=tids["xid"])

    def acq_card_msg(self, gateway: Party, back_key: bytes,
                     text: str = "05 do not honour") -> bytes:
        """AcqCardMsg by ``gateway`` under the cardholder's back key."""
        msg = encode(pu.AcqCardCodeMsg, {"acq_card_code": "accountInfo",
                                         "acq_card_msg_data": {"acq_card_text": text}})
        return EncK(back_key, gateway.sig, "AcqCardCodeMsg", msg, "AcqCardCodeMsgTBE",
                    suite=self.suite)

    def unsigned_inq_req(self, *, trans_ids: bytes, like: bytes,
                         now: dt.datetime | None = None) -> bytes:
        """InqReq [1] unsigned InqReqData for a purchase whose TransIDs were seen (downgrade)."""
        tids, rrpid = decode_native(TransIDs, trans_ids), fresh()
        data = pm.inq_req_data(trans_ids_der=trans_ids, rrpid=rrpid, chall_c2=fresh())
        body = encode(pu.InqReq, ("inq_req_unsigned", Raw(data)))
        return wrap("InqReq", body, now=now, like=like, rrpid=rrpid, lid_c=tids["lid_c"],
                    lid_m=tids["xid"], xid=tids["xid"])

    def signed_inq_req(self, card: Card, *, trans_ids: bytes, like: bytes,
                       now: dt.datetime | None = None) -> bytes:
        """InqReq signed by another cardholder's certificate."""
        tids, rrpid = decode_native(TransIDs, trans_ids), fresh()
        data = pm.inq_req_data(trans_ids_der=trans_ids, rrpid=rrpid, chall_c2=fresh())
        body = pm.inq_req(S(card.identity, "InqReqData", data, suite=self.suite))
        return wrap("InqReq", body, now=now, like=like, rrpid=rrpid, lid_c=tids["lid_c"],
                    lid_m=tids["xid"], xid=tids["xid"])

    def unsigned_preq(self, preq: bytes, *, gateway_kex: x509.Certificate,
                      card: Card | None = None) -> bytes:
        """The downgrade: PReq [1] PReqUnsigned for the purchase ``preq`` opened, with the same
        OIData and a PI without any cardholder signature (PANToken of ``card``)."""
        from setmail.crypto.dual import unsigned_purchase
        card = card or self.evilcard
        _, oi, values = preq_parts(preq)
        tids = bytes(values["trans_ids"])
        order = pm.Order("whatever", 100, 840)
        head = pm.pi_head(trans_ids_der=tids, hod_dd=bytes(values["hod"]), order=order,
                          merchant_id="SHOP-0001", trans_stain_=b"\x00" * 32,
                          sw_ident="setmail/0.1", pe_thumb=thumbprint(gateway_kex))
        token = encode(pu.PANToken, {"pan": card.pan, "card_expiry": card.expiry,
                                     "ex_nonce": fresh()})
        pair = unsigned_purchase(gateway_kex, head, oi, token, suite=self.suite)
        body = cder.implicit_constructed(1, pair.pi_dual_signed + pair.oi_dual_signed)
        return rewrap(preq, body=body)


def _rr_tags(rrpid: bytes, mer_id: str, now: dt.datetime) -> dict:
    return {"rrpid": rrpid, "mer_term_ids": {"merchant_id": mer_id}, "date": now}
