"""Build the vector set: the PKI, then each message with the operator the spec assigns it."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from setmail.asn1 import capture as cap, certmsgs as cm, error as er, gateway as gw, purchase as pu
from setmail.asn1.wrapper import MESSAGE_TYPES, make_wrapper
from setmail.crypto import dual, operators as op
from setmail.asn1.oids import ct
from setmail.crypto.cms import (Identity, decrypt_content, kek_id, parse_enveloped, unwrap_kekri,
                                unwrap_ktri)
from setmail.crypto.reader import split_pair
from setmail.crypto.suite import get_suite
from setmail.pki import to_der, to_pem
from setmail.pki.hierarchy import create_hierarchy
from setmail.pki.pinned import pinned_certificate
from setmail.pki.setext import MerchantInfo, MerName
from setmail.vectors import samples as smp

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)
PAN, EXPIRY = "4111111111111111", "202912"


@dataclass
class VectorSet:
    messages: dict[str, bytes] = field(default_factory=dict)
    manifest: dict[str, dict] = field(default_factory=dict)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # name -> bytes under messages/
    pki: dict[str, bytes] = field(default_factory=dict)           # name -> bytes under pki/


class Parties:
    """One hierarchy with a certified cardholder, merchant and gateway: the keys every vector is
    made with (fixed date and CardSecret, so vectors are reproducible), and the demo's cast."""

    MER_ID = "shop-0001"

    def __init__(self, suite, now: dt.datetime = NOW, card_secret: bytes = bytes(32)):
        self.tree = tree = create_hierarchy(suite, now)
        key = suite.generate_key
        card = key()
        issued = tree.issue_cardholder(card.public_key(), pan=PAN, expiry=EXPIRY, card_secret=card_secret,
                                       now=now)
        self.card_secret, self.pan_secret = card_secret, issued.pan_secret
        self.cardholder = Identity(card, issued.certificate, tuple(tree.cca.chain[:-1]))
        ms, mk, gs, gk = key(), key(), key(), key()
        info = MerchantInfo(self.MER_ID, "41111111", (MerName("en", "Teapot Shop", "Springfield", "US"),), 840)
        m_sig, m_kex = tree.issue_merchant(ms.public_key(), mk.public_key(), info, now)
        g_sig, g_kex = tree.issue_gateway(gs.public_key(), gk.public_key(), now, name="Acquirer Gateway")
        self.merchant_sig = Identity(ms, m_sig, tuple(tree.mca.chain[:-1]))
        self.merchant_kex = Identity(mk, m_kex, tuple(tree.mca.chain[:-1]))
        self.gateway_sig = Identity(gs, g_sig, tuple(tree.pca.chain[:-1]))
        self.gateway_kex = Identity(gk, g_kex, tuple(tree.pca.chain[:-1]))

        def ca(c):
            return (Identity(c.key, c.certificate, tuple(c.chain[1:-1])),
                    Identity(c.key_exchange_key, c.key_exchange_certificate, tuple(c.chain[1:-1])))
        self.cca_sig, self.cca_kex = ca(tree.cca)
        self.mca_sig, self.mca_kex = ca(tree.mca)
        # the issuer is outside SET's PKI: pinned self-signed certificates (D-130)
        i_sig, i_kex = key(), key()
        self.issuer_sig = Identity(i_sig, pinned_certificate(i_sig, "Issuer Bank", now, suite=suite))
        self.issuer_kex = Identity(i_kex, pinned_certificate(i_kex, "Issuer Bank", now,
                                                             key_exchange=True, suite=suite))

    def named(self) -> dict[str, Identity]:
        return {"cardholder": self.cardholder, "merchant-sig": self.merchant_sig,
                "merchant-kex": self.merchant_kex, "gateway-sig": self.gateway_sig,
                "gateway-kex": self.gateway_kex, "cca-sig": self.cca_sig, "cca-kex": self.cca_kex,
                "mca-sig": self.mca_sig, "mca-kex": self.mca_kex, "issuer-sig": self.issuer_sig,
                "issuer-kex": self.issuer_kex}


class _Builder:
    def __init__(self, suite):
        self.suite = suite
        self.p = Parties(suite)
        self.out = VectorSet()
        self.back_key = bytes(range(32))
        self.names = {id(v): k for k, v in self.p.named().items()}

    def layer(self, msg: str, kind: str, **info) -> None:
        """Record one CMS layer of ``msg`` for independent checkers."""
        layers = self.out.manifest.setdefault(msg, {"layers": []})["layers"]
        n = len(layers)
        if "content" in info:
            fname = f"{msg}.{n}.content"
            self.out.extra_files[fname] = info.pop("content")
            info["content_file"] = fname
        layers.append(dict(kind=kind, **info))

    # operators that record what they made -------------------------------------------------
    def S(self, msg, signer, tbs, plaintext):
        self.layer(msg, "S", signer=self.names[id(signer)], content_type=tbs)
        return op.S(signer, tbs, plaintext, suite=self.suite)

    def Enc(self, msg, signer, recipient, tbs, plaintext, tbe):
        data = op.Enc(signer, recipient.cert, tbs, plaintext, tbe, suite=self.suite)
        self.layer(msg, "Enc", signer=self.names[id(signer)], recipient=self.names[id(recipient)],
                   content_type=tbe, inner_content_type=tbs, locate="message",
                   content=_decrypted(data, recipient, tbe, self.suite))
        return data

    def EncB(self, msg, signer, recipient, tbs, plaintext, b_type, baggage, tbe):
        data = op.EncB(signer, recipient.cert, tbs, plaintext, b_type, baggage, tbe, suite=self.suite)
        enc = split_pair(data, "EncB")[0]
        self.layer(msg, "EncB", signer=self.names[id(signer)], recipient=self.names[id(recipient)],
                   content_type=tbe, inner_content_type=tbs, locate="envelope",
                   content=_decrypted(enc, recipient, tbe, self.suite))
        return data


def _decrypted(envelope: bytes, recipient: Identity, tbe: str, suite) -> bytes:
    """The exact plaintext of a plain-OAEP envelope (what ``openssl cms -decrypt`` must output)."""
    env = parse_enveloped(envelope, ct(tbe))
    return decrypt_content(suite, env, unwrap_ktri(suite, env, recipient, set_block=False))


def _message(b: _Builder, name: str):
    """The message value of type ``name`` with real crypto around sample plaintexts."""
    p, d = b.p, smp
    dump = lambda v: v.dump()  # noqa: E731
    if name == "PInitReq":
        return d.p_init_req()
    if name in ("PInitRes", "PRes", "InqRes"):
        tbs, plain = {"PInitRes": ("PInitResData", d.p_init_res_data()),
                      "PRes": ("PResData", d.p_res_data()), "InqRes": ("PResData", d.p_res_data())}[name]
        return MESSAGE_TYPES[name].load(b.S(name, p.merchant_sig, tbs, dump(plain)))
    if name == "PReq":
        head, oi, pan = dump(d.pi_head()), dump(d.oi_data()), dump(d.pan_data())
        signed = dual.dual_sign(p.cardholder, p.gateway_kex.cert, head, oi, pan, suite=b.suite)
        tbs = dual.pi_tbs(op.DD("PIData", _seq(head, pan), b.suite), op.DD("OIData", oi, b.suite))
        b.layer(name, "SO", signer="cardholder", content_type="PI-TBS", locate="pi_signature", content=tbs)
        b.layer(name, "EX", recipient="gateway-kex", content_type="PIDualSignedTBE", locate="ex_pi_data")
        return pu.PReq(name="p_req_dual_signed", value=pu.PReqDualSigned.load(signed.p_req_dual_signed))
    if name == "InqReq":
        signed = b.S(name, p.cardholder, "InqReqData", dump(d.inq_req_data()))
        return pu.InqReq(name="inq_req_signed", value=pu.InqReq._alternatives[0][1].load(signed))
    if name == "AuthReq":
        pi = dump(_preq_pi(b))
        return gw.AuthReq.load(b.EncB(name, p.merchant_sig, p.gateway_kex, "AuthReqTBS",
                                      dump(d.auth_req_data()), "PI", pi, "AuthReqTBE"))
    if name == "AuthRes":
        return gw.AuthRes.load(b.EncB(name, p.gateway_sig, p.merchant_kex, "AuthResTBS",
                                      dump(d.auth_res_data()), "AuthResBaggage",
                                      dump(d.auth_res_baggage()), "AuthResTBE"))
    if name == "AuthRevReq":
        return gw.AuthRevReq.load(b.EncB(name, p.merchant_sig, p.gateway_kex, "AuthRevReqTBS",
                                         dump(d.auth_rev_req_data()), "AuthRevReqBaggage",
                                         dump(d.auth_rev_req_baggage()), "AuthRevReqTBE"))
    if name == "AuthRevRes":
        inner = b.EncB(name, p.gateway_sig, p.merchant_kex, "AuthRevResTBS", dump(d.auth_rev_res_data()),
                       "AuthRevResBaggage", dump(d.auth_rev_res_baggage()), "AuthRevResTBEB")
        return gw.AuthRevRes(name="auth_rev_res_enc_b", value=gw.AuthRevRes._alternatives[1][1].load(inner))
    if name in ("CapReq", "CapRevReq", "CredReq", "CredRevReq"):
        data = {"CapReq": d.cap_req_data()}.get(name) or d.cap_rev_or_cred_req_data(getattr(cap, name + "Data"))
        tokens = dump(gw.CapTokenSeq([_cap_token(b)]))
        return MESSAGE_TYPES[name].load(b.EncB(name, p.merchant_sig, p.gateway_kex, name + "TBS", dump(data),
                                               "CapTokenSeq", tokens, name + "TBE"))
    if name in ("CapRes", "CapRevRes", "CredRes", "CredRevRes"):
        data = d.cap_res_data() if name == "CapRes" else d.cap_rev_or_cred_res_data(getattr(cap, name + "Data"))
        return MESSAGE_TYPES[name].load(b.Enc(name, p.gateway_sig, p.merchant_kex, name + "Data",
                                              dump(data), name + "TBE"))
    if name in ("PCertReq", "PCertRes"):
        signer, tbs, plain = ((p.merchant_sig, "PCertReqData", d.p_cert_req_data()) if name == "PCertReq"
                              else (p.gateway_sig, "PCertResTBS", d.p_cert_res_tbs()))
        return MESSAGE_TYPES[name].load(b.S(name, signer, tbs, dump(plain)))
    if name == "BatchAdminReq":
        return cap.BatchAdminReq.load(b.Enc(name, p.merchant_sig, p.gateway_kex, "BatchAdminReqData",
                                            dump(d.batch_admin_req_data()), "BatchAdminReqTBE"))
    if name == "BatchAdminRes":
        return cap.BatchAdminRes.load(b.Enc(name, p.gateway_sig, p.merchant_kex, "BatchAdminResData",
                                            dump(d.batch_admin_res_data()), "BatchAdminResTBE"))
    if name in ("CardCInitReq", "Me-AqCInitReq"):
        return smp.MESSAGE_SAMPLES[name]()
    if name == "CardCInitRes":
        return cm.CardCInitRes.load(b.S(name, p.cca_sig, "CardCInitResTBS", dump(d.card_c_init_res_tbs())))
    if name == "Me-AqCInitRes":
        return cm.MeAqCInitRes.load(b.S(name, p.mca_sig, "MeAqCInitResTBS", dump(d.me_aq_c_init_res_tbs())))
    if name == "RegFormReq":
        b.layer(name, "EXH", recipient="cca-kex", content_type="RegFormReqTBE", locate="message")
        return cm.RegFormReq.load(op.EXH(p.cca_kex.cert, "RegFormReqTBE", dump(d.reg_form_req_data()),
                                         "PANOnly", dump(d.pan_only()), suite=b.suite))
    if name == "RegFormRes":
        return cm.RegFormRes.load(b.S(name, p.cca_sig, "RegFormResTBS", dump(d.reg_form_res_tbs())))
    if name == "CertReq":
        b.layer(name, "EncX", signer="cardholder", recipient="cca-kex", content_type="CertReqTBEX",
                locate="message")
        return cm.CertReq.load(op.EncX(p.cardholder, p.cca_kex.cert, "CertReqTBS", dump(d.cert_req_data()),
                                       "PANData", dump(d.acct_info()), "CertReqTBEX", suite=b.suite))
    if name in ("CertRes", "CertInqRes"):
        data = op.EncK(b.back_key, p.cca_sig, "CertResData", dump(d.cert_res_data()), "CertResTBE", suite=b.suite)
        env = parse_enveloped(data, ct("CertResTBE"))
        b.layer(name, "EncK", signer="cca-sig", content_type="CertResTBE", inner_content_type="CertResData",
                locate="message", secret_key=b.back_key.hex(), secret_key_id=kek_id(b.back_key).hex(),
                content=decrypt_content(b.suite, env, unwrap_kekri(env, b.back_key)))
        return MESSAGE_TYPES[name].load(data)
    if name == "CertInqReq":
        return cm.CertInqReq.load(b.S(name, p.cardholder, "CertInqReqTBS", dump(d.cert_inq_req_tbs())))
    if name.startswith("Iss"):  # the gateway <-> issuer leg (D-130)
        signer, recipient = ((p.gateway_sig, p.issuer_kex) if name.endswith("Req")
                             else (p.issuer_sig, p.gateway_kex))
        plain = smp.PLAINTEXT_SAMPLES[name + "Data"]()
        return MESSAGE_TYPES[name].load(b.Enc(name, signer, recipient, name + "Data", dump(plain),
                                              name + "TBE"))
    if name == "Statement":  # the issuer's signed statement to a cardholder (D-173)
        plain = smp.PLAINTEXT_SAMPLES["StatementData"]()
        return MESSAGE_TYPES[name].load(b.S(name, p.issuer_sig, "StatementData", dump(plain)))
    if name == "Error":
        signed = b.S(name, p.merchant_sig, "ErrorTBS", dump(d.error_tbs()))
        return er.Error(name="signed_error", value=er.Error._alternatives[0][1].load(signed))
    raise KeyError(name)


def _seq(*parts: bytes) -> bytes:
    from setmail.crypto import der
    return der.seq(*parts)


def _preq_pi(b: _Builder) -> pu.PI:
    head, oi, pan = smp.pi_head().dump(), smp.oi_data().dump(), smp.pan_data().dump()
    signed = dual.dual_sign(b.p.cardholder, b.p.gateway_kex.cert, head, oi, pan, suite=b.suite)
    return pu.PI(name="pi_dual_signed", value=pu.PIDualSigned.load(signed.pi_dual_signed))


def _cap_token(b: _Builder) -> gw.CapToken:
    data = op.Enc(b.p.gateway_sig, b.p.gateway_kex.cert, "CapTokenData", smp.cap_token_data().dump(),
                  "CapTokenTBE", suite=b.suite)
    return gw.CapToken.load(data)


def build_vectors(suite_name: str = "rsa2048") -> VectorSet:
    b = _Builder(get_suite(suite_name))
    for name in MESSAGE_TYPES:
        message = _message(b, name)
        wrapper = make_wrapper(smp.header(), name, message, mw_extensions=smp.extensions())
        b.out.messages[name] = wrapper.dump(force=True)
        b.out.manifest.setdefault(name, {"layers": []})
    _pki_files(b)
    return b.out


def _pki_files(b: _Builder) -> None:
    tree, out = b.p.tree, b.out.pki
    out["root.pem"] = to_pem(tree.root.certificate)
    intermediates = [ca.certificate for ca in tree.cas if ca is not tree.root]
    kex = [ca.key_exchange_certificate for ca in tree.cas if getattr(ca, "key_exchange_certificate", None)]
    out["chain.pem"] = b"".join(to_pem(c) for c in [*intermediates, *kex])
    for name, ident in b.p.named().items():
        out[f"{name}.cert.pem"] = to_pem(ident.cert)
        out[f"{name}.key.pem"] = ident.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for ca in tree.cas:
        out[f"{ca.profile.cert_type}.crl.pem"] = to_pem(ca.crl)
    out["bci.der"] = to_der(tree.brand.bci)


def write_vectors(outdir: Path, suite_name: str = "rsa2048") -> VectorSet:
    vs = build_vectors(suite_name)
    msg_dir, pki_dir = Path(outdir) / "messages", Path(outdir) / "pki"
    msg_dir.mkdir(parents=True, exist_ok=True)
    pki_dir.mkdir(parents=True, exist_ok=True)
    for name, data in vs.messages.items():
        (msg_dir / f"{name}.der").write_bytes(data)
    for name, data in vs.extra_files.items():
        (msg_dir / name).write_bytes(data)
    (msg_dir / "manifest.json").write_text(json.dumps(vs.manifest, indent=2, sort_keys=True) + "\n")
    for name, data in vs.pki.items():
        path = pki_dir / name
        path.write_bytes(data)
        if name.endswith(".key.pem"):
            path.chmod(0o600)
    return vs
