"""The cryptography of one purchase and nothing else: the yardstick of ``bench purchases``.

``crypto_purchase`` makes exactly the signatures, envelopes and verifications docs/purchase.md
assigns to a purchase (PInitRes … CapRes, both issuer legs), with the SET operators on plaintexts
of realistic size, certificates already held by the receiver (no path building), no ASN.1 of
ours beyond the operators' own framing, no mail, no storage.  Counted per purchase: RSA
private-key operations (signatures, OAEP decryptions) and public-key operations (verifications,
OAEP encryptions).

``bare_rsa`` is the physical floor under both: exactly those RSA operations, called on
``cryptography`` directly (same key size and paddings), nothing else — no hashing of bodies, no
symmetric ciphers, no DER.  Every benchmark figure is also given as a multiple of it.
"""
from __future__ import annotations

import datetime as dt
import os
import time

from setmail.crypto import der, dual, operators as op
from setmail.crypto.suite import fresh, get_suite

_PRIVATE = ("sign", "oaep_decrypt")
_PUBLIC = ("verify", "oaep_encrypt")


class _Counting:
    """The suite with its RSA calls counted (delegates everything)."""

    def __init__(self, suite):
        self._suite = suite
        self.private = self.public = 0
        self.by_name = {name: 0 for name in _PRIVATE + _PUBLIC}

    def __getattr__(self, name):
        attr = getattr(self._suite, name)
        if name in _PRIVATE or name in _PUBLIC:
            def counted(*args, **kwargs):
                self.by_name[name] += 1
                if name in _PRIVATE:
                    self.private += 1
                else:
                    self.public += 1
                return attr(*args, **kwargs)
            return counted
        return attr


def _blob(n: int) -> bytes:
    """A DER value of about ``n`` octets standing in for a plaintext structure."""
    return der.octets(bytes(n))


def crypto_purchase(p, suite) -> None:
    """One purchase's cryptography between the parties of ``p`` (vectors.Parties)."""
    c, ms, mk, gs, gk = p.cardholder, p.merchant_sig, p.merchant_kex, p.gateway_sig, p.gateway_kex
    is_, ik = p.issuer_sig, p.issuer_kex
    body = _blob(400)  # a typical <X>Data: 300-600 octets
    # PInitRes: S(M) -> wallet verifies
    op.verify_S(op.S(ms, "PInitResData", body, certs=(), suite=suite), "PInitResData",
                certs=[ms.cert], suite=suite)
    # PReq: dual signature; merchant verifies the OI side
    head, oi, pan = _blob(300), _blob(350), _blob(120)
    ds = dual.dual_sign(c, gk.cert, head, oi, pan, certs=(), suite=suite)
    dual.merchant_verify(ds.pi_dual_signed, ds.oi_dual_signed, certs=[c.cert], suite=suite)
    # AuthReq: EncB(M, P, AuthReqData, PI); gateway opens it and the PI
    auth_req = op.EncB(ms, gk.cert, "AuthReqTBS", body, "PI", ds.pi_dual_signed, "AuthReqTBE",
                       certs=(), suite=suite)
    op.open_EncB(auth_req, gk, "AuthReqTBE", "AuthReqTBS", "PI", certs=[ms.cert], suite=suite)
    dual.gateway_verify(ds.pi_dual_signed, gk, certs=[c.cert], suite=suite)
    # issuer legs: 0100/0110 and, below, 0220/0230
    for tbs, tbe in (("IssAuthReqData", "IssAuthReqTBE"), ("IssCapReqData", "IssCapReqTBE")):
        req = op.Enc(gs, ik.cert, tbs, body, tbe, certs=(), suite=suite)
        op.open_Enc(req, ik, tbe, tbs, certs=[gs.cert], suite=suite)
        res_tbs, res_tbe = tbs.replace("Req", "Res"), tbe.replace("Req", "Res")
        res = op.Enc(is_, gk.cert, res_tbs, body, res_tbe, certs=(), suite=suite)
        op.open_Enc(res, gk, res_tbe, res_tbs, certs=[is_.cert], suite=suite)
    # AuthRes: CapToken Enc(P, P), AcqCardMsg EncK, EncB(P, M, AuthResData, baggage)
    token = op.Enc(gs, gk.cert, "CapTokenData", _blob(120), "CapTokenTBE", certs=(), suite=suite)
    back_key = fresh(32)
    acq = op.EncK(back_key, gs, "AcqCardCodeMsg", _blob(60), "AcqCardCodeMsgTBE", certs=(),
                  suite=suite)
    auth_res = op.EncB(gs, mk.cert, "AuthResTBS", body, "AuthResBaggage", der.seq(token, acq),
                       "AuthResTBE", certs=(), suite=suite)
    op.open_EncB(auth_res, mk, "AuthResTBE", "AuthResTBS", "AuthResBaggage", certs=[gs.cert],
                 suite=suite)
    # PRes: S(M) with the AcqCardMsg; wallet verifies both
    op.verify_S(op.S(ms, "PResData", body, certs=(), suite=suite), "PResData", certs=[ms.cert],
                suite=suite)
    op.open_EncK(acq, back_key, "AcqCardCodeMsgTBE", "AcqCardCodeMsg", certs=[gs.cert],
                 suite=suite)
    # CapReq: EncB(M, P, CapReqData, CapTokenSeq); gateway opens it and its CapToken
    cap_req = op.EncB(ms, gk.cert, "CapReqTBS", body, "CapTokenSeq", der.seq(token), "CapReqTBE",
                      certs=(), suite=suite)
    op.open_EncB(cap_req, gk, "CapReqTBE", "CapReqTBS", "CapTokenSeq", certs=[ms.cert],
                 suite=suite)
    op.open_Enc(token, gk, "CapTokenTBE", "CapTokenData", certs=[gs.cert], suite=suite)
    # CapRes: Enc(P, M)
    op.open_Enc(op.Enc(gs, mk.cert, "CapResData", body, "CapResTBE", certs=(), suite=suite), mk,
                "CapResTBE", "CapResData", certs=[gs.cert], suite=suite)


def crypto_only(seconds: float = 5.0, suite_name: str = "rsa2048") -> dict:
    """Purchases/s and CPU seconds per purchase of ``crypto_purchase`` on one core."""
    from setmail.vectors import Parties
    suite = get_suite(suite_name)
    parties = Parties(suite, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    counting = _Counting(suite)
    crypto_purchase(parties, counting)  # warm-up, and the operation count
    n, cpu0, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        crypto_purchase(parties, suite)
        n += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"rate": n / wall, "cpu_per": cpu / n, "n": n, "private_ops": counting.private,
            "public_ops": counting.public, "ops": dict(counting.by_name), "pid": os.getpid()}


def bare_rsa(ops: dict[str, int], seconds: float = 3.0, suite_name: str = "rsa2048") -> dict:
    """CPU seconds (and rate on one core) of ``ops`` (operation name -> count, from
    ``crypto_only``) done with ``cryptography`` alone: the physical floor of a purchase."""
    suite = get_suite(suite_name)
    key = suite.generate_key()
    pub = key.public_key()
    pss, oaep, sha = suite.pss_padding, suite.oaep_padding, suite.hash_algorithm
    data = bytes(96)  # what the suite signs: signed attributes of about this size
    sig, ct = key.sign(data, pss, sha), pub.encrypt(bytes(32), oaep)
    calls = ([lambda: key.sign(data, pss, sha)] * ops.get("sign", 0)
             + [lambda: key.decrypt(ct, oaep)] * ops.get("oaep_decrypt", 0)
             + [lambda: pub.verify(sig, data, pss, sha)] * ops.get("verify", 0)
             + [lambda: pub.encrypt(bytes(32), oaep)] * ops.get("oaep_encrypt", 0))
    for call in calls[:4]:  # warm-up
        call()
    n, cpu0, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        for call in calls:
            call()
        n += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"rate": n / wall, "cpu_per": cpu / n, "n": n}


def yardsticks(seconds: float = 5.0, suite_name: str = "rsa2048") -> dict:
    """Both yardsticks in one run: ``crypto`` (crypto_only) and ``rsa`` (bare_rsa of the same
    operation counts), each measured for ``seconds``."""
    crypto = crypto_only(seconds, suite_name)
    return {"crypto": crypto, "rsa": bare_rsa(crypto["ops"], seconds, suite_name)}
