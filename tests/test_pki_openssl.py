"""OpenSSL as an independent checker of every issued chain, CRL and the SET extensions.

certificateType and hashedRootKey stay critical as in SET (D-200), so `openssl verify` needs
-ignore_critical; without it OpenSSL refuses them, which is checked too.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from setmail.pki import to_pem
from tests.test_pki_world import world

pytestmark = [pytest.mark.openssl,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")]


def _openssl(*args, check=True):
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=30)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def _write(path, *objs):
    path.write_bytes(b"".join(to_pem(o) for o in objs))
    return path


def _leaves():
    w = world()
    h = w.h
    return {
        "cardholder": (w.certs["cardholder"].certificate, h.cca),
        "merchant-sig": (w.certs["merchant"][0], h.mca),
        "merchant-kex": (w.certs["merchant"][1], h.mca),
        "gateway-sig": (w.certs["gateway"][0], h.pca),
        "gateway-kex": (w.certs["gateway"][1], h.pca),
        "cca": (h.cca.certificate, h.geo), "cca-kex": (h.cca.key_exchange_certificate, h.geo),
        "mca-kex": (h.mca.key_exchange_certificate, h.geo),
        "pca-kex": (h.pca.key_exchange_certificate, h.geo),
        "brand": (h.brand.certificate, h.root),
    }


@pytest.mark.parametrize("which", [
    "cardholder", "merchant-sig", "merchant-kex", "gateway-sig", "gateway-kex", "cca", "cca-kex",
    "mca-kex", "pca-kex", "brand"])
def test_openssl_verify_accepts_every_chain(tmp_path, which):
    leaf, issuer = _leaves()[which]
    root = _write(tmp_path / "root.pem", world().h.root.certificate)
    chain = _write(tmp_path / "chain.pem", *issuer.chain[:-1]) if issuer.parent else root
    leaf_pem = _write(tmp_path / "leaf.pem", leaf)
    out = _openssl("verify", "-ignore_critical", "-CAfile", root, "-untrusted", chain, leaf_pem)
    assert out.stdout.strip().endswith("OK")
    strict = _openssl("verify", "-CAfile", root, "-untrusted", chain, leaf_pem, check=False)
    assert strict.returncode != 0 and "unhandled critical extension" in strict.stdout + strict.stderr


def test_openssl_verifies_every_crl(tmp_path):
    w = world()
    for i, ca in enumerate(w.h.cas):
        issuer = _write(tmp_path / f"ca{i}.pem", ca.certificate)
        crl = _write(tmp_path / f"crl{i}.pem", ca.crl)
        out = _openssl("crl", "-verify", "-noout", "-CAfile", issuer, "-in", crl)
        assert "verify OK" in out.stdout + out.stderr


def test_openssl_shows_the_set_extensions(tmp_path):
    w = world()
    expect = {
        "root": (w.h.root.certificate, ["setCext-hashedRoot: critical",
                                        "setCext-certType: critical", "Policy: set-policy-root",
                                        "setCext-setQualf"]),
        "merchant": (w.certs["merchant"][0], ["setCext-merchData", "Digital Signature"]),
        "gateway": (w.certs["gateway"][1], ["setCext-cCertRequired", "setCext-tunneling",
                                            "Key Encipherment"]),
        "cca": (w.h.cca.certificate, ["Certificate Sign, CRL Sign", "pathlen:0"]),
    }
    for name, (cert, needles) in expect.items():
        text = _openssl("x509", "-text", "-noout", "-in", _write(tmp_path / f"{name}.pem",
                                                                   cert)).stdout
        for needle in needles:
            assert needle in text, (name, needle)
        assert "rsassaPss" in text
