"""What the gateway and issuer tests need from the other purchase parties, built by hand with the
operators: a wallet's dual-signed PI and the merchant's AuthReq/CapReq around it (each piece can be
altered to provoke one check), a second certified merchant (shop2, the attacker of issue 12 with a
certificate of its own), and the gateway/issuer roles on the vectors' cast with the world's
directory."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.base import decode
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.crypto import dual
from setmail.crypto.cms import Identity
from setmail.crypto.operators import DD, EncB, open_Enc, open_EncB
from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.pki.setext import MerchantInfo, MerName
from setmail.pki.thumbs import thumbprint
from setmail.roles import purchase_msgs as pm
from setmail.roles.certs import path_check
from setmail.roles.directory import Directory, Party
from setmail.roles.base import Inbound, TimerFired
from setmail.roles.wire import wrap
from setmail.roles.gateway import Gateway, GatewayConfig
from setmail.roles.issuer import Account, Issuer, IssuerConfig
from setmail.vectors.build import EXPIRY, NOW, PAN, Parties
from tests.roles_net import Net

SHOP, GW, BANK = "shop@merchant.example", "gateway@gateway.example", "bank@issuer.example"
SHOP2 = "shop2@merchant2.example"
OD = "one blue teapot, gift-wrapped: SECRET-ORDER-TEXT"
MER_ID, MER_ID2 = Parties.MER_ID, "shop-0002"
EUR = 978
_EMPTY = b"\x30\x00"


def eur(minor: int, currency: int = EUR) -> dict:
    return {"currency": currency, "amount": minor, "amt_exp10": -2}


@dataclass(frozen=True)
class Shop:
    """A certified merchant: its signature and key-exchange identities, merID and address."""

    sig: Identity
    kex: Identity
    mer_id: str
    address: str

    @property
    def certs(self) -> list:
        return [self.sig.cert, self.kex.cert, *self.sig.chain]


def shop(p: Parties) -> Shop:
    return Shop(p.merchant_sig, p.merchant_kex, MER_ID, SHOP)


def shop2(p: Parties) -> Shop:
    """A second merchant certified by the same MCA (made once per Parties)."""
    found = getattr(p, "_shop2", None)
    if found is None:
        ms, mk = DEFAULT_SUITE.generate_key(), DEFAULT_SUITE.generate_key()
        info = MerchantInfo(MER_ID2, "41111111", (MerName("en", "Second Shop", "Shelbyville",
                                                          "US"),), 840)
        sig, kex = p.tree.issue_merchant(ms.public_key(), mk.public_key(), info, NOW)
        chain = tuple(p.tree.mca.chain[:-1])
        found = p._shop2 = Shop(Identity(ms, sig, chain), Identity(mk, kex, chain), MER_ID2, SHOP2)
    return found


def directory(p: Parties) -> Directory:
    """The world's directory as the gateway sees it: both shops by merID, gateway, issuer."""
    return Directory([Party("shop", "merchant", SHOP, MER_ID), Party("shop2", "merchant", SHOP2,
                                                                      MER_ID2),
                      Party("gateway", "gateway", GW), Party("bank", "issuer", BANK)])


def gateway(p: Parties, **kw) -> Gateway:
    kw.setdefault("directory", directory(p))
    return Gateway(GatewayConfig(GW, p.gateway_sig, p.gateway_kex, p.tree.trust_store(), BANK,
                                 p.issuer_sig.cert, p.issuer_kex.cert, bci=p.tree.brand.bci, **kw))


def accounts(**changes) -> dict:
    return {PAN: Account(expiry=EXPIRY, limit=500000, currency=EUR, holder="alice", **changes)}


def issuer(p: Parties, accts=None) -> Issuer:
    return Issuer(IssuerConfig(BANK, p.issuer_sig, p.issuer_kex,
                               {GW: (p.gateway_sig.cert, p.gateway_kex.cert)},
                               accounts() if accts is None else accts))


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
    merchant_id: str | None = None  # the merID the PI names (default: the merchant's)
    pan: str = PAN
    pi_for: object = None  # the kex certificate the wallet encrypts the PI for (default: ours)
    merchant: Shop | None = None  # who sends the AuthReq/CapReq (default: shop)

    def __post_init__(self):
        p = self.p
        self.merchant = self.merchant or shop(p)
        self.merchant_id = self.merchant_id or self.merchant.mer_id
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
        p, m = self.p, self.merchant
        self.auth_rrpid = rrpid = fresh()
        payload = {"subsequent_auth_ind": False, "auth_req_amt": amount or self.order.purch_amt,
                   "request_card_type_ind": False, "merch_data": gw.MerchData.load(_EMPTY)}
        data = gw.AuthReqData({"auth_req_item": {
            "auth_tags": {"auth_rr_tags": {"rrpid": rrpid, "date": now,
                                           "mer_term_ids": {"merchant_id": m.mer_id}},
                          "trans_ids": gw.TransIDs.load(trans_ids or self.trans_ids)},
            "check_digests": {"h_oi_data": pu.DetachedDigest.load(h_oi or DD("OIData", self.oi)),
                              "hod2": pu.DetachedDigest.load(hod2 or self.hod)},
            "auth_req_payload": payload}})
        body = EncB(signer or m.sig, recipient or p.gateway_kex.cert, "AuthReqTBS",
                    data.dump(), "PI", pi or self.pi, "AuthReqTBE",
                    certs=m.certs if certs is None else certs)
        return wrap("AuthReq", body, now=now, rrpid=header_rrpid or rrpid, lid_c=self.lid_c,
                    lid_m=self.xid, xid=header_xid or self.xid)

    def cap_req(self, token: bytes, *, amount=None, auth_rrpid=None, tokens=None, now=NOW,
                merchant: Shop | None = None) -> bytes:
        p, rrpid, m = self.p, fresh(), merchant or self.merchant
        self.cap_rrpid = rrpid
        data = cap.CapReqData({
            "cap_rr_tags": {"rrpid": rrpid, "mer_term_ids": {"merchant_id": m.mer_id},
                            "date": now},
            "cap_item_seq": [{"trans_ids": gw.TransIDs.load(self.trans_ids),
                              "auth_rrpid": auth_rrpid or self.auth_rrpid,
                              "cap_payload": {"cap_date": now,
                                              "cap_req_amt": amount or self.order.purch_amt}}]})
        seq = gw.CapTokenSeq([gw.CapToken.load(t) for t in (tokens or [token])]).dump()
        body = EncB(m.sig, p.gateway_kex.cert, "CapReqTBS", data.dump(), "CapTokenSeq",
                    seq, "CapReqTBE", certs=m.certs)
        return wrap("CapReq", body, now=now, rrpid=rrpid, lid_c=self.lid_c, lid_m=self.xid,
                    xid=self.xid)


def open_auth_res(p: Parties, der: bytes, merchant: Shop | None = None):
    """The AuthRes as the merchant opens it: (AuthResData, AuthResBaggage)."""
    kex = (merchant or shop(p)).kex
    opened = open_EncB(message_body(decode_wrapper(der)).dump(), kex, "AuthResTBE",
                       "AuthResTBS", "AuthResBaggage",
                       validate=path_check(p.tree.trust_store(), NOW, "pgwy"))
    return (decode(gw.AuthResData, opened.content), decode(gw.AuthResBaggage, opened.baggage))


def keyed(net, address: str, pur: Purchase) -> dict | None:
    """The state ``address`` keeps for ``pur``: the gateway's under (merchant, XID), the issuer's
    under (gateway, merchant, XID), anybody else's under the XID."""
    from setmail.roles.gateway import purchase_key
    if address == GW:
        return net.states.get((GW, purchase_key(pur.xid, pur.merchant.mer_id)))
    if address == BANK:
        found = [s for (a, k), s in net.states.items()
                 if a == BANK and k.startswith(pur.xid.hex() + ".")
                 and s.get("merchant_id") == pur.merchant.mer_id]
        assert len(found) <= 1, found
        return found[0] if found else None
    return net.states.get((address, pur.xid.hex()))


def error_of(p: Parties, send, signer=None) -> tuple[str, bytes | None]:
    """(code, refusedHash) of a SET Error ``send``, whose signature must verify and be by
    ``signer``'s certificate (default: the gateway's)."""
    from setmail.roles.refusal import read_error
    from setmail.roles.wire import unwrap
    from setmail.roles.base import Inbound
    assert send.message_type == "Error"
    err = read_error(unwrap(Inbound("Error", send.wrapper_der, "x"), NOW))
    assert err.signer is not None, "unsigned Error"
    assert err.signer == (signer or p.gateway_sig).cert
    return err.code, err.refused_hash


# --- driving the gateway (with the issuer behind it) ----------------------------------------------
def network(p: Parties, *, with_issuer: bool = True, **kw) -> Net:
    roles = {GW: gateway(p, **kw)}
    if with_issuer:
        roles[BANK] = issuer(p)
    net = Net(roles)
    net.delivered = {}  # message type -> the last DER ``auth``/``capture`` delivered
    return net


def to_shop(done, message_type: str, address: str = SHOP):
    """The one ``message_type`` the steps in ``done`` sent to ``address``."""
    (send,) = [s for _, out in done for s in out.sends if s.to == address]
    assert send.message_type == message_type, send.message_type
    return send


def auth(net, der: bytes, sender: str = SHOP, now=NOW):
    """Deliver an AuthReq (``sender``: the mail's From, which proves nothing)."""
    net.delivered["AuthReq"] = der
    return net.run(GW, Inbound("AuthReq", der, sender, "<authreq@shop>"), now)


def capture(net, der: bytes, sender: str = SHOP, now=NOW):
    net.delivered["CapReq"] = der
    return net.run(GW, Inbound("CapReq", der, sender, "<capreq@shop>"), now)


def auth_res(p: Parties, done, merchant: Shop | None = None):
    """(AuthCode, AuthResData, AuthResBaggage) of the AuthRes ``merchant`` (default shop) got."""
    merchant = merchant or shop(p)
    data, baggage = open_auth_res(p, to_shop(done, "AuthRes", merchant.address).wrapper_der,
                                  merchant)
    return data["auth_res_payload"]["auth_header"]["auth_code"].native, data, baggage


def open_cap_res(p: Parties, send, merchant: Shop | None = None):
    opened = open_Enc(message_body(decode_wrapper(send.wrapper_der)).dump(),
                      (merchant or shop(p)).kex, "CapResTBE", "CapResData",
                      validate=path_check(p.tree.trust_store(), NOW, "pgwy"))
    return decode(cap.CapResData, opened.content)


def cap_code(p: Parties, done, merchant: Shop | None = None) -> tuple[str, int]:
    merchant = merchant or shop(p)
    send = to_shop(done, "CapRes", merchant.address)
    item = open_cap_res(p, send, merchant)["cap_res_item_seq"][0]["cap_res_payload"]
    return item["cap_code"].native, item["cap_amt"]["amount"].native


def gw_state(net, pur: Purchase) -> dict | None:
    return keyed(net, GW, pur)


def approved(p: Parties, net=None, pur: Purchase | None = None):
    """An authorised purchase: (net, purchase, its CapToken as the merchant keeps it)."""
    net = net or network(p)
    pur = pur or Purchase(p)
    code, _, baggage = auth_res(p, auth(net, pur.auth_req()), pur.merchant)
    assert code == "approved"
    return net, pur, baggage["cap_token"].untag().dump()


def fire(net, name: str, address: str = GW, key: str | None = None):
    """Fire ``address``'s timer ``name`` (of transaction ``key``, if several) at its due time."""
    ((at, timer),) = [(k, t) for k, t in net.timers.items()
                      if k[0] == address and k[2] == name and key in (None, k[1])]
    del net.timers[at]  # a fired timer is gone unless the step sets it again (as the agent does)
    return net.run(address, TimerFired(name, timer.payload), timer.due)


def fire_retry(net):
    return fire(net, "retry")
