"""Secure-core benchmark: Enc (sign + envelope) of a ~2 KiB body, built and opened, against the
same RSA operations alone, measured in one run on one core.

The message is what a merchant sends a gateway: S(M, t) inside AuthEnvelopedData for the gateway's
key-exchange certificate.  Certificates are omitted from the SignedData (the peer holds them,
announced by Thumbs), so the figure is the operators' own cost.  RSA alone = one PSS signature and
one OAEP encryption (build), one OAEP decryption and one PSS verification (parse).

Last line: ``decode_wrapper`` (the strict decode every inbound mail gets, D-126) of a PInitRes
wrapper whose SignedData carries four certificates, against the RSA work of opening one message.
"""
from __future__ import annotations

import datetime as dt
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from setmail.asn1 import decode_wrapper, make_wrapper
from setmail.bench import machine
from setmail.asn1.purchase import PInitRes
from setmail.crypto import operators as op
from setmail.crypto.cms import Identity
from setmail.crypto.suite import get_suite

PYAS2LIB_BUILD, PYAS2LIB_PARSE = 174, 337  # messages/s, RSA-2048, 2-core machine (crypto-notes.md)


def _identity(suite, name: str) -> Identity:
    key = suite.generate_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256(), rsa_padding=suite.pss_padding))
    return Identity(key, cert)


def _signed_wrapper(suite, signer: Identity, body: bytes, chain) -> bytes:
    """A PInitRes-shaped MessageWrapper: S(signer, t) with ``chain`` in the SignedData."""
    signed = op.S(signer, "PInitResData", body, certs=chain, suite=suite)
    header = {"version": 1, "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
              "rrpid": bytes(32), "message_ids": {"lid_c": b"bench", "xid": bytes(32)},
              "sw_ident": "setmail-bench"}
    return make_wrapper(header, "PInitRes", PInitRes.load(signed)).dump()


def _rate(fn, seconds: float) -> float:
    fn()  # warm caches
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run(seconds: float = 3.0, suite_name: str = "rsa2048") -> int:
    box = machine.describe()
    suite = get_suite(suite_name)
    merchant, gateway = _identity(suite, "merchant"), _identity(suite, "gateway")
    body = b"\x04\x82\x08\x00" + bytes(range(256)) * 8  # a 2 KiB OCTET STRING
    known = [merchant.cert]
    msg = op.Enc(merchant, gateway.cert, "AuthReqTBS", body, "AuthReqTBE", certs=(), suite=suite)

    def build():
        op.Enc(merchant, gateway.cert, "AuthReqTBS", body, "AuthReqTBE", certs=(), suite=suite)

    def parse():
        op.open_Enc(msg, gateway, "AuthReqTBE", "AuthReqTBS", certs=known, suite=suite)

    def both():
        op.open_Enc(op.Enc(merchant, gateway.cert, "AuthReqTBS", body, "AuthReqTBE", certs=(), suite=suite),
                    gateway, "AuthReqTBE", "AuthReqTBS", certs=known, suite=suite)

    digest = suite.digest(body)
    sig = suite.sign(merchant.key, digest)
    ct = suite.oaep_encrypt(gateway.cert.public_key(), bytes(32))
    mpub, gpub = merchant.cert.public_key(), gateway.cert.public_key()

    def rsa_build():
        suite.sign(merchant.key, digest)
        suite.oaep_encrypt(gpub, bytes(32))

    def rsa_parse():
        suite.oaep_decrypt(gateway.key, ct)
        suite.verify(mpub, sig, digest)

    def rsa_both():
        rsa_build()
        rsa_parse()

    chain = (merchant.cert, *[_identity(suite, f"ca {i}").cert for i in range(3)])
    wrapper = _signed_wrapper(suite, merchant, body, chain)

    def decode():
        decode_wrapper(wrapper)

    rates = {name: _rate(fn, seconds) for name, fn in
             [("build", build), ("parse", parse), ("build+parse", both),
              ("rsa build", rsa_build), ("rsa parse", rsa_parse), ("rsa build+parse", rsa_both),
              ("decode", decode)]}
    ratio = rates["rsa build+parse"] / rates["build+parse"]
    print(f"setmail secure-core benchmark — suite {suite.name}, {len(msg)}-byte message "
          f"(2 KiB body), one core, {seconds:g} s per row")
    print(machine.line(box))
    print()
    print("| operation | setmail msgs/s | RSA ops alone /s | cost ÷ RSA alone |")
    print("|---|---:|---:|---:|")
    for what in ("build", "parse", "build+parse"):
        r, rsa = rates[what], rates["rsa " + what]
        print(f"| {what} | {r:,.0f} | {rsa:,.0f} | {rsa / r:.2f} |")
    print()
    print(f"build+parse costs {ratio:.2f} × its RSA operations alone (target ≤ 1.5)")
    print(f"vs pyas2lib (174 build/s, 337 parse/s): build {rates['build'] / PYAS2LIB_BUILD:.1f}×, "
          f"parse {rates['parse'] / PYAS2LIB_PARSE:.1f}× (target ≥ 5×)")
    print(f"decode_wrapper of a {len(wrapper)}-byte PInitRes (4 certificates): "
          f"{1000 / rates['decode']:.2f} ms (RSA parse alone: {1000 / rates['rsa parse']:.2f} ms)")
    return 0
