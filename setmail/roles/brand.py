"""The BrandCRLIdentifier a response carries: verified, and never older than one seen before.

Why a role reads it at all: the BCI is the brand's signed statement of which CRLs are current, so
a relying party can tell "no revocation" from "a CRL kept from me" (pki.md).  A forged one must not
pass (it is verified under the Brand CA of the *signer's validated path*, not under whatever brand
certificate travels with the message), and an old genuine one must not roll the brand's list back:
each role keeps the highest sequence number seen per brand in its shared state ``"brand"``
({brand_id: sequence}), which the agent commits with the transaction.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from cryptography import x509

from setmail.errors import ProtocolError
from setmail.pki.bci import verify_bci_on_path
from setmail.pki.trust import TrustStore
from setmail.pki.validate import validate_path

#: the role's shared-state key for the sequence numbers
SHARED_KEY = "brand"


def check_bci(bci_der: bytes | None, signer: x509.Certificate, certificates: Iterable, *,
              trust: TrustStore, now: dt.datetime, expected_type: str, suite, crls=None,
              seen: Mapping | None = None) -> tuple[int | None, dict | None]:
    """(sequence, new shared state) for the BCI a response signed by ``signer`` carries; (None,
    None) when it carries none.  ``expected_type``: the signer's certificate type (its path was
    validated already, so this is a cache hit).  ProtocolError for a BCI that does not verify on
    that path (a pki SetmailError) or whose sequence is lower than one seen before for its brand."""
    if bci_der is None:
        return None, None
    path = validate_path(signer, list(certificates), trust, now=now, expected_type=expected_type,
                         key_usage="digital_signature", crls=crls)
    bci = verify_bci_on_path(bci_der, path, now=now, suite=suite)  # pki errors carry codes
    tbs = bci["tbs"]
    brand, sequence = tbs["brand_id"].native, tbs["sequence_num"].native
    seen = dict(seen or {})
    if sequence < seen.get(brand, -1):
        raise ProtocolError(f"BrandCRLIdentifier {sequence} of {brand} is older than "
                            f"{seen[brand]}, already seen", "invalidCertificate")
    if sequence > seen.get(brand, -1):
        seen[brand] = sequence
        return sequence, seen
    return sequence, None
