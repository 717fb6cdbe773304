"""Structures of SET's SetPKCS7Plus module that the operators themselves define.

SET 1.0 builds every protected message from a few operators (S, SO, Enc, EncK, EncX, EH, EX, EXH,
EncB, EncBX, DD, L) over PKCS#7.  Here they map to CMS (RFC 5652/5083); the few shapes that CMS
does not provide are defined in this module:

* ``SETOAEPBlock`` — what the RSA-OAEP block carries for the "H" and "X" operators: the content
  key plus the hash of the content (EH, EXH) and/or the extra data (EX, EXH, EncX, EncBX). SET 1.0
  packed these as BT/BC/V bytes in a custom OAEP; we keep BC as ``block_contents`` and use DER
  inside a standard OAEP-SHA256 block (deviation D-11).
* ``GCMParameters`` — RFC 5084, missing from asn1crypto.

L(t1, t2) = SEQUENCE { t1, DD(t2) } and EncB/EncBX = SEQUENCE { envelope, baggage } need no class
of their own: the typed versions live with the messages (e.g. ``PI_OILink``, ``AuthReq``) and the
operators split them with ``setmail.crypto.reader.split_pair``.
"""
from __future__ import annotations

from asn1crypto import algos, cms, core



class GCMParameters(core.Sequence):
    _fields = [
        ("aes_nonce", core.OctetString),
        ("aes_icv_len", core.Integer, {"default": 12}),
    ]


class BlockContents(core.Integer):
    """SET's BC byte: what the OAEP block carries besides the content key."""

    _map = {1: "key_and_hash", 2: "key_and_extra", 3: "key_hash_and_extra"}


def _register_algorithms() -> None:
    """Teach asn1crypto the two algorithm identifiers the SET operators use that it lacks.

    asn1crypto's documented way to add OIDs is to extend the classes' maps; without this, strict
    whole-tree parsing of a message carrying an EX envelope or GCM parameters fails.
    """
    cms.KeyEncryptionAlgorithmId._map.setdefault("1.2.840.113549.1.1.6", "rsa_oaep_encryption_set")
    cms.KeyEncryptionAlgorithmId._reverse_map = None
    cms.KeyEncryptionAlgorithm._oid_specs.setdefault("rsa_oaep_encryption_set", algos.RSAESOAEPParams)
    algos.EncryptionAlgorithm._oid_specs.setdefault("aes256_gcm", GCMParameters)


_register_algorithms()


class SETOAEPBlock(core.Sequence):
    _fields = [
        ("block_contents", BlockContents),
        ("key", core.OctetString),
        ("hash", core.OctetString, {"implicit": 0, "optional": True}),
        ("extra", core.Any, {"explicit": 1, "optional": True}),
    ]
