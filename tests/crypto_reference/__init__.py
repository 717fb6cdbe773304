"""FROZEN copy of setmail/crypto (der, reader, cms, operators, dual) at 6a2db0d: the reference the
optimised operators must match byte for byte and verdict for verdict (tests/test_crypto_identity.py)."""
