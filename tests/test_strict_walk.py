"""strict.decode's DER walker (D-126) against the decoder it replaced (tests/strict_reference.py,
a frozen copy: asn1crypto parse, force every value, re-encode and compare).

Differential: every sample and vector message and plaintext (and a bench world's mails when
``SETMAIL_DECODE_MAILDIRS`` names Maildirs) is accepted by both, in both modes; and on thousands
of mutations (bit flips, byte inserts and deletes, length and tag changes, truncations, elements
added, dropped, duplicated or swapped inside constructed values with lengths fixed up, DEFAULT
values encoded, primitive contents made non-DER) the walker never accepts what the reference
refuses.  Where the walker refuses what the reference accepted, the refusal must be one of the
documented tightenings below (docs/deviations.md, D-126):

* ONE_RULE: the reference's two modes differed (``canonical=False`` parsed without re-encoding,
  ``canonical=True`` re-encoded without forcing every value); the walker applies both in both
  modes, so it refuses whatever either mode refused.
* YEAR_0: a GeneralizedTime in year 0000 (asn1crypto reads it as its ``extended_datetime``); SET
  dates are real dates.

One refusal of the reference is not a rule but an asn1crypto 1.5 bug, and the oracle here is the
reference without it (``honest_lengths``): asn1crypto takes any header whose last octet is 0x80
(a definite length of 128, 0x180, 0x280...) for an indefinite length and re-encodes that whole
value when it is dumped, parsing even the opaque ContentInfo layers below it.  The reference's
verdict thus depended on lengths; the walker keeps those layers opaque whatever their length
(``crypto.reader`` parses them strictly when a role opens them).
"""
from __future__ import annotations

import contextlib
import os
import random
import re
from pathlib import Path

import pytest
from asn1crypto import core, parser, x509

from setmail.asn1 import certext, gateway, oids
from setmail.asn1.codec import plan, walk
from setmail.asn1.codec.strict import decode
from setmail.asn1.wrapper import PLAINTEXT_TYPES, MessageWrapper
from setmail.errors import MalformedMessage, MessageTooLarge
from setmail.vectors import samples
from tests import strict_reference as reference

TIGHTENINGS = {"YEAR_0": r"GeneralizedTime before year 1000"}
#: certificate extensions setmail decodes (setmail.pki.setext), by OID
EXTENSIONS = {oids.CERTIFICATE_TYPE: certext.CertificateType, oids.HASHED_ROOT_KEY:
              certext.HashedRootKey, oids.MERCHANT_DATA: certext.MerchantData,
              oids.CARD_CERT_REQUIRED: certext.CardCertRequired, oids.TUNNELING: certext.Tunneling}


def outcome(fn, cls, data: bytes, canonical: bool) -> str | None:
    """None if ``fn`` decodes ``data`` as ``cls``, else its error."""
    try:
        fn(cls, data, canonical=canonical)
    except (MalformedMessage, MessageTooLarge) as exc:
        return str(exc) or "refused"
    return None


def oracle(cls, data: bytes, canonical: bool) -> str | None:
    """The reference's verdict, from a fresh state: its memo of subtrees parsed (or found
    canonical) is shared by its two modes, so its verdict could depend on what it saw before."""
    reference._SEEN.clear()
    reference._CHECKED.clear()
    with honest_lengths():
        return outcome(reference.decode, cls, data, canonical)


def compare(cls, data: bytes, canonical: bool) -> str | None:
    """A fault in the walker's verdict on ``data``, or None if it is allowed."""
    mine = outcome(decode, cls, data, canonical)  # any other exception fails the test
    theirs = oracle(cls, data, canonical)
    if mine is None:
        return None if theirs is None else f"accepted what the reference refuses: {theirs}"
    if theirs is not None or oracle(cls, data, not canonical) is not None:
        return None  # ONE_RULE (or both refuse)
    if any(re.search(pattern, mine) for pattern in TIGHTENINGS.values()):
        return None
    return f"refused what the reference accepts, without a documented reason: {mine}"


class _Definite(bytes):
    """A header whose last octet 0x80 ends a definite length: ``[-1:]`` hides it from
    asn1crypto's indefinite-length test (``_header[-1:] == b"\\x80"``)."""

    def __getitem__(self, key):
        return b"" if key == slice(-1, None) else bytes.__getitem__(self, key)


@contextlib.contextmanager
def honest_lengths():
    """The reference decoder without asn1crypto's 0x80-length bug (see the module docstring)."""
    original = core._build

    def build(*args, **kwargs):
        value = original(*args, **kwargs)
        header = getattr(value, "_header", None)
        if header and header[-1] == 0x80 and _definite(header):
            value._header = _Definite(header)
        return value
    core._build = build
    try:
        yield
    finally:
        core._build = original


def _definite(header: bytes) -> bool:
    """Whether an asn1crypto header (possibly several, explicit tags first) is definite: its
    last length octet is 0x80 only as part of a long-form length."""
    pos = 0
    while pos < len(header):
        pos += 1
        if header[pos - 1] & 0x1F == 0x1F:
            while header[pos] & 0x80:
                pos += 1
            pos += 1
        if header[pos] == 0x80:
            return False
        pos += 1 + (header[pos] & 0x7F if header[pos] & 0x80 else 0)
    return True


# --- corpus --------------------------------------------------------------------------------------
def _sample_corpus() -> list[tuple[str, type, bytes]]:
    out = []
    for name, build in samples.MESSAGE_SAMPLES.items():
        out.append((f"wrapper {name}", MessageWrapper, samples.wrapper_for(name, build()).dump()))
    for label, (name, build) in samples.MESSAGE_VARIANTS.items():
        out.append((f"wrapper {label}", MessageWrapper, samples.wrapper_for(name, build()).dump()))
    for name, cls in PLAINTEXT_TYPES.items():
        out.append((f"plaintext {name}", cls, samples.plaintext_sample(name).dump()))
    out.append(("BrandCRLIdentifier", certext.BrandCRLIdentifier, samples.bci().dump()))
    return out


def _vector_corpus() -> list[tuple[str, type, bytes]]:
    from setmail.vectors.build import build_vectors  # noqa: PLC0415  (slow: a whole PKI)
    vs = build_vectors()
    out = [(f"vector {name}", MessageWrapper, der) for name, der in vs.messages.items()]
    for name, entry in vs.manifest.items():
        for layer in entry["layers"]:
            if "content_file" in layer:
                out.append((f"vector {layer['content_file']}", PLAINTEXT_TYPES[layer["content_type"]],
                            vs.extra_files[layer["content_file"]]))
    out.append(("vector bci.der", certext.BrandCRLIdentifier, vs.pki["bci.der"]))
    for name, pem in vs.pki.items():
        if name.endswith(".cert.pem"):
            cert = x509.Certificate.load(_pem_der(pem))
            for ext in cert["tbs_certificate"]["extensions"]:
                cls = EXTENSIONS.get(ext["extn_id"].dotted)
                if cls is not None:
                    out.append((f"vector {name} {cls.__name__}", cls, ext["extn_value"].contents))
    return out


def _pem_der(pem: bytes) -> bytes:
    from asn1crypto import pem as asn1_pem  # noqa: PLC0415
    return asn1_pem.unarmor(pem)[2]


def _maildir_corpus() -> list[tuple[str, type, bytes]]:
    """Wrappers of a real world's mails, e.g. ``./scripts/bench purchases 5 --keep`` then
    SETMAIL_DECODE_MAILDIRS=/tmp/setmail-bench-*/world/mailboxes."""
    from setmail.mail.mime import parse_mail  # noqa: PLC0415
    out = []
    for root in filter(None, os.environ.get("SETMAIL_DECODE_MAILDIRS", "").split(os.pathsep)):
        for path in sorted(Path(root).glob("*/cur/*")):
            out.append((f"mail {path.name}", MessageWrapper,
                        parse_mail(path.read_bytes(), max_size=1 << 22).der))
    return out


@pytest.fixture(scope="module")
def corpus():
    return _sample_corpus() + _vector_corpus() + _maildir_corpus()


# --- mutations -----------------------------------------------------------------------------------
def _tree(data: bytes) -> list:
    """[tag octets, children (list) or contents (bytes)] for every TLV of DER ``data``."""
    nodes, pos = [], 0
    while pos < len(data):
        (_, method, _, header, contents, _), end = parser._parse(data, len(data), pos)
        tag_len = 1
        if data[pos] & 0x1F == 0x1F:
            while data[pos + tag_len] & 0x80:
                tag_len += 1
            tag_len += 1
        nodes.append([data[pos:pos + tag_len], _tree(contents) if method else contents])
        pos = end
    return nodes


def _dump(nodes: list) -> bytes:
    out = b""
    for tag, body in nodes:
        body = body if isinstance(body, bytes) else _dump(body)
        out += tag + _length(len(body)) + body
    return out


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _all(nodes: list, out: list) -> list:
    """Every [tag, body] node with the list holding it, depth first."""
    for node in nodes:
        out.append((nodes, node))
        if not isinstance(node[1], bytes):
            _all(node[1], out)
    return out


CANDIDATES = [b"\x05\x00", b"\x02\x01\x00", b"\x02\x01\x0c", b"\x01\x01\x00", b"\x01\x01\xff",
              b"\x04\x00", b"\x30\x00", b"\x31\x00", b"\xa0\x00", b"\x0c\x00", b"\xa0\x02\x05\x00",
              b"\x06\x03\x2a\x03\x04"] + [bytes([0x80 | n, 1, v]) for n in range(8) for v in (0, 0xFF)]
CONTENTS = {  # non-DER or odd contents per universal tag
    0x02: [b"", b"\x00\x01", b"\xff\xff", b"\x00", b"\x7f" * 9],
    0x01: [b"\x01", b"", b"\x00\x00"], 0x05: [b"\x00"], 0x06: [b"", b"\x80\x01", b"\x2a\x83"],
    0x03: [b"", b"\x08\x00", b"\x01\xff", b"\x00", b"\x03\xf8", b"\x00\x80\x00"],
    0x0A: [b"", b"\x00\x01", b"\x63", b"\xff"],
    0x18: [b"20261127120000.0Z", b"20261127120000+0000", b"20261127120000", b"202611271200Z",
           b"20261127120000,5Z", b"20261127240000Z", b"00000101000000Z", b"09990101000000Z",
           b"20261127120000.5Z", b"20261127120000.500Z", b"20260229120000Z", b"20261127120000Z\n"],
    0x0C: [b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok"], 0x16: [b"\x80", b"ok"],
    0x13: [b"\x00", b"*"], 0x12: [b"x", b"1 2"], 0x1A: [b"\x7f", b"\xe9"],
}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation of DER ``data`` (lengths fixed up for structural ones)."""
    kind = rng.randrange(12)
    if kind == 0:  # bit flip
        pos = rng.randrange(len(data))
        return data[:pos] + bytes([data[pos] ^ 1 << rng.randrange(8)]) + data[pos + 1:]
    if kind == 1:  # byte inserted or deleted
        pos = rng.randrange(len(data))
        return data[:pos] + (bytes([rng.randrange(256)]) if rng.random() < .5 else b"") + \
            data[pos + (rng.random() < .5):]
    if kind == 2:  # truncated
        return data[:rng.randrange(len(data))]
    tree = _tree(data)
    nodes = _all(tree, [])
    holder, node = rng.choice(nodes)
    constructed = [n for n in nodes if not isinstance(n[1][1], bytes)]
    if kind == 3 and constructed:  # an element inserted (appended, DEFAULT encoded, optional)
        children = rng.choice(constructed)[1][1]
        extra = rng.choice(CANDIDATES) if rng.random() < .7 else _dump([rng.choice(nodes)[1]])
        children.insert(rng.randrange(len(children) + 1), _tree(extra)[0])
    elif kind == 4:  # dropped
        holder.remove(node)
    elif kind == 5:  # duplicated
        holder.insert(holder.index(node), [node[0], node[1]])
    elif kind == 6:  # swapped with the next
        i = holder.index(node)
        if i + 1 < len(holder):
            holder[i], holder[i + 1] = holder[i + 1], holder[i]
    elif kind in (7, 8):  # tag changed: class, number or constructed bit
        first = node[0][0]
        node[0] = bytes([rng.choice([first ^ 0x20, first ^ 0x80, first ^ 0x40, first ^ 0xC0,
                                     (first & 0xE0) | ((first & 0x1F) + 1) % 31,
                                     (first & 0xE0) | ((first & 0x1F) - 1) % 31])]) + node[0][1:]
        if node[0][0] & 0x20 and isinstance(node[1], bytes):
            node[1] = _reparse(node[1])
        elif not node[0][0] & 0x20 and not isinstance(node[1], bytes):
            node[1] = _dump(node[1])
    elif kind == 9:  # primitive contents made odd
        leaves = [n for n in nodes if isinstance(n[1][1], bytes)]
        leaf = rng.choice(leaves)[1] if leaves else node
        options = CONTENTS.get(leaf[0][0]) or [b"", leaf[1] + b"\x00", b"\x80" + leaf[1]]
        leaf[1] = rng.choice(options)
    elif kind == 10:  # a length made non-minimal (long form)
        return _long_form(data, rng)
    else:  # a length off by one, parents fixed up
        leaves = [n for n in nodes if isinstance(n[1][1], bytes) and n[1][1]]
        if leaves:
            leaf = rng.choice(leaves)[1]
            leaf[1] = leaf[1][:-1] if rng.random() < .5 else leaf[1] + leaf[1][-1:]
    return _dump(tree)


def _reparse(body: bytes):
    try:
        return _tree(body)
    except Exception:
        return body


def _long_form(data: bytes, rng: random.Random) -> bytes:
    """The first short length at or after a random offset written as 0x81 nn."""
    for pos in range(rng.randrange(len(data)), len(data) - 1):
        if data[pos + 1] < 0x80 and data[pos] in (0x02, 0x04, 0x30, 0x31, 0xA0, 0x80):
            return data[:pos + 1] + b"\x81" + data[pos + 1:]
    return data


# --- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("canonical", [True, False])
def test_corpus_is_accepted_exactly_as_before(corpus, canonical):
    for label, cls, data in corpus:
        assert oracle(cls, data, canonical) is None, label
        assert outcome(decode, cls, data, canonical) is None, label
        assert decode(cls, data, canonical=canonical).dump() == data, label


def test_mutations_are_never_accepted_beyond_the_reference(corpus):
    rng, faults, checked = random.Random(int(os.environ.get("SETMAIL_MUTATION_SEED", 126))), [], 0
    for label, cls, data in corpus:
        for _ in range(int(os.environ.get("SETMAIL_MUTATIONS", 20))):
            try:
                bad = mutate(data, rng)
            except Exception:  # the tree helpers met their own limits: skip this draw
                continue
            if bad == data:
                continue
            for canonical in (True, False):
                fault = compare(cls, bad, canonical)
                checked += 1
                if fault:
                    faults.append(f"{label} canonical={canonical} {bad.hex()}: {fault}")
                    if os.environ.get("SETMAIL_MUTATION_DUMP"):
                        with open(os.environ["SETMAIL_MUTATION_DUMP"], "a") as out:
                            out.write(f"{cls.__module__} {cls.__qualname__} {int(canonical)} "
                                      f"{bad.hex()} {label!r}\n")
    assert checked > 2000, checked
    print(f"{checked} verdicts on mutations of {len(corpus)} values")
    assert not faults, "\n".join(faults[:20])


# --- rules, one by one: what the walker refuses, and what the reference said --------------------
def _swap(der: bytes, old: bytes, new: bytes) -> bytes:
    """``der`` with the TLV ``old`` (found anywhere inside) replaced by ``new``, lengths fixed."""
    tree = _tree(der)
    for holder, node in _all(tree, []):
        if _dump([node]) == old:
            holder[holder.index(node)] = _tree(new)[0]
            return _dump(tree)
    raise AssertionError(f"{old.hex()} not in {der.hex()}")


def _find(der: bytes, first_octet: int, contents: bytes | None = None) -> bytes:
    """The first TLV (depth first) with this identifier octet (and these contents)."""
    for _, node in _all(_tree(der), []):
        if node[0][0] == first_octet and (contents is None or node[1] == contents):
            return _dump([node])
    raise AssertionError(f"no {first_octet:02x} in {der.hex()}")


def _bci(name: x509.Name | None = None, extensions: x509.Extensions | None = None) -> bytes:
    bci = samples.bci()
    if name is not None:
        bci["tbs"]["crl_identifier_seq"][0]["issuer"] = name
    if extensions is not None:
        bci["tbs"]["extensions"] = extensions
    return bci.dump(force=True)


def _rules() -> list:
    """(label, class, good DER, bad DER, the reference's verdict on bad: "both" modes refuse,
    only "canonical" refuses, "none")."""
    req = samples.batch_admin_req_data().dump()
    err = samples.error_tbs().dump()
    date, oid = _find(req, 0x18), _find(err, 0x80)
    rdn = x509.RelativeDistinguishedName([
        {"type": "common_name", "value": x509.DirectoryString(name="utf8_string", value="CCA")},
        {"type": "organization_name", "value": x509.DirectoryString(name="utf8_string",
                                                                    value="Visa")}])
    two = _bci(name=x509.Name(name="", value=x509.RDNSequence([rdn])))
    set_of = _find(two, 0x31)
    first, second = (_dump([n]) for n in _tree(set_of)[0][1])
    aki = x509.Extensions([{"extn_id": "authority_key_identifier", "critical": False,
                            "extn_value": {"key_identifier": b"\x01" * 20}}])
    with_aki = _bci(extensions=aki)
    aki_value = x509.AuthorityKeyIdentifier({"key_identifier": b"\x01" * 20}).dump()
    ca = samples.cert_req_data().dump()
    rsa = _find(ca, 0x03)  # the RSA public key BIT STRING, parsed by asn1crypto (a Fallback)
    key = rsa[rsa.index(b"\x00\x30") + 1:]
    modulus = _find(key, 0x02)  # 02 82 01 01 00 80 ...: one more leading zero is not minimal
    key = _swap(key, modulus, b"\x02" + _length(len(modulus) - 3) + b"\x00" + modulus[4:])
    admin = type(samples.batch_admin_req_data())
    edits = [  # (label, a TLV of req, what replaces it, the reference's verdict)
        ("implicit INTEGER not minimal", b"\x80\x01\x05", b"\x80\x02\x00\x05", "canonical"),
        ("implicit BOOLEAN 01", b"\x83\x01\xff", b"\x83\x01\x01", "canonical"),
        ("DEFAULT value encoded", b"\x83\x01\xff", b"\x83\x01\x00", "canonical"),
        ("ENUMERATED value not defined", b"\x82\x01\x01", b"\x82\x01\x09", "both"),
        ("NULL with contents", b"\x05\x00", b"\x05\x01\x00", "canonical"),
        ("UTF8String not UTF-8", b"\x0c\x04Visa", b"\x0c\x04Vis\xff", "both"),
        ("GeneralizedTime with an offset", date, b"\x18\x13" + date[2:16] + b"+0000",
         "canonical"),
        ("GeneralizedTime in year 0000", date, b"\x18\x0f0000" + date[6:], "none"),
    ]
    return [(label, admin, req, _swap(req, old, new), verdict)
            for label, old, new, verdict in edits] + [
        ("element after the last field", admin, req,
         req[:1] + _length(len(req) - 4 + 2) + req[4:] + b"\x05\x00",
         "canonical"),
        ("implicit OBJECT IDENTIFIER not minimal", type(samples.error_tbs()), err,
         _swap(err, oid, b"\x80" + _length(len(oid) - 1) + oid[2:3] + b"\x80" + oid[3:]),
         "canonical"),
        ("SET OF out of DER order", certext.BrandCRLIdentifier, two,
         _swap(two, set_of, b"\x31" + _length(len(set_of) - 2) + second + first), "canonical"),
        ("OCTET STRING holding more than its one value", certext.BrandCRLIdentifier, with_aki,
         _swap(with_aki, _find(with_aki, 0x04, aki_value),
               b"\x04" + _length(len(aki_value) + 2) + aki_value + b"\x05\x00"), "canonical"),
        ("named bit list with a trailing zero bit", certext.CertificateType, b"\x03\x02\x07\x80",
         b"\x03\x02\x00\x80", "canonical"),
        ("named bit list with a bit that has no name", certext.CertificateType,
         b"\x03\x02\x07\x80", b"\x03\x03\x05\x80\x20", "canonical"),
        ("non-minimal INTEGER inside a public key (asn1crypto judges)", type(samples.cert_req_data()),
         ca, _swap(ca, rsa, b"\x03" + _length(len(key) + 1) + b"\x00" + key),
         "canonical"),
    ]


def test_rules_refuse_what_the_reference_refused_in_some_mode():
    for label, cls, good, bad, theirs in _rules():
        for canonical in (True, False):
            assert outcome(decode, cls, good, canonical) is None, label
            assert outcome(decode, cls, bad, canonical) is not None, label
            verdict = oracle(cls, bad, canonical)
            refused = {"both": True, "canonical": canonical, "none": False}[theirs]
            assert (verdict is not None) == refused, (label, canonical, verdict)


class Odd(core.Sequence):
    """A class with a parsing method of its own: the walker must not model it."""

    _fields = [("n", core.Integer), ("tag", core.OctetString, {"implicit": 0, "optional": True})]

    def _parse_children(self, recurse=False):
        return super()._parse_children(recurse)


class Holder(core.Sequence):
    _fields = [("odd", Odd), ("s", core.UTF8String)]


@pytest.mark.parametrize("canonical", [True, False])
def test_types_the_walker_does_not_model_are_judged_by_asn1crypto(canonical):
    assert isinstance(plan.root(Odd), walk.Fallback)
    assert isinstance(plan.root(Holder).fields[0][3].__self__, walk.Fallback)
    good = bytes.fromhex("30050201058000")
    assert decode(Odd, good, canonical=canonical)["n"].native == 5
    assert decode(Holder, b"\x30\x0b" + good + b"\x0c\x02ok", canonical=canonical).native == \
        {"odd": {"n": 5, "tag": b""}, "s": "ok"}
    for bad in ("3006020200058000", "300702010580000500", "30050201058100", "3005020105a000"):
        with pytest.raises(MalformedMessage):
            decode(Odd, bytes.fromhex(bad), canonical=canonical)
        with pytest.raises(MalformedMessage):
            decode(Holder, b"\x30" + bytes([len(bad) // 2 + 4]) + bytes.fromhex(bad) + b"\x0c\x02ok",
                   canonical=canonical)


def test_decoded_value_is_the_lazy_asn1crypto_value():
    der = samples.auth_req_data().dump()
    value = decode(gateway.AuthReqData, der, canonical=False)
    assert isinstance(value, gateway.AuthReqData) and value.dump() == der
    assert value.native == reference.decode(gateway.AuthReqData, der).native
