"""PCertReq/PCertRes between in-memory roles: the merchant learns its gateway's key-exchange
certificate by mail, from that gateway only; and how ``Dispatch`` composes the certificate
sub-roles around a party's role (Errors by their message ids, shared state nested)."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.pki import create_hierarchy
from setmail.pki.setext import MerchantInfo, MerName
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import START, Command, Inbound, Outcome, Role, SetTimer, TimerFired
from setmail.roles.ca_renewal import gateway_subject
from setmail.roles.certs import cert_pem
from setmail.roles.dispatch import Dispatch
from setmail.roles.ee_reg import EERegConfig, EERegistration
from setmail.roles.pcert import (KEY, MARK, PCertClient, PCertClientConfig, PCertServer,
                                 PCertServerConfig, with_current)
from setmail.roles.refusal import error_wrapper
from setmail.roles.wire import wrap
from tests.roles_net import Net

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
SHOP, GW, GW2 = "shop@merchant.example", "gateway@gateway.example", "gw2@gateway2.example"


@dataclasses.dataclass
class Parties:
    hier: object
    shop: Identity
    gateway: Identity
    gateway_kex: object
    gateway2: Identity
    gateway2_kex: object
    stranger: Identity


def _chain(ca) -> tuple:
    return tuple(c for c in ca.chain if c.subject != c.issuer)


@pytest.fixture(scope="module")
def p() -> Parties:
    hier = create_hierarchy(DEFAULT_SUITE, NOW - dt.timedelta(days=1))
    keys = [DEFAULT_SUITE.generate_key() for _ in range(8)]

    def merchant(i, mer_id):
        info = MerchantInfo(mer_id, "41111111", (MerName("en", mer_id, "Paris", "FR"),), 250)
        sig, _ = hier.mca.issue_merchant(keys[i].public_key(), keys[i + 1].public_key(), info,
                                         NOW - dt.timedelta(hours=1))
        return Identity(keys[i], sig, _chain(hier.mca))

    def gateway(i, name):
        sig, kex = hier.pca.issue_gateway(keys[i].public_key(), keys[i + 1].public_key(),
                                          NOW - dt.timedelta(hours=1), name=name)
        return Identity(keys[i], sig, _chain(hier.pca)), kex

    gw, gw_kex = gateway(2, "gateway")
    gw2, gw2_kex = gateway(4, "gateway2")
    return Parties(hier, merchant(0, "MER-0001"), gw, gw_kex, gw2, gw2_kex,
                   merchant(6, "MER-9999"))


def client(p, **kw) -> PCertClient:
    return PCertClient(PCertClientConfig(
        name=SHOP, sig=p.shop, mer_id="MER-0001", gateway=GW, peer="gateway",
        gateway_subject=gateway_subject("Visa", "gateway").public_bytes(),
        trust=p.hier.trust_store(), brand="Visa", crls=tuple(p.hier.crls()), **kw))


def server(p, identity=None, kex=None, **kw) -> PCertServer:
    return PCertServer(PCertServerConfig(
        name=GW, sig=identity or p.gateway, kex=kex or p.gateway_kex, trust=p.hier.trust_store(),
        brand="Visa", merchants={"MER-0001": SHOP}.get, bci=p.hier.brand.bci,
        crls=tuple(p.hier.crls()), **kw))


def net(p, **kw) -> Net:
    return Net({SHOP: client(p, **kw), GW: server(p)})


def test_the_merchant_learns_its_gateways_certificates_by_mail(p):
    n = net(p)
    n.run(SHOP, Command("pcert"), NOW)
    state = n.state(SHOP)
    assert state["state"] == "HAVE" and state["kex_thumb"] == thumbprint(p.gateway_kex).hex()
    got = n.effect(SHOP, "pcert.gateway").data
    assert got["kex_pem"] == cert_pem(p.gateway_kex) and got["peer"] == "gateway"
    assert got["sig_pem"] == cert_pem(p.gateway.cert) and got["chain_pem"]
    assert n.effect(SHOP, "role.reload")  # the merchant's role is built on it
    assert n.log == [(SHOP, GW, "PCertReq"), (GW, SHOP, "PCertRes")]
    assert not [k for k in n.states if k[0] == GW]  # the gateway keeps nothing
    refresh = n.timers[(SHOP, KEY, "refresh")]
    assert NOW < refresh.due <= NOW + dt.timedelta(days=1)
    assert n.shared[SHOP] == {"Visa": p.hier.brand.bci["tbs"]["sequence_num"].native}


def test_the_same_certificate_again_rebuilds_nothing_and_the_refresh_asks_again(p):
    n = Net({SHOP: PCertClient(with_current(client(p).config, p.gateway_kex)), GW: server(p)})
    n.run(SHOP, Command("pcert"), NOW)
    assert not [e for _, e in n.effects if e.kind == "role.reload"]
    later = NOW + dt.timedelta(days=1)
    n.run(SHOP, TimerFired("refresh", {"transaction": KEY}), later)
    assert n.state(SHOP)["fetched"].startswith(later.date().isoformat())
    assert [t for _, _, t in n.log].count("PCertRes") == 2


def _answer_from(p, answering: PCertServer, request) -> object:
    """``answering``'s PCertRes to the client's request bytes."""
    out = answering.step(None, Inbound("PCertReq", request.wrapper_der, SHOP), NOW)
    return out.sends[0]


def test_only_the_configured_gateway_is_believed(p):
    shop = client(p)
    asked = shop.step(None, Command("pcert"), NOW)
    other = _answer_from(p, server(p, p.gateway2, p.gateway2_kex), asked.sends[0])
    out = shop.step(asked.state, Inbound("PCertRes", other.wrapper_der, GW), NOW)
    assert out.refused and "another party" in out.refused and out.effects == ()
    assert out.state["state"] == "SENT" and out.sends == ()  # a response is never answered
    genuine = _answer_from(p, server(p), asked.sends[0])
    done = shop.step(out.state, Inbound("PCertRes", genuine.wrapper_der, GW2), NOW)
    assert done.state["state"] == "HAVE" and done.peer == GW  # whatever the From said


def test_the_gateway_answers_only_the_worlds_merchants_at_their_address(p):
    stranger = PCertClient(dataclasses.replace(client(p).config, sig=p.stranger,
                                               mer_id="MER-9999"))
    asked = stranger.step(None, Command("pcert"), NOW)
    out = server(p).step(None, Inbound("PCertReq", asked.sends[0].wrapper_der, SHOP), NOW)
    assert out.refused and "no merchant of this world" in out.refused and out.sends == ()
    # a merchant asking in another's merchantID gets a signed Error, at its own address
    liar = PCertClient(dataclasses.replace(client(p).config, mer_id="MER-0002"))
    asked = liar.step(None, Command("pcert"), NOW)
    out = server(p).step(None, Inbound("PCertReq", asked.sends[0].wrapper_der, GW2), NOW)
    assert out.refused and [(s.to, s.message_type) for s in out.sends] == [(SHOP, "Error")]


def test_an_unknown_bin_fails_the_fetch_and_it_is_tried_again_later(p):
    n = Net({SHOP: client(p, bin="49999999"), GW: server(p)})
    n.run(SHOP, Command("pcert"), NOW)
    state = n.state(SHOP)
    assert state["state"] == "FAILED" and state["error_code"] == "unknownBIN"
    assert n.timers[(SHOP, KEY, "refresh")].due == NOW + dt.timedelta(minutes=30)


def test_an_older_bci_is_refused(p):
    shop = client(p)
    asked = shop.step(None, Command("pcert"), NOW)
    genuine = _answer_from(p, server(p), asked.sends[0])
    seq = p.hier.brand.bci["tbs"]["sequence_num"].native
    out = shop.step(asked.state, Inbound("PCertRes", genuine.wrapper_der, GW), NOW,
                    {"Visa": seq + 1})
    assert out.refused and "older" in out.refused and out.state["state"] == "SENT"


def test_errors_end_the_fetch_only_from_the_gateway_naming_our_bytes(p):
    shop = client(p)
    asked = shop.step(None, Command("pcert"), NOW)
    request = asked.sends[0].wrapper_der
    forged = error_wrapper("unspecifiedFailure", request, now=NOW, signer=p.gateway2)
    out = shop.step(asked.state, Inbound("Error", forged, GW), NOW)
    assert out.state["state"] == "SENT" and out.refused
    genuine = error_wrapper("unspecifiedFailure", request, now=NOW, signer=p.gateway)
    out = shop.step(out.state, Inbound("Error", genuine, GW), NOW)
    assert out.state["state"] == "FAILED"


# --- Dispatch: a party's role with the certificate sub-roles around it ---------------------------
class Main(Role):
    """A stand-in for the merchant's role: its own shared key, every Error it is sent."""

    name = "main"
    shared_key = "merchant"
    TRANSITIONS = {START: {"order": START, "Error": START}}

    def transaction_key(self, event):
        return "main"

    def on_order(self, state, event, now, shared):
        return Outcome("main", None, shared={**shared, "orders": shared.get("orders", 0) + 1})

    def on_Error(self, state, event, now, shared):
        return Outcome("main", None, refused="main judged it")


def composed(p) -> Dispatch:
    registration = EERegistration(EERegConfig(SHOP, p.hier.trust_store(), kind="merchant"))
    return Dispatch([client(p), registration, Main()], name="merchant", primary="main",
                    errors_to="main")


def test_errors_reach_the_sub_role_their_message_ids_name(p):
    from setmail.asn1.wrapper import decode_wrapper, message_body
    body = message_body(decode_wrapper(client(p).step(None, Command("pcert"), NOW)
                                       .sends[0].wrapper_der)).dump()

    def error(**ids) -> Inbound:  # an Error repeats the ids of the mail it refuses
        refused = wrap("PCertReq", body, now=NOW, rrpid=b"r" * 20, **ids)
        return Inbound("Error", error_wrapper("unspecifiedFailure", refused, now=NOW), GW)

    agent = composed(p)
    assert agent.route(error(lid_m=MARK + b"x" * 11)).name == "pcert-client"
    assert agent.route(error(lid_m=b"y" * 16)).name == "ee-registration"
    assert agent.route(error(lid_m=b"z" * 20, xid=b"z" * 20)).name == "main"
    assert agent.route(error()).name == "main"  # as the merchant alone judged every Error


def test_sub_roles_with_another_shared_key_keep_theirs_inside_the_agents(p):
    agent = composed(p)
    assert agent.shared_key == "merchant"
    n = Net({SHOP: agent, GW: server(p)})
    n.shared[SHOP] = {"orders": 2, "brand": {"Visa": 0}}
    n.run(SHOP, Command("pcert"), NOW)
    seq = p.hier.brand.bci["tbs"]["sequence_num"].native
    assert n.shared[SHOP] == {"orders": 2, "brand": {"Visa": seq}}
    n.run(SHOP, Command("order"), NOW)
    assert n.shared[SHOP] == {"orders": 3, "brand": {"Visa": seq}}
    timers = [t for (a, _, _), t in n.timers.items() if a == SHOP]
    assert all(isinstance(t, SetTimer) and t.payload["role"] == "pcert-client" for t in timers)
