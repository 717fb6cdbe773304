"""A renewed party still opens mail encrypted to its old key-exchange certificate (in flight
during the renewal), and only with the keys it archived; it never takes a stranger's envelope."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from setmail.agent.certfiles import previous_key_exchange
from setmail.crypto import operators as op
from setmail.crypto.cms import Identity
from setmail.errors import DecryptionFailed
from setmail.world.files import write_private

T = b"\x04\x03abc"


def test_old_key_exchange_certificate_still_opens(minipki):
    ms, gk, mk = (minipki.parties[n] for n in ("merchant-sig", "gateway-kex", "merchant-kex"))
    in_flight = op.Enc(ms, gk.cert, "AuthReqTBS", T, "AuthReqTBE", certs=())
    renewed = Identity(mk.key, mk.cert)  # stands for the gateway's new key-exchange identity
    with pytest.raises(DecryptionFailed):
        op.open_Enc(in_flight, renewed, "AuthReqTBE", "AuthReqTBS", certs=[ms.cert])
    renewed = dataclasses.replace(renewed, previous=(gk,))
    opened = op.open_Enc(in_flight, renewed, "AuthReqTBE", "AuthReqTBS", certs=[ms.cert])
    assert opened.content == T


def test_archived_key_exchange_identities_are_read_until_they_expire(minipki, tmp_path):
    from cryptography.hazmat.primitives import serialization
    gk = minipki.parties["gateway-kex"]
    pem = gk.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    write_private(tmp_path / "old-1f.kex.key.pem", pem)
    write_private(tmp_path / "old-1f.kex.cert.pem", gk.cert.public_bytes(serialization.Encoding.PEM))
    write_private(tmp_path / "old-2e.kex.key.pem", pem)  # its certificate is gone: not used
    found = previous_key_exchange(tmp_path)
    assert [i.cert.serial_number for i in found] == [gk.cert.serial_number]
    later = gk.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    assert previous_key_exchange(tmp_path, later) == ()
