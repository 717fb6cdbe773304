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
from setmail.crypto.operators import DD, Enc, EncB, open_Enc, open_EncB
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
    terms: bytes | None = None  # InstallRecurData DER the cardholder agreed (``instalments``...)

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
        if self.terms is not None:
            head["install_recur_data"] = pu.InstallRecurData.load(self.terms)
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
                 now=NOW, terms=None, sale: bool = False, auth_token: bytes | None = None,
                 merchant: Shop | None = None) -> bytes:
        """The merchant's AuthReq; ``auth_token``: a subsequent AuthReq (SubsequentAuthInd, the
        AuthToken as its PI, no CheckDigests); ``terms``: the InstallRecurData it repeats
        (default: the cardholder's); ``sale``: CaptureNow."""
        p, m = self.p, merchant or self.merchant
        self.auth_rrpid = rrpid = fresh()
        payload = {"subsequent_auth_ind": auth_token is not None,
                   "auth_req_amt": amount or self.order.purch_amt,
                   "request_card_type_ind": False, "merch_data": gw.MerchData.load(_EMPTY)}
        terms = self.terms if terms is None else terms
        if terms:
            payload["install_recur_data"] = pu.InstallRecurData.load(terms)
        item = {"auth_tags": {"auth_rr_tags": {"rrpid": rrpid, "date": now,
                                               "mer_term_ids": {"merchant_id": m.mer_id}},
                              "trans_ids": gw.TransIDs.load(trans_ids or self.trans_ids)},
                "auth_req_payload": payload}
        if auth_token is None:
            item["check_digests"] = {
                "h_oi_data": pu.DetachedDigest.load(h_oi or DD("OIData", self.oi)),
                "hod2": pu.DetachedDigest.load(hod2 or self.hod)}
        fields = {"auth_req_item": item}
        if sale:
            fields.update(capture_now=True, sale_detail={"merchant_order_num": "ORDER-1"})
        data = gw.AuthReqData(fields)
        self.auth_req_data = data.dump()
        if auth_token is not None:
            pi = b"\xa2" + auth_token[1:]  # PI [2] authToken
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


    def auth_rev_req(self, token: bytes | None, *, new_amount: int, now=NOW,
                     merchant: Shop | None = None, auth_req_data: bytes | None = None) -> bytes:
        """AuthRevReq = EncB(M, P, AuthRevReqData, AuthRevReqBaggage{capToken}) for the last
        AuthReq built (its AuthReqData as kept), asking for ``new_amount`` (0: void)."""
        p, m, rrpid = self.p, merchant or self.merchant, fresh()
        self.rev_rrpid = rrpid
        data = gw.AuthRevReqData({
            "auth_rev_tags": {"auth_rev_rr_tags": {"rrpid": rrpid, "date": now,
                                                   "mer_term_ids": {"merchant_id": m.mer_id}},
                              "trans_ids": gw.TransIDs.load(self.trans_ids)},
            "auth_req_data": gw.AuthReqData.load(auth_req_data or self.auth_req_data),
            "auth_res_payload": {"auth_header": {"auth_amt": self.order.purch_amt,
                                                 "auth_code": "approved",
                                                 "response_data": gw.ResponseData.load(_EMPTY)}},
            "auth_new_amt": eur(new_amount)})
        bag = (_EMPTY if token is None
               else gw.AuthRevReqBaggage({"cap_token": gw.CapToken.load(token)}).dump())
        body = EncB(m.sig, p.gateway_kex.cert, "AuthRevReqTBS", data.dump(), "AuthRevReqBaggage",
                    bag, "AuthRevReqTBE", certs=m.certs)
        return wrap("AuthRevReq", body, now=now, rrpid=rrpid, lid_c=self.lid_c, lid_m=self.xid,
                    xid=self.xid)

    def adjust_req(self, kind: str, token: bytes | None, *, amount: int | None = None,
                   now=NOW, merchant: Shop | None = None, tokens=None, auth_rrpid=None,
                   items: int = 1) -> bytes:
        """CredReq, CredRevReq or CapRevReq = EncB(M, P, <X>ReqData, CapTokenSeq): one item for
        this purchase (``amount``: cap_rev_or_cred_req_amt, absent when None)."""
        p, m, rrpid = self.p, merchant or self.merchant, fresh()
        self.adjust_rrpid = rrpid
        item = {"trans_ids": gw.TransIDs.load(self.trans_ids),
                "auth_rrpid": auth_rrpid or self.auth_rrpid,
                "cap_payload": {"cap_date": now, "cap_req_amt": self.order.purch_amt},
                "cap_rev_or_cred_req_date": now}
        if amount is not None:
            item["cap_rev_or_cred_req_amt"] = eur(amount)
        data = cap.CapRevOrCredReqData({
            "cap_rev_or_cred_rr_tags": {"rrpid": rrpid, "date": now,
                                        "mer_term_ids": {"merchant_id": m.mer_id}},
            "cap_rev_or_cred_req_item_seq": [item] * items})
        chosen = tokens if tokens is not None else ([] if token is None else [token])
        seq = gw.CapTokenSeq([gw.CapToken.load(t) for t in chosen]).dump()
        body = EncB(m.sig, p.gateway_kex.cert, f"{kind}TBS", data.dump(), "CapTokenSeq", seq,
                    f"{kind}TBE", certs=m.certs)
        return wrap(kind, body, now=now, rrpid=rrpid, lid_c=self.lid_c, lid_m=self.xid,
                    xid=self.xid)


def batch_admin_req(p: Parties, operation: str | None, *, batch_id: int | None = None,
                    summary: bool = False, detail: bool = False, merchant: Shop | None = None,
                    now=NOW) -> bytes:
    """BatchAdminReq = Enc(M, P, BatchAdminReqData) of ``merchant`` (default shop)."""
    m, rrpid = merchant or shop(p), fresh()
    fields = {"batch_admin_rr_tags": {"rrpid": rrpid, "date": now,
                                      "mer_term_ids": {"merchant_id": m.mer_id}},
              "return_batch_summary_ind": summary, "return_trans_detail_ind": detail}
    if operation is not None:
        fields["batch_operation"] = operation
    if batch_id is not None:
        fields["batch_id"] = batch_id
    body = Enc(m.sig, p.gateway_kex.cert, "BatchAdminReqData",
               cap.BatchAdminReqData(fields).dump(), "BatchAdminReqTBE", certs=m.certs)
    return wrap("BatchAdminReq", body, now=now, rrpid=rrpid)


def instalments(count: int) -> bytes:
    return pu.InstallRecurData({"install_recur_ind": pu.InstallRecurInd(
        name="install_total_trans", value=count)}).dump()


def recurring(days: int, until: dt.datetime) -> bytes:
    return pu.InstallRecurData({"install_recur_ind": pu.InstallRecurInd(
        name="recurring", value={"recurring_frequency": days, "recurring_expiry": until})}).dump()


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
class GatewayNet(Net):
    """``Net`` where a step may name another transaction than its event's key (the gateway's
    close of the open batch starts the batch's own transaction), as the agent commits it."""

    def step(self, address: str, event, now):
        role = self.roles[address]
        key = role.transaction_key(event)
        out = super().step(address, event, now)
        if out.transaction and out.transaction != key and out.state is not None:
            self.states[(address, out.transaction)] = self.states.pop((address, key))
            for (a, k, name) in list(self.timers):
                if (a, k) == (address, key):
                    self.timers[(a, out.transaction, name)] = self.timers.pop((a, k, name))
        return out


def network(p: Parties, *, with_issuer: bool = True, **kw) -> Net:
    roles = {GW: gateway(p, **kw)}
    if with_issuer:
        roles[BANK] = issuer(p)
    net = GatewayNet(roles)
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


def kept(state: dict | None) -> dict | None:
    """A gateway state without the signed RRPIDs it remembers (a refused request's RRPID is
    remembered so that its replay stays silent: nothing else may change)."""
    return None if state is None else {k: v for k, v in state.items() if k != "_rrpids"}


def card(net, pan: str = PAN) -> dict:
    """The issuer's running totals of a card that purchases move: held and posted."""
    return {k: net.shared[BANK][pan][k] for k in ("held", "posted")}


# --- the lifecycle's answers, as the merchant opens them ------------------------------------------
def deliver(net, message_type: str, der: bytes, sender: str = SHOP, now=NOW):
    """Deliver any merchant request (``sender``: the mail's From, which proves nothing)."""
    net.delivered[message_type] = der
    return net.run(GW, Inbound(message_type, der, sender, f"<{message_type.lower()}@shop>"), now)


def open_auth_rev_res(p: Parties, send, merchant: Shop | None = None):
    """(AuthRevResData, AuthRevResBaggage or None) of an AuthRevRes: the Enc form ([0]) or the
    EncB form with new tokens ([1])."""
    kex = (merchant or shop(p)).kex
    body = message_body(decode_wrapper(send.wrapper_der)).dump()
    check = path_check(p.tree.trust_store(), NOW, "pgwy")
    if body[0] == 0xA0:
        opened = open_Enc(b"\x30" + body[1:], kex, "AuthRevResTBE", "AuthRevResData",
                          validate=check)
        return decode(gw.AuthRevResData, opened.content), None
    opened = open_EncB(b"\x30" + body[1:], kex, "AuthRevResTBEB", "AuthRevResTBS",
                       "AuthRevResBaggage", validate=check)
    return (decode(gw.AuthRevResData, opened.content),
            decode(gw.AuthRevResBaggage, opened.baggage))


def auth_rev_code(p: Parties, done, merchant: Shop | None = None) -> tuple[str, int, object]:
    """(AuthRevCode, AuthNewAmt, baggage) of the AuthRevRes ``merchant`` got."""
    merchant = merchant or shop(p)
    data, baggage = open_auth_rev_res(p, to_shop(done, "AuthRevRes", merchant.address), merchant)
    return data["auth_rev_code"].native, data["auth_new_amt"]["amount"].native, baggage


def open_adjust_res(p: Parties, send, merchant: Shop | None = None):
    kind = send.message_type
    opened = open_Enc(message_body(decode_wrapper(send.wrapper_der)).dump(),
                      (merchant or shop(p)).kex, f"{kind}TBE", f"{kind}Data",
                      validate=path_check(p.tree.trust_store(), NOW, "pgwy"))
    return decode(cap.CapRevOrCredResData, opened.content)


def adjust_code(p: Parties, done, kind: str, merchant: Shop | None = None) -> tuple:
    """(code, amount, batch id, sequence) of the CredRes/CredRevRes/CapRevRes ``merchant`` got."""
    merchant = merchant or shop(p)
    (item,) = open_adjust_res(p, to_shop(done, kind, merchant.address),
                              merchant)["cap_rev_or_cred_res_item_seq"]
    pay = item["cap_rev_or_cred_res_payload"]
    return (pay["cap_rev_or_cred_code"].native, pay["cap_rev_or_cred_act_amt"]["amount"].native,
            pay["batch_id"].native, pay["batch_sequence_num"].native)


def open_batch_res(p: Parties, done, merchant: Shop | None = None):
    """BatchAdminResData of the BatchAdminRes ``merchant`` got."""
    merchant = merchant or shop(p)
    send = to_shop(done, "BatchAdminRes", merchant.address)
    opened = open_Enc(message_body(decode_wrapper(send.wrapper_der)).dump(), merchant.kex,
                      "BatchAdminResTBE", "BatchAdminResData",
                      validate=path_check(p.tree.trust_store(), NOW, "pgwy"))
    return decode(cap.BatchAdminResData, opened.content)


def cap_batch(p: Parties, done, merchant: Shop | None = None) -> tuple:
    """(code, amount, batch id, sequence) of the CapRes ``merchant`` got."""
    merchant = merchant or shop(p)
    (item,) = open_cap_res(p, to_shop(done, "CapRes", merchant.address),
                           merchant)["cap_res_item_seq"]
    pay = item["cap_res_payload"]
    return (pay["cap_code"].native, pay["cap_amt"]["amount"].native, pay["batch_id"].native,
            pay["batch_sequence_num"].native)


def book(net, merchant_id: str = MER_ID) -> dict:
    """The gateway's book of a merchant's live batches (its shared state)."""
    from setmail.roles.network_msgs import merchant_tag
    return net.shared.get(GW, {}).get("batches", {}).get(merchant_tag(merchant_id).hex(), {})


def batch_state(net, batch_id: int, merchant_id: str = MER_ID) -> dict | None:
    from setmail.roles.gateway_batch import batch_key
    return net.states.get((GW, batch_key(merchant_id, batch_id)))
