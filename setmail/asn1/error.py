"""The Error message (set-protocol.md §7): signed when the sender has a signature certificate,
clear otherwise.  It echoes the offending header or wrapper so an asynchronous (e-mail) sender can
correlate the failure with its request.
"""
from __future__ import annotations

from asn1crypto import cms, core

from .base import MessageHeader, Nonce, Thumbprint
from .codes import ErrorCode

#: BadWrapper carries at most this many octets of the offending MessageWrapper
MAX_BAD_WRAPPER = 20000


class ErrorMsg(core.Choice):
    _alternatives = [
        ("message_header", MessageHeader, {"implicit": 0}),
        ("bad_wrapper", core.OctetString, {"implicit": 1}),  # raw bytes, never parsed
    ]


class ErrorTBS(core.Sequence):
    """``error_nonce`` is the signer's own randomness, so it never signs attacker data alone."""

    _fields = [
        ("error_code", ErrorCode),
        ("error_nonce", Nonce),
        ("error_oid", core.ObjectIdentifier, {"implicit": 0, "optional": True}),
        ("error_thumb", Thumbprint, {"implicit": 1, "optional": True}),
        ("error_msg", ErrorMsg, {"explicit": 2}),
        # setmail hardening (D-134): SHA-256 of the refused MessageWrapper DER, under the
        # signature, so a signed Error ends exactly the request it refuses and no forgery that
        # merely repeats that request's clear header (RRPID, XID)
        ("refused_hash", core.OctetString, {"implicit": 3, "optional": True}),
    ]


class Error(core.Choice):
    _alternatives = [
        ("signed_error", cms.ContentInfo, {"implicit": 0}),  # S(EE, ErrorTBS)
        ("unsigned_error", ErrorTBS, {"implicit": 1}),
    ]
