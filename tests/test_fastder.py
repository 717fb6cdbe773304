"""fastder writes the bytes asn1crypto writes: every message and plaintext sample (given as natives,
with embedded parts as Raw DER or as asn1crypto objects), and random values of every primitive
setmail uses under every kind of tagging, OPTIONAL and DEFAULT, CHOICE, SET OF ordering."""
from __future__ import annotations

import random
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from asn1crypto import core
from hypothesis import given, settings
from hypothesis import strategies as st

from setmail.asn1 import base, gateway as gw, purchase as pu
from setmail.asn1.codec import plan
from setmail.asn1.codec.fastder import Raw, _plan, encode
from setmail.asn1.codec.strict import decode_native
from setmail.asn1.wrapper import MESSAGE_TYPES
from tests.asn1_samples import (
    MESSAGE_SAMPLES, MESSAGE_VARIANTS, PLAINTEXT_SAMPLES, bci, dd, enveloped, trans_ids,
)

SAMPLES = [(n, f) for n, f in PLAINTEXT_SAMPLES.items()] + [
    (n, MESSAGE_SAMPLES[n]) for n in MESSAGE_TYPES] + list(
    (label, build) for label, (_, build) in MESSAGE_VARIANTS.items())


def value_of(obj, embed=None):
    """The Python value asn1crypto would be given for ``obj``; ``embed(obj)`` may instead return
    a Raw or an object for a constructed part (None: keep converting)."""
    if isinstance(obj, (core.Choice, core.Sequence, core.SequenceOf)) and (obj.implicit
                                                                           or obj.explicit):
        obj = obj.untag()
    if embed is not None and isinstance(obj, (core.Sequence, core.SequenceOf, core.Choice)):
        chosen = embed(obj)
        if chosen is not None:
            return chosen
    if _plan(type(obj)).kind in ("slow", "any"):
        return obj
    if isinstance(obj, core.Choice):
        return (obj.name, value_of(obj.chosen, embed))
    if isinstance(obj, core.Sequence):
        return {name: value_of(obj[name], embed) for name, *_ in obj._fields
                if not isinstance(obj[name], core.Void)}
    if isinstance(obj, core.SequenceOf):
        return [value_of(child, embed) for child in obj]
    return obj.native


def embedder(seed: int, how: str):
    rng = random.Random(seed)

    def embed(obj):
        if rng.random() < 0.4:
            return Raw(obj.dump()) if how == "raw" else obj
        return None
    return embed


@pytest.mark.parametrize("name,build", SAMPLES, ids=[n for n, _ in SAMPLES])
def test_samples_encode_as_asn1crypto_does(name, build):
    obj = build()
    expected = obj.dump()
    cls = type(obj)
    assert encode(cls, value_of(obj)) == expected
    for seed in range(3):
        assert encode(cls, value_of(obj, embedder(seed, "raw"))) == expected
        assert encode(cls, value_of(obj, embedder(seed, "object"))) == expected
    assert encode(cls, Raw(expected)) == expected
    assert encode(cls, obj) == expected


@contextmanager
def no_asn1crypto_objects():
    """Inside, building any asn1crypto value fails: the fast path must not need one."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} built by asn1crypto")
    with mock.patch.object(core.Asn1Value, "__init__", refuse):
        yield


# --- random values of every primitive, under every tagging ------------------------------------
class Level(core.Enumerated):
    _map = {0: "low", 1: "mid", 7: "high"}


class Mapped(core.Integer):
    _map = {1: "one", 300: "many"}


class Flags(core.BitString):
    _map = {0: "a", 1: "b", 5: "f", 9: "j"}


class Algo(core.ObjectIdentifier):
    _map = {"1.2.840.113549.1.1.1": "rsa", "2.23.42.7.0": "hashed_root_key"}


ZONES = [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
OIDS = st.builds(lambda a, b, rest: ".".join(map(str, [a, b, *rest])), st.integers(0, 2),
                 st.integers(0, 39), st.lists(st.integers(0, 2 ** 70), max_size=6))
ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
PRIMITIVES = {
    core.Integer: st.integers(-2 ** 200, 2 ** 200) | st.integers(-300, 300),
    Mapped: st.integers(-5, 400) | st.sampled_from(["one", "many"]),
    Level: st.sampled_from([0, 1, 7, "low", "mid", "high"]),
    core.Boolean: st.booleans(),
    core.Null: st.none(),
    core.OctetString: st.binary(max_size=300),
    core.UTF8String: st.text(max_size=60),
    core.VisibleString: ASCII, core.PrintableString: ASCII, core.IA5String: ASCII,
    core.NumericString: st.text("0123456789 ", max_size=20),
    core.ObjectIdentifier: OIDS, Algo: OIDS | st.sampled_from(["rsa", "hashed_root_key"]),
    core.BitString: st.lists(st.integers(0, 1), max_size=40).map(tuple),
    Flags: st.sets(st.sampled_from("abfj")) | st.lists(st.integers(0, 1), max_size=10).map(tuple),
    core.GeneralizedTime: st.datetimes(datetime(1000, 1, 2), datetime(9998, 12, 30),
                                       timezones=st.sampled_from(ZONES)),
    core.UTCTime: st.datetimes(datetime(1950, 1, 2), datetime(2049, 12, 30),
                               timezones=st.sampled_from(ZONES)),
}
TAGGINGS = [{}, {"implicit": 0}, {"explicit": 3}, {"implicit": 30}, {"implicit": 31},
            {"explicit": 200}, {"implicit": ("application", 5)}, {"explicit": ("private", 1)}]


@st.composite
def tagged_field(draw):
    spec = draw(st.sampled_from(list(PRIMITIVES)))
    params = dict(draw(st.sampled_from(TAGGINGS)))
    kind = draw(st.sampled_from(["required", "optional", "default"]))
    value = draw(PRIMITIVES[spec])
    if kind == "optional":
        params["optional"] = True
        value = draw(st.sampled_from([value, None, "absent"]))
    elif kind == "default" and spec is not core.Null:
        params["default"] = draw(PRIMITIVES[spec])
        value = draw(st.sampled_from([value, params["default"], None, "absent"]))
    return spec, params, value


def _seq(fields):
    return type("Seq", (core.Sequence,), {"_fields": fields})


@settings(max_examples=600, deadline=None)
@given(st.lists(tagged_field(), min_size=1, max_size=4))
def test_tagged_primitives_as_asn1crypto(items):
    fields = [(f"f{i}", spec, params) for i, (spec, params, _) in enumerate(items)]
    value = {f"f{i}": v for i, (_, _, v) in enumerate(items) if not isinstance(v, str) or v != "absent"}
    cls = _seq(fields)
    try:
        expected = cls(value).dump()
    except (ValueError, TypeError):  # e.g. an all-absent SEQUENCE, which asn1crypto calls unset
        return
    assert encode(cls, value) == expected
    with no_asn1crypto_objects():  # once the plan is made (and an OID seen), no objects at all
        assert encode(cls, value) == expected
    # the same fields nested under explicit and implicit tags, and as Raw
    outer = _seq([("inner", cls, {"explicit": 1}), ("again", cls, {"implicit": 2}),
                  ("copy", cls, {"implicit": 3, "optional": True})])
    nested = {"inner": value, "again": value, "copy": Raw(expected)}
    assert encode(outer, nested) == outer({"inner": value, "again": value,
                                           "copy": cls.load(expected)}).dump()


class Bytes(core.SetOf):
    _child_spec = core.OctetString


class Ints(core.SequenceOf):
    _child_spec = core.Integer


class Pick(core.Choice):
    _alternatives = [("number", core.Integer), ("text", core.UTF8String, {"implicit": 1}),
                     ("pair", _seq([("a", core.Integer), ("b", core.Boolean, {"default": True})]),
                      {"explicit": 2}), ("bag", Bytes, {"implicit": 3})]


class Holder(core.Sequence):
    _fields = [("pick", Pick), ("tagged", Pick, {"explicit": 4, "optional": True}),
               ("set", Bytes), ("seq", Ints, {"implicit": 5, "default": []}),
               ("picks", type("Picks", (core.SequenceOf,), {"_child_spec": Pick}),
                {"optional": True})]


CHOSEN = st.one_of(st.tuples(st.just("number"), st.integers(-1000, 10 ** 30)),
                   st.tuples(st.just("text"), st.text(max_size=20)),
                   st.tuples(st.just("pair"), st.fixed_dictionaries(
                       {"a": st.integers()}, optional={"b": st.booleans()})),
                   st.tuples(st.just("bag"), st.lists(st.binary(max_size=5), max_size=6)))


@settings(max_examples=300, deadline=None)
@given(CHOSEN, st.none() | CHOSEN, st.lists(st.binary(max_size=9), max_size=8),
       st.lists(st.integers(-300, 300), max_size=4), st.booleans())
def test_choice_set_of_and_defaults_as_asn1crypto(pick, tagged, members, ints, as_dict):
    value = {"pick": dict([pick]) if as_dict else pick, "set": members, "seq": ints}
    if tagged is not None:
        value["tagged"] = tagged
        value["picks"] = [Pick(name=tagged[0], value=tagged[1]), Raw(Pick(pick).dump())]
    expected = Holder(value).dump() if tagged is None else Holder(
        {**value, "picks": [Pick(name=tagged[0], value=tagged[1]), Pick(pick)]}).dump()
    assert encode(Holder, value) == expected
    assert encode(Bytes, members) == Bytes(members).dump()  # sorted by encoding


def test_encoder_and_decoder_share_one_compiled_plan():
    """Issue 16: one compile of a declaration serves both directions; decoding what the encoder
    wrote compiles nothing new (the walker and the native builder use the encoder's nodes)."""
    inner = _seq([("n", core.Integer), ("s", core.UTF8String, {"optional": True})])
    cls = _seq([("a", inner), ("b", core.OctetString, {"implicit": 1, "optional": True}),
                ("c", type("Ints", (core.SequenceOf,), {"_child_spec": core.Integer}),
                 {"explicit": 2})])
    value = {"a": {"n": 7, "s": "x"}, "b": b"\x01", "c": [1, 2]}
    before = len(plan._NODES)
    der = encode(cls, value)
    compiled = len(plan._NODES)
    assert compiled > before and der == cls(value).dump()
    assert decode_native(cls, der) == value
    assert len(plan._NODES) == compiled


# --- values the fast path leaves to asn1crypto, Raw checks, errors ------------------------------
def test_unusual_python_values_are_handed_to_asn1crypto():
    amount = OrderedDict(currency=978, amount=True, amt_exp10=-2)  # bool is an int to asn1crypto
    assert encode(base.CurrencyAmount, amount) == base.CurrencyAmount(amount).dump()
    flag = {"ext_id": "2.23.42.7.9", "critical": 1, "ext_value": b""}
    assert encode(base.MsgExtension, flag) == base.MsgExtension(flag).dump()
    when = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=ZONES[1])
    assert encode(base.Date, when) == base.Date(when).dump()
    assert encode(base.Date, "20260501120000Z") == base.Date("20260501120000Z").dump()
    thumbs = {"digest_algorithm": {"algorithm": "sha256"}, "cert_thumbs": [b"a" * 32]}
    assert encode(base.Thumbs, thumbs) == base.Thumbs(thumbs).dump()  # AlgorithmIdentifier by asn1crypto


def test_empty_all_optional_sequence_is_accepted():
    """asn1crypto refuses {} ("not set"); the empty SEQUENCE is what it loads from 30 00."""
    assert encode(gw.MerchData, {}) == b"\x30\x00" == gw.MerchData.load(b"\x30\x00").dump()


def test_raw_is_checked_and_retagged():
    ids = base.TransIDs(trans_ids()).dump()
    value = {"trans_ids": Raw(ids), "rrpid": b"r" * 32, "chall_c2": b"c" * 32}
    assert encode(pu.InqReqData, value) == pu.InqReqData(
        {**value, "trans_ids": base.TransIDs.load(ids)}).dump()
    bci_der = bci().dump()
    data = {"trans_ids": Raw(ids), "rrpid": b"r", "chall_c": b"c", "brand_crl_identifier":
            Raw(bci_der), "p_res_payload_seq": [{"completion_code": "orderReceived"}]}
    assert encode(pu.PResData, data) == pu.PResData({**data, "trans_ids": base.TransIDs.load(ids),
                                                     "brand_crl_identifier": bci()}).dump()
    for bad in (ids[:-1], ids + b"\x00", b"\x04" + ids[1:], b"\x30\x80" + ids[2:], b""):
        with pytest.raises(ValueError):
            encode(pu.InqReqData, {**value, "trans_ids": Raw(bad)})
    with pytest.raises(ValueError):  # CapToken is a ContentInfo: a SEQUENCE
        encode(gw.CapTokenSeq, [Raw(b"\x04\x00")])
    token = enveloped("CapTokenTBE", gw.CapToken).dump()
    assert encode(gw.CapTokenSeq, [Raw(token)]) == gw.CapTokenSeq([gw.CapToken.load(token)]).dump()
    digest = base.DetachedDigest(dd()).dump()
    assert encode(gw.CheckDigests, {"h_oi_data": Raw(digest), "hod2": base.DetachedDigest.load(
        digest)}) == gw.CheckDigests({"h_oi_data": base.DetachedDigest.load(digest),
                                      "hod2": base.DetachedDigest.load(digest)}).dump()


def test_raw_with_a_long_form_length_is_copied_or_reheaded_like_a_loaded_value():
    """Untagged, asn1crypto keeps a loaded value's header; retagged, it writes a minimal one."""
    cls = _seq([("a", core.OctetString), ("b", core.OctetString, {"implicit": 1}),
                ("c", core.OctetString, {"explicit": 2})])
    ber = b"\x04\x81\x01x"
    expected = cls({k: core.OctetString.load(ber) for k in "abc"}).dump()
    assert encode(cls, {k: Raw(ber) for k in "abc"}) == expected == bytes.fromhex(
        "300c04810178810178a203040178")
    assert encode(cls, {k: core.OctetString.load(ber) for k in "abc"}) == expected


@pytest.mark.parametrize("cls,value", [
    (base.CurrencyAmount, {"currency": 978, "amount": 1}),                       # missing field
    (base.CurrencyAmount, {"currency": 978, "amount": 1, "amt_exp10": 0, "x": 1}),  # unknown
    (base.CurrencyAmount, {"currency": "978", "amount": 1, "amt_exp10": 0}),     # wrong type
    (base.Language, 5), (base.Date, datetime(2026, 1, 1)),                       # naive time
    (gw.SpecialProcessing, "nope"), (gw.SpecialProcessing, 9),
    (pu.PReq, ("nope", {})), (pu.PI, {"a": 1, "b": 2}),
    (base.TransIDs, [1, 2]), (base.Thumbprints, {"a": b""}),
])
def test_values_asn1crypto_refuses_are_refused(cls, value):
    refusals = (ValueError, TypeError, AttributeError)  # a list for a SEQUENCE: AttributeError
    with pytest.raises(refusals):
        cls(value).dump() if not issubclass(cls, core.Choice) else cls(name=value).dump()
    with pytest.raises(refusals):
        encode(cls, value)
