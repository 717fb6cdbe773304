"""roles.brand.check_bci: a BCI is verified under the Brand CA of the signer's validated path, and
its per-brand sequence never goes back (the bug it fixes: the first brand certificate found among
the message's unsigned certificates was trusted, so a foreign brand's BCI was accepted)."""
from __future__ import annotations

import pytest

from setmail.errors import ProtocolError, SetmailError
from setmail.pki import to_der
from setmail.roles.brand import check_bci
from tests.test_pki_world import NOW, SUITE, foreign, world


def _check(bci, certificates, seen=None):
    w = world()
    signer = w.certs["merchant"][0]
    return check_bci(to_der(bci), signer, certificates, trust=w.h.trust_store(), now=NOW,
                     expected_type="mer", suite=SUITE, crls=w.h.crls(), seen=seen)


def test_own_brand_bci_is_taken_and_its_sequence_noted():
    h = world().h
    seq = h.brand.bci["tbs"]["sequence_num"].native
    assert _check(h.brand.bci, h.mca.chain) == (seq, {"Visa": seq})
    assert _check(h.brand.bci, h.mca.chain, seen={"Visa": seq}) == (seq, None)


def test_a_foreign_brands_bci_fails_even_with_its_brand_certificate_first_in_the_message():
    h, other = world().h, foreign()
    with pytest.raises(SetmailError):
        _check(other.brand.bci, [other.brand.certificate, *h.mca.chain])


def test_a_rolled_back_sequence_is_refused():
    h = world().h
    seq = h.brand.bci["tbs"]["sequence_num"].native
    with pytest.raises(ProtocolError, match="older"):
        _check(h.brand.bci, h.mca.chain, seen={"Visa": seq + 1})


def test_no_bci_changes_nothing():
    w = world()
    assert check_bci(None, w.certs["merchant"][0], (), trust=w.h.trust_store(), now=NOW,
                     expected_type="mer", suite=SUITE) == (None, None)
