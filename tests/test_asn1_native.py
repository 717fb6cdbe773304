"""strict.decode_native (asn1/codec/native.py) against asn1crypto and against strict.decode.

Differential: for every sample and vector message and plaintext (and a bench world's mails when
``SETMAIL_DECODE_MAILDIRS`` names Maildirs, as in tests/test_strict_walk.py) the value equals
``cls.load(der).native`` field by field, except the documented raw values: opaque ContentInfo
layers are their untagged DER, fields named in ``raw`` are ``Der`` (untagged DER whose ``.native``
is asn1crypto's native).  On the walker's mutation corpus decode_native refuses exactly when
decode refuses (with the same message), and whatever both accept decodes to asn1crypto's value.
"""
from __future__ import annotations

import datetime as dt
import os
import random

import pytest
from asn1crypto import core, x509

from setmail.asn1 import capture as cap, certext, gateway as gw, purchase as pu
from setmail.asn1.base import MessageHeader
from setmail.asn1.codec import plan, walk
from setmail.asn1.codec.native import Der, paths
from setmail.asn1.codec.strict import decode, decode_native
from setmail.asn1.wrapper import MessageWrapper
from setmail.errors import MalformedMessage, MessageTooLarge
from setmail.vectors import samples
from tests.test_strict_walk import (_maildir_corpus, _sample_corpus, _vector_corpus, mutate,
                                    outcome)

#: raw paths the roles use, per class (tested on every corpus value of that class)
RAW = {
    gw.AuthReqData: ("auth_req_item.auth_tags", "auth_req_item.auth_tags.trans_ids",
                     "auth_req_item.check_digests.h_oi_data", "auth_req_item.check_digests.hod2"),
    cap.CapReqData: ("cap_rr_tags", "cap_item_seq.*.trans_ids"),
    cap.CapResData: ("cap_res_item_seq.*.trans_ids", "brand_crl_identifier"),
    gw.AuthResData: ("auth_tags.trans_ids", "brand_crl_identifier"),
    pu.PResData: ("trans_ids", "brand_crl_identifier"),
    pu.PIHead: ("trans_ids", "inputs.hod"),
    MessageWrapper: ("message_header",),
}


@pytest.fixture(scope="module")
def values():
    """The walker's corpus and the role-read plaintexts that are parts of its values."""
    corpus = _sample_corpus() + _vector_corpus() + _maildir_corpus()
    parts = [samples.auth_req_data(), samples.auth_res_data(), samples.pi_head(),
             samples.cap_req_data(), samples.cap_res_data(), samples.cap_token_data(),
             MessageHeader(samples.header())]
    return corpus + [(f"part {type(v).__name__}", type(v), v.dump()) for v in parts]


def same(node, mine, value, raw, where: str) -> None:
    """Assert that ``mine`` (decode_native's value at ``node``) is what asn1crypto's ``value``
    gives: its ``.native``, opaque layers and raw fields as their untagged DER."""
    if raw is not None and "" in raw:
        assert isinstance(mine, Der), where
        assert mine == value.untag().dump(), where
        return same(node, mine.native, value, raw[""], where + "(native)")
    if isinstance(node, walk.Explicit):
        return same(node.inner, mine, value, raw, where)
    if isinstance(node, walk.Opaque):
        assert type(mine) is bytes and mine == value.untag().dump(), where
        return None
    if isinstance(node, walk.Sequence):
        assert type(mine) is dict and list(mine) == [f[0] for f in value._fields], where
        for index, (name, *_) in enumerate(value._fields):
            child, sub = value[name], raw.get(name) if raw else None
            if isinstance(child, core.Void):
                assert mine[name] is None, f"{where}.{name}"
            elif node.nodes[index] is None:  # a spec chosen by an earlier field
                assert mine[name] == child.native, f"{where}.{name}"
            else:
                same(node.nodes[index], mine[name], child, sub, f"{where}.{name}")
        return None
    if isinstance(node, walk.SequenceOf):
        assert type(mine) is list and len(mine) == len(value), where
        for index, child in enumerate(value):
            same(node.child, mine[index], child, raw.get("*") if raw else None, f"{where}.{index}")
        return None
    if isinstance(node, walk.Choice) and not issubclass(node.spec, x509.Name):
        alt = next(n for name, n in node.alternatives.values() if name == value.name)
        return same(alt, mine, value.chosen, raw.get(value.name) if raw else None,
                    f"{where}.{value.name}")
    expected = value.native
    assert mine == expected, (where, mine, expected)
    assert type(mine) is type(expected) or isinstance(expected, dict), where
    return None


def verdict(cls, data: bytes, native: bool) -> str | None:
    """None if decode (decode_native, with the roles' raw paths) accepts ``data``, else why not."""
    if native:
        return outcome(lambda c, d, canonical: decode_native(c, d, raw=RAW.get(c, ())), cls, data,
                       True)
    return outcome(decode, cls, data, True)


def test_corpus_decodes_to_asn1crypto_natives(values):
    checked = set()
    for label, cls, data in values:
        for raw in ((), RAW.get(cls, ())):
            same(plan.root(cls), decode_native(cls, data, raw=raw), cls.load(data), paths(raw),
                 label)
        checked.add(cls)
    assert len(checked) > 60 and set(RAW) <= checked


def mutants(values):
    """(label, class, mutated DER) for SETMAIL_MUTATIONS draws of tests/test_strict_walk.py's
    mutations per value."""
    rng = random.Random(int(os.environ.get("SETMAIL_MUTATION_SEED", 127)))
    for label, cls, data in values:
        for _ in range(int(os.environ.get("SETMAIL_MUTATIONS", 20))):
            try:
                yield label, cls, mutate(data, rng)
            except Exception:  # the tree helpers met their own limits: skip this draw
                continue


def test_mutations_are_refused_exactly_as_decode_refuses_them(values):
    faults, accepted = [], 0
    for label, cls, bad in mutants(values):
        mine, theirs = verdict(cls, bad, True), verdict(cls, bad, False)
        if mine != theirs:
            faults.append(f"{label} {bad.hex()}: decode_native {mine!r}, decode {theirs!r}")
        elif mine is None:
            accepted += 1
            same(plan.root(cls), decode_native(cls, bad, raw=RAW.get(cls, ())), cls.load(bad),
                 paths(RAW.get(cls, ())), label)
    assert accepted > 500, accepted
    assert not faults, "\n".join(faults[:20])


def test_defaults_absent_fields_and_raw_values():
    header = MessageHeader({"version": 1, "date": dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc),
                            "sw_ident": "x"}).dump()
    value = decode_native(MessageHeader, header)
    assert value == {"version": 1, "revision": 0, "date": dt.datetime(
        2026, 11, 27, tzinfo=dt.timezone.utc), "message_ids": None, "rrpid": None, "sw_ident": "x"}
    data = samples.auth_res_data().dump()
    value = decode_native(gw.AuthResData, data, raw=("brand_crl_identifier", "auth_tags"))
    bci = gw.AuthResData.load(data)["brand_crl_identifier"]
    assert value["brand_crl_identifier"][:1] == b"\x30"  # [0] IMPLICIT, given untagged
    assert value["brand_crl_identifier"] == bci.untag().dump() and \
        value["brand_crl_identifier"].native == bci.native
    assert decode(certext.BrandCRLIdentifier, value["brand_crl_identifier"]).native == bci.native
    assert value["auth_tags"].native["trans_ids"]["xid"] == \
        gw.AuthResData.load(data)["auth_tags"]["trans_ids"]["xid"].native


def test_opaque_layers_are_their_der():
    data = samples.plaintext_sample("AuthResBaggage").dump()
    value, loaded = decode_native(gw.AuthResBaggage, data), gw.AuthResBaggage.load(data)
    assert value["cap_token"] == loaded["cap_token"].untag().dump()
    assert value["cap_token"][:1] == b"\x30" and type(value["cap_token"]) is bytes


def test_refusals_and_bad_paths():
    data = samples.plaintext_sample("PANData").dump()
    with pytest.raises(MessageTooLarge):
        decode_native(pu.PANData, data, max_size=len(data) - 1)
    with pytest.raises(MalformedMessage, match="expected bytes"):
        decode_native(pu.PANData, "text")
    with pytest.raises(MalformedMessage, match="trailing"):
        decode_native(pu.PANData, data + b"\x00")
    nested = decode_native(gw.AuthResData, samples.auth_res_data().dump(),
                           raw=("auth_tags.trans_ids", "auth_tags"))
    assert isinstance(nested["auth_tags"].native["trans_ids"], Der)
