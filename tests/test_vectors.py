"""``setmail vectors``: every message type, checked by OpenSSL as an independent implementation."""
from __future__ import annotations

import json
import subprocess

import pytest
from asn1crypto import cms, core

from setmail.asn1.oids import ct
from setmail.asn1.wrapper import MESSAGE_TYPES, decode_wrapper, message_type
from setmail.cli.main import main

pytestmark = pytest.mark.openssl


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors")
    with pytest.raises(SystemExit) as done:
        main(["vectors", str(out)])
    assert done.value.code == 0
    return out


def _openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], capture_output=True)


def _cms_layers(value):
    """Every CMS ContentInfo nested in a decoded message, outermost first."""
    if isinstance(value, cms.ContentInfo):
        yield value
        return
    if isinstance(value, core.Choice):
        yield from _cms_layers(value.chosen)
    elif isinstance(value, (core.Sequence, core.SequenceOf)):
        for child in (value[k] for k in range(len(value))) if isinstance(value, core.SequenceOf) \
                else (value[name] for name, *_ in value._fields):
            yield from _cms_layers(child)


def _find(wrapper, kind: str, content_type: str) -> bytes:
    for ci in _cms_layers(wrapper["message"].chosen):
        body = ci["content"]
        if kind in ("S", "SO") and ci["content_type"].native == "signed_data" and \
                body["encap_content_info"]["content_type"].dotted == ct(content_type):
            return ci.untag().dump()
        if kind not in ("S", "SO") and ci["content_type"].native == "authenticated_enveloped_data" and \
                body["auth_encrypted_content_info"]["content_type"].dotted == ct(content_type):
            return ci.untag().dump()
    raise AssertionError(f"no {kind} layer of {content_type}")


def test_every_message_type_written_and_decodes(vectors):
    for name in MESSAGE_TYPES:
        data = (vectors / "messages" / f"{name}.der").read_bytes()
        assert message_type(decode_wrapper(data)) == name
        assert decode_wrapper(data).dump(force=True) == data  # canonical DER re-encodes identically


def test_pki_layout(vectors):
    pki = vectors / "pki"
    for f in ("root.pem", "chain.pem", "bci.der", "cardholder.cert.pem", "cardholder.key.pem",
              "merchant-sig.cert.pem", "gateway-kex.key.pem", "cca.crl.pem"):
        assert (pki / f).is_file(), f
    assert (pki / "cardholder.key.pem").stat().st_mode & 0o077 == 0
    for cert in pki.glob("*.cert.pem"):
        # the issuer's certificates are pinned self-signed ones, outside SET's PKI (D-130)
        anchor = cert if cert.name.startswith("issuer-") else pki / "root.pem"
        r = _openssl("verify", "-ignore_critical", "-CAfile", anchor, "-untrusted",
                     pki / "chain.pem", cert)
        assert r.returncode == 0, (cert.name, r.stdout + r.stderr)


def test_openssl_asn1parse_parses_every_vector(vectors):
    for der in sorted((vectors / "messages").glob("*.der")):
        r = _openssl("asn1parse", "-inform", "DER", "-in", der)
        assert r.returncode == 0 and b"error" not in r.stderr.lower(), (der.name, r.stderr)


def test_openssl_verifies_every_signature_and_opens_every_envelope(vectors, tmp_path):
    manifest = json.loads((vectors / "messages" / "manifest.json").read_text())
    pki, checked = vectors / "pki", {"S": 0, "SO": 0, "Enc": 0, "EncB": 0, "EncK": 0}
    for name, entry in manifest.items():
        wrapper = decode_wrapper((vectors / "messages" / f"{name}.der").read_bytes())
        for layer in entry["layers"]:
            kind = layer["kind"]
            if kind not in checked:
                continue  # EX/EXH/EncX carry SET extra data in the OAEP block: outside CMS (D-11)
            blob = tmp_path / f"{name}.{kind}.der"
            blob.write_bytes(_find(wrapper, kind, layer["content_type"]))
            out = tmp_path / "out"
            if kind in ("S", "SO"):
                # the issuer signs with a pinned self-signed certificate, outside SET's PKI
                signer = layer.get("signer", "")
                anchor = pki / (f"{signer}.cert.pem" if signer.startswith("issuer-") else "root.pem")
                args = ["cms", "-verify", "-inform", "DER", "-in", blob, "-CAfile", anchor,
                        "-certfile", pki / "chain.pem", "-purpose", "any", "-ignore_critical", "-out", out]
                if kind == "SO":
                    args += ["-content", vectors / "messages" / layer["content_file"], "-binary"]
                r = _openssl(*args)
            elif kind == "EncK":
                r = _openssl("cms", "-decrypt", "-inform", "DER", "-in", blob, "-secretkey",
                             layer["secret_key"], "-secretkeyid", layer["secret_key_id"], "-binary", "-out", out)
            else:
                who = layer["recipient"]
                r = _openssl("cms", "-decrypt", "-inform", "DER", "-in", blob, "-recip",
                             pki / f"{who}.cert.pem", "-inkey", pki / f"{who}.key.pem", "-binary", "-out", out)
            assert r.returncode == 0, (name, kind, r.stderr.decode())
            if kind not in ("S", "SO"):
                assert out.read_bytes() == (vectors / "messages" / layer["content_file"]).read_bytes(), name
            checked[kind] += 1
    assert all(checked.values()), checked
