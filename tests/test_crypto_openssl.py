"""OpenSSL as an independent checker of our CMS: it verifies S/SO and opens Enc/EncK."""
from __future__ import annotations

import subprocess

import pytest

from setmail.crypto import operators as op
from setmail.crypto.cms import kek_id

pytestmark = pytest.mark.openssl
T = b"\x30\x0c\x04\x0aSET rocks!"


def _run(*args, input=None):
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)


@pytest.fixture(scope="module")
def files(minipki, tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    (d / "root.pem").write_bytes(minipki.pem(minipki.root))
    (d / "chain.pem").write_bytes(minipki.pem(minipki.ca))
    for name, ident in minipki.parties.items():
        (d / f"{name}.cert.pem").write_bytes(minipki.pem(ident.cert))
        (d / f"{name}.key.pem").write_bytes(minipki.key_pem(ident))
    return d


def test_S_verifies_with_openssl(minipki, files):
    data = op.S(minipki.parties["merchant-sig"], "PInitResData", T)
    (files / "s.der").write_bytes(data)
    r = _run("cms", "-verify", "-inform", "DER", "-in", str(files / "s.der"), "-CAfile",
             str(files / "root.pem"), "-purpose", "any", "-out", str(files / "s.out"))
    assert r.returncode == 0, r.stderr.decode()
    assert (files / "s.out").read_bytes() == T


def test_SO_verifies_with_openssl(minipki, files):
    data = op.SO(minipki.parties["cardholder"], "PI-TBS", T)
    (files / "so.der").write_bytes(data)
    (files / "so.content").write_bytes(T)
    r = _run("cms", "-verify", "-inform", "DER", "-in", str(files / "so.der"), "-content",
             str(files / "so.content"), "-binary", "-CAfile", str(files / "root.pem"), "-purpose", "any",
             "-out", "/dev/null")
    assert r.returncode == 0, r.stderr.decode()
    (files / "so.content").write_bytes(T + b"x")
    r = _run("cms", "-verify", "-inform", "DER", "-in", str(files / "so.der"), "-content",
             str(files / "so.content"), "-binary", "-CAfile", str(files / "root.pem"), "-purpose", "any")
    assert r.returncode != 0


def test_Enc_opens_with_openssl(minipki, files):
    gk = minipki.parties["gateway-kex"]
    data = op.Enc(minipki.parties["merchant-sig"], gk.cert, "AuthReqTBS", T, "AuthReqTBE")
    (files / "e.der").write_bytes(data)
    r = _run("cms", "-decrypt", "-inform", "DER", "-in", str(files / "e.der"), "-recip",
             str(files / "gateway-kex.cert.pem"), "-inkey", str(files / "gateway-kex.key.pem"),
             "-binary", "-out", str(files / "e.out"))
    assert r.returncode == 0, r.stderr.decode()
    inner = (files / "e.out").read_bytes()
    assert op.verify_S(inner, "AuthReqTBS").content == T  # exactly our plaintext: S(s,t)
    # ... and the inner signature verifies with openssl too
    r = _run("cms", "-verify", "-inform", "DER", "-in", str(files / "e.out"), "-CAfile",
             str(files / "root.pem"), "-purpose", "any", "-out", "/dev/null")
    assert r.returncode == 0, r.stderr.decode()


def test_EncK_opens_with_openssl(minipki, files):
    key = bytes(range(32))
    data = op.EncK(key, minipki.parties["merchant-sig"], "CertResData", T, "CertResTBE")
    (files / "k.der").write_bytes(data)
    r = _run("cms", "-decrypt", "-inform", "DER", "-in", str(files / "k.der"), "-secretkey", key.hex(),
             "-secretkeyid", kek_id(key).hex(), "-binary", "-out", str(files / "k.out"))
    assert r.returncode == 0, r.stderr.decode()
    assert op.verify_S((files / "k.out").read_bytes(), "CertResData").content == T


def test_asn1parse_accepts_every_operator_output(minipki, files):
    ms, gk, ch = (minipki.parties[n] for n in ("merchant-sig", "gateway-kex", "cardholder"))
    outputs = [op.S(ms, "PResData", T), op.SO(ch, "PI-TBS", T),
               op.Enc(ms, gk.cert, "AuthReqTBS", T, "AuthReqTBE"),
               op.EX(gk.cert, "PIDualSignedTBE", T, "PANData", T),
               op.EncB(ms, gk.cert, "AuthReqTBS", T, "PI", T, "AuthReqTBE"), op.DD("OIData", T)]
    for i, blob in enumerate(outputs):
        path = files / f"a{i}.der"
        path.write_bytes(blob)
        r = _run("asn1parse", "-inform", "DER", "-in", str(path))
        assert r.returncode == 0 and b"Error" not in r.stdout + r.stderr, r.stderr.decode()
