"""What the gateway and issuer tests need from the other purchase parties, built by hand with the
operators: a wallet's dual-signed PI and the merchant's AuthReq/CapReq around it (each piece can be
altered to provoke one check), and the gateway/issuer roles on the vectors' cast."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.base import decode
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.crypto import dual
from setmail.crypto.operators import DD, EncB, open_EncB
from setmail.crypto.suite import fresh
from setmail.pki.thumbs import thumbprint
from setmail.roles import purchase_msgs as pm
from setmail.roles.certs import path_check
from setmail.roles.wire import wrap
from setmail.roles.gateway import Gateway, GatewayConfig
from setmail.roles.issuer import Account, Issuer, IssuerConfig
from setmail.vectors.build import EXPIRY, NOW, PAN, Parties

SHOP, GW, BANK = "shop@merchant.example", "gateway@gateway.example", "bank@issuer.example"
OD = "one blue teapot, gift-wrapped: SECRET-ORDER-TEXT"
MER_ID = Parties.MER_ID
EUR = 978
_EMPTY = b"\x30\x00"


def eur(minor: int, currency: int = EUR) -> dict:
    return {"currency": currency, "amount": minor, "amt_exp10": -2}


def gateway(p: Parties, **kw) -> Gateway:
    return Gateway(GatewayConfig(GW, p.gateway_sig, p.gateway_kex, p.tree.trust_store(), BANK,
                                 p.issuer_sig.cert, p.issuer_kex.cert, bci=p.tree.brand.bci, **kw))


def accounts(**changes) -> dict:
    return {PAN: Account(expiry=EXPIRY, limit=500000, currency=EUR, holder="alice", **changes)}


def issuer(p: Parties, accts=None) -> Issuer:
    return Issuer(IssuerConfig(BANK, p.issuer_sig, p.issuer_kex,
                               {GW: (p.gateway_sig.cert, p.gateway_kex.cert)},
                               accounts() if accts is None else accts))


def merchant_certs(p: Parties) -> list:
    return [p.merchant_sig.cert, p.merchant_kex.cert, *p.merchant_sig.chain]


@dataclass
class Purchase:
    """One purchase as wallet and merchant made it; ``auth_req()``/``cap_req()`` give the merchant's
    messages, with keyword overrides to tamper with one field."""

    p: Parties
    amount: int = 1234
    xid: bytes = field(default_factory=lambda: fresh(20))
    lid_c: bytes = field(default_factory=lambda: fresh(16))
    p_req_date: dt.datetime = NOW
    back_key: bytes | None = field(default_factory=fresh)
    pe_thumb: bytes | None = None
    merchant_id: str = MER_ID
    pan: str = PAN
    pi_for: object = None  # the kex certificate the wallet encrypts the PI for (default: ours)

    def __post_init__(self):
        p = self.p
        self.order = pm.Order(OD, self.amount, EUR)
        self.trans_ids = pm.trans_ids(lid_c=self.lid_c, xid=self.xid, lid_m=self.xid,
                                      p_req_date=self.p_req_date)
        self.od_salt = fresh()
        self.hod = pm.hod(self.order, self.od_salt)
        self.oi = pm.oi_data(trans_ids_der=self.trans_ids, rrpid=fresh(), chall_c=fresh(),
                             hod_dd=self.hod, od_salt=self.od_salt, brand_id="Visa",
                             bin_="41111111", chall_m=fresh())
        head = {"trans_ids": gw.TransIDs.load(self.trans_ids),
                "inputs": {"hod": pu.DetachedDigest.load(self.hod),
                           "purch_amt": self.order.purch_amt},
                "merchant_id": self.merchant_id,
                "trans_stain": pm.trans_stain(self.xid, p.pan_secret), "sw_ident": "setmail/0.1",
                "pe_thumb": self.pe_thumb or thumbprint(p.gateway_kex.cert)}
        if self.back_key is not None:
            head["acq_back_key_data"] = {"back_alg_id": {"algorithm": "aes256_wrap"},
                                         "back_key": self.back_key}
        self.head = pu.PIHead(head).dump()
        pan = pm.pan_data(pan=self.pan, expiry=EXPIRY, pan_secret=p.pan_secret, ex_nonce=fresh())
        signed = dual.dual_sign(p.cardholder, self.pi_for or p.gateway_kex.cert, self.head,
                                self.oi, pan, certs=(p.cardholder.cert, *p.cardholder.chain))
        self.pi = b"\xa1" + signed.pi_dual_signed[1:]  # PI [1] pi_dual_signed

    def auth_req(self, *, amount=None, h_oi=None, hod2=None, trans_ids=None, header_xid=None,
                 header_rrpid=None, pi=None, signer=None, certs=None, recipient=None,
                 now=NOW) -> bytes:
        p = self.p
        self.auth_rrpid = rrpid = fresh()
        payload = {"subsequent_auth_ind": False, "auth_req_amt": amount or self.order.purch_amt,
                   "request_card_type_ind": False, "merch_data": gw.MerchData.load(_EMPTY)}
        data = gw.AuthReqData({"auth_req_item": {
            "auth_tags": {"auth_rr_tags": {"rrpid": rrpid, "date": now,
                                           "mer_term_ids": {"merchant_id": MER_ID}},
                          "trans_ids": gw.TransIDs.load(trans_ids or self.trans_ids)},
            "check_digests": {"h_oi_data": pu.DetachedDigest.load(h_oi or DD("OIData", self.oi)),
                              "hod2": pu.DetachedDigest.load(hod2 or self.hod)},
            "auth_req_payload": payload}})
        body = EncB(signer or p.merchant_sig, recipient or p.gateway_kex.cert, "AuthReqTBS",
                    data.dump(), "PI", pi or self.pi, "AuthReqTBE",
                    certs=merchant_certs(p) if certs is None else certs)
        return wrap("AuthReq", body, now=now, rrpid=header_rrpid or rrpid, lid_c=self.lid_c,
                    lid_m=self.xid, xid=header_xid or self.xid)

    def cap_req(self, token: bytes, *, amount=None, auth_rrpid=None, tokens=None,
                now=NOW) -> bytes:
        p, rrpid = self.p, fresh()
        data = cap.CapReqData({
            "cap_rr_tags": {"rrpid": rrpid, "mer_term_ids": {"merchant_id": MER_ID}, "date": now},
            "cap_item_seq": [{"trans_ids": gw.TransIDs.load(self.trans_ids),
                              "auth_rrpid": auth_rrpid or self.auth_rrpid,
                              "cap_payload": {"cap_date": now,
                                              "cap_req_amt": amount or self.order.purch_amt}}]})
        seq = gw.CapTokenSeq([gw.CapToken.load(t) for t in (tokens or [token])]).dump()
        body = EncB(p.merchant_sig, p.gateway_kex.cert, "CapReqTBS", data.dump(), "CapTokenSeq",
                    seq, "CapReqTBE", certs=merchant_certs(p))
        return wrap("CapReq", body, now=now, rrpid=rrpid, lid_c=self.lid_c, lid_m=self.xid,
                    xid=self.xid)


def open_auth_res(p: Parties, der: bytes):
    """The AuthRes as the merchant opens it: (AuthResData, AuthResBaggage)."""
    opened = open_EncB(message_body(decode_wrapper(der)).dump(), p.merchant_kex, "AuthResTBE",
                       "AuthResTBS", "AuthResBaggage",
                       validate=path_check(p.tree.trust_store(), NOW, "pgwy"))
    return (decode(gw.AuthResData, opened.content), decode(gw.AuthResBaggage, opened.baggage))
