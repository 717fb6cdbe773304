"""SET ASN.1 types (asn1crypto classes), one per SET type, named as in the spec.

Modules: ``base`` (shared components, ``decode``), ``oids``, ``codes`` (enumerations),
``purchase``, ``gateway`` (authorisation, tokens), ``capture`` (capture, credit, PCert,
BatchAdmin), ``certmsgs``, ``error``, ``wrapper`` (MessageWrapper and the registries).  Every
class they define is re-exported here; imports nothing from setmail but ``setmail.errors``.
"""
from __future__ import annotations

from . import base, capture, certmsgs, codes, error, gateway, oids, purchase, wrapper
from .base import MAX_MESSAGE_SIZE, decode, encode
from .wrapper import (
    MESSAGE_TYPES, MIME_PAYMENT, MIME_PAYMENT_INITIATION, MIME_REGISTRATION,
    MIME_REGISTRATION_INITIATION, MIME_TYPES, PLAINTEXT_TYPES, decode_wrapper, make_wrapper,
    message_alternative, message_body, message_type,
)

__all__ = [
    "MAX_MESSAGE_SIZE", "decode", "encode", "oids", "MESSAGE_TYPES", "MIME_TYPES",
    "PLAINTEXT_TYPES", "MIME_PAYMENT", "MIME_REGISTRATION", "MIME_PAYMENT_INITIATION",
    "MIME_REGISTRATION_INITIATION", "decode_wrapper", "make_wrapper", "message_alternative",
    "message_body", "message_type",
]


def _export(*modules) -> None:
    for mod in modules:
        for name, obj in vars(mod).items():
            if isinstance(obj, type) and obj.__module__ == mod.__name__ and name[0] != "_":
                globals()[name] = obj
                __all__.append(name)


_export(base, codes, purchase, gateway, capture, certmsgs, error, wrapper)
