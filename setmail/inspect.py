"""Human-readable views of SET mail and SET messages (``setmail decode``, ``setmail mailbox``).

``describe_mail(raw)`` / ``describe_der(der)`` return plain dicts (JSON-ready): the MIME headers,
the SET MessageHeader and the ASN.1 tree.  Encrypted parts (CMS AuthEnvelopedData and
EnvelopedData) are never opened: they show as ``{"encrypted": ...}`` with their recipients,
inner content type and size.  Signed content under a SET content type is decoded with the
class ``PLAINTEXT_TYPES`` names for it.  Byte strings longer than 32 octets are shortened.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from asn1crypto import cms, core
from asn1crypto import x509 as ax509

from setmail.errors import MalformedMessage, SetmailError

MAX_DEPTH = 48


def _bytes(value: bytes) -> str:
    if len(value) <= 32:
        return value.hex()
    return f"{value[:16].hex()}… ({len(value)} bytes)"


def _scalar(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return _bytes(bytes(value))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _scalar(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_scalar(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def _recipients(infos) -> list[str]:
    out = []
    for info in infos:
        chosen = info.chosen
        rid = chosen["rid"] if "rid" in [f[0] for f in chosen._fields] else None
        if rid is None:
            out.append(info.name)
        elif rid.name == "issuer_and_serial_number":
            isn = rid.chosen
            out.append(f"{isn['issuer'].human_friendly} serial {isn['serial_number'].native:x}")
        else:
            out.append(f"key id {_bytes(rid.chosen.native)}")
    return out


def _encrypted(value) -> dict:
    fields = [f[0] for f in value._fields]
    eci = value["auth_encrypted_content_info" if "auth_encrypted_content_info" in fields
                else "encrypted_content_info"]
    content = eci["encrypted_content"].native or b""
    ctype = eci["content_type"].dotted
    from setmail.asn1.oids import CONTENT_TYPE_NAMES
    return {"encrypted": {
        "kind": type(value).__name__,
        "recipients": _recipients(value["recipient_infos"]),
        "content_type": CONTENT_TYPE_NAMES.get(ctype, eci["content_type"].native),
        "algorithm": eci["content_encryption_algorithm"]["algorithm"].native,
        "size": len(content)}}


def _certificate(value: ax509.Certificate) -> dict:
    tbs = value["tbs_certificate"]
    return {"certificate": {
        "subject": tbs["subject"].human_friendly, "issuer": tbs["issuer"].human_friendly,
        "serial": f"{tbs['serial_number'].native:x}",
        "not_before": tbs["validity"]["not_before"].native.isoformat(),
        "not_after": tbs["validity"]["not_after"].native.isoformat()}}


def _signed_content(info) -> Any:
    from setmail.asn1.oids import CONTENT_TYPE_NAMES
    from setmail.asn1.wrapper import PLAINTEXT_TYPES
    ctype = info["content_type"].dotted
    name = CONTENT_TYPE_NAMES.get(ctype, info["content_type"].native)
    content = info["content"]
    if content.native is None:
        return {"content_type": name, "content": None}
    raw = content.native if isinstance(content.native, bytes) else content.contents
    cls = PLAINTEXT_TYPES.get(name)
    if cls is not None:
        try:
            return {"content_type": name, "content": tree(cls.load(raw))}
        except Exception:
            pass
    return {"content_type": name, "content": _bytes(raw)}


def tree(value: Any, depth: int = 0) -> Any:
    """A readable JSON-able rendering of an asn1crypto value."""
    if depth > MAX_DEPTH:
        return "…"
    try:
        if isinstance(value, (cms.AuthEnvelopedData, cms.EnvelopedData)):
            return _encrypted(value)
        if isinstance(value, ax509.Certificate):
            return _certificate(value)
        if isinstance(value, ax509.Name):
            return value.human_friendly
        if isinstance(value, cms.EncapsulatedContentInfo):
            return _signed_content(value)
        if isinstance(value, cms.ContentInfo):
            return {"content_type": value["content_type"].native,
                    "content": tree(value["content"], depth + 1)}
        if isinstance(value, core.Choice):
            return {value.name: tree(value.chosen, depth + 1)}
        if isinstance(value, (core.Sequence, core.Set)):
            out = {}
            for name, *_ in value._fields:
                child = value[name]
                if isinstance(child, core.Void) or child.native is None:
                    continue
                out[name] = tree(child, depth + 1)
            return out
        if isinstance(value, (core.SequenceOf, core.SetOf)):
            return [tree(child, depth + 1) for child in value]
        if isinstance(value, core.ParsableOctetString):
            try:
                return tree(value.parsed, depth + 1)
            except Exception:
                return _bytes(value.native)
        if isinstance(value, core.Any):
            try:
                return tree(value.parsed, depth + 1)
            except Exception:
                return _bytes(value.dump())
        if isinstance(value, core.ObjectIdentifier):
            from setmail.asn1.oids import CONTENT_TYPE_NAMES
            return CONTENT_TYPE_NAMES.get(value.dotted, value.native)
        return _scalar(value.native)
    except Exception as exc:  # a view must never crash on hostile bytes
        return f"<cannot render: {type(exc).__name__}: {exc}>"


def describe_der(der: bytes) -> dict:
    """MessageWrapper DER -> {message_type, message_header, message, mw_extensions}."""
    from setmail.asn1.wrapper import decode_wrapper, message_body, message_type
    wrapper = decode_wrapper(der)
    mtype = message_type(wrapper)
    out = {"message_type": mtype, "size": len(der),
           "message_header": tree(wrapper["message_header"]),
           "message": tree(message_body(wrapper))}
    if wrapper["mw_extensions"].native is not None:
        out["mw_extensions"] = tree(wrapper["mw_extensions"])
    return out


def describe_mail(raw: bytes, *, max_size: int = 1 << 20) -> dict:
    """A stored mail -> {headers, set: describe_der(...)} ; a broken part is reported, not raised."""
    from setmail.mail.mime import parse_mail
    out: dict[str, Any] = {"size": len(raw)}
    try:
        mail = parse_mail(raw, max_size=max_size)
    except SetmailError as exc:
        out["error"] = f"not a SET mail: {type(exc).__name__}: {exc}"
        head = raw.split(b"\n\n", 1)[0][:4096].decode("utf-8", "replace")
        out["headers"] = [line for line in head.splitlines() if line][:40]
        return out
    out["headers"] = {k: v for k, v in mail.headers}
    out["content_type"] = mail.content_type
    try:
        out["set"] = describe_der(mail.der)
    except SetmailError as exc:
        out["error"] = f"SET message does not decode: {type(exc).__name__}: {exc}"
    return out


def render_text(info: dict) -> str:
    """The dict as indented text (YAML-like, readable in a terminal)."""
    lines: list[str] = []

    def walk(value: Any, indent: int) -> None:
        pad = "  " * indent
        items = value.items() if isinstance(value, dict) else (("-", v) for v in value)
        for key, item in items:
            label = f"{pad}{key}:" if isinstance(value, dict) else f"{pad}-"
            if isinstance(item, (dict, list)) and item:
                lines.append(label)
                walk(item, indent + 1)
            else:
                lines.append(f"{label} {item}" if not isinstance(item, (dict, list))
                             else f"{label} {item!r}")

    walk(info, 0)
    return "\n".join(lines)


def describe_file(path: str | Path, as_json: bool = False) -> str:
    """``setmail decode``: a DER MessageWrapper or a mail file, as text or JSON."""
    data = Path(path).read_bytes()
    if data[:1] == b"\x30":
        info = describe_der(data)
    else:
        info = describe_mail(data)
        if "set" not in info and "error" in info:
            raise MalformedMessage(info["error"])
    return json.dumps(info, indent=2, ensure_ascii=False) if as_json else render_text(info)
