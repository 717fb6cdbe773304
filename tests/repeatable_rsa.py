"""A crypto suite whose RSA has no randomness, so two builds of one message compare byte for byte.

RSASSA-PSS and RSAES-OAEP are randomised (salt, seed) inside OpenSSL, where no test can seed them.
``Repeatable`` encodes both by hand (RFC 8017 9.1.1 EMSA-PSS, 7.1.1 EME-OAEP) with the salt and
seed derived from the input, then does the RSA with Python integers: the results are genuine
(the normal suite verifies and decrypts them) and the same on every run.  With ``os.urandom``
seeded too (content keys, GCM nonces), a whole message is a function of its inputs.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from setmail.crypto.suite import CryptoSuite
from setmail.errors import BadKey

_H = 32  # SHA-256


def _mgf1(seed: bytes, size: int) -> bytes:
    out = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
                   for i in range((size + _H - 1) // _H))
    return out[:size]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _private(key, m: int) -> int:
    """m^d mod n by the CRT (four times faster than pow(m, d, n))."""
    nums = key.private_numbers()
    mp, mq = pow(m, nums.dmp1, nums.p), pow(m, nums.dmq1, nums.q)
    return mq + nums.q * ((nums.iqmp * (mp - mq)) % nums.p)


@dataclass(frozen=True)
class Repeatable(CryptoSuite):
    """The default suite's algorithms, with the PSS salt and OAEP seed a hash of the input."""

    def sign(self, key, data: bytes) -> bytes:
        mod_bits = key.key_size
        em_len = (mod_bits - 1 + 7) // 8
        salt = hashlib.sha256(b"pss salt" + data).digest()
        h = hashlib.sha256(bytes(8) + hashlib.sha256(data).digest() + salt).digest()
        db = bytes(em_len - len(salt) - _H - 2) + b"\x01" + salt
        masked = bytearray(_xor(db, _mgf1(h, em_len - _H - 1)))
        masked[0] &= 0xFF >> (8 * em_len - (mod_bits - 1))
        em = bytes(masked) + h + b"\xbc"
        return _private(key, int.from_bytes(em, "big")).to_bytes(mod_bits // 8, "big")

    def oaep_encrypt(self, public_key, plaintext: bytes) -> bytes:
        key = self.check_public_key(public_key)
        if len(plaintext) > self.oaep_capacity(key):
            raise BadKey(f"{len(plaintext)} bytes do not fit the OAEP block")
        k = key.key_size // 8
        seed = hashlib.sha256(b"oaep seed" + plaintext).digest()
        db = hashlib.sha256(b"").digest() + bytes(k - len(plaintext) - 2 * _H - 2) + b"\x01" + plaintext
        masked_db = _xor(db, _mgf1(seed, k - _H - 1))
        em = b"\x00" + _xor(seed, _mgf1(masked_db, _H)) + masked_db
        numbers = key.public_numbers()
        return pow(int.from_bytes(em, "big"), numbers.e, numbers.n).to_bytes(k, "big")


REPEATABLE = Repeatable("rsa2048", 2048)


def seeded_urandom(seed: int):
    """An ``os.urandom`` stand-in: the same octets for the same seed."""
    return random.Random(seed).randbytes
