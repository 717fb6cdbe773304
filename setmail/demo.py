"""``./scripts/demo``: a SET purchase request, and what the merchant and the gateway each see.

Builds a certificate hierarchy, certifies a cardholder, a merchant and a payment gateway, has the
cardholder build a dual-signed purchase request (PReq), then verifies it twice: as the merchant
(order in clear, card sealed) and as the gateway (card in clear, order only as a digest).  Exits 0
when every check holds.
"""
from __future__ import annotations

import datetime as dt
import sys

from setmail.asn1 import purchase as pu
from setmail.asn1.base import MessageHeader
from setmail.asn1.oids import PROFILE_MODERN_2026
from setmail.asn1.wrapper import decode_wrapper, make_wrapper, message_type
from setmail.crypto import dual
from setmail.crypto.operators import DD
from setmail.crypto.suite import DEFAULT_SUITE as SUITE, fresh
from setmail.pki.thumbs import thumbprint
from setmail.pki.validate import validate_path
from setmail.roles import purchase_msgs as pm
from setmail.vectors import EXPIRY, PAN, Parties



def _say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    _say("setmail demo — a SET 1.0 purchase request with modern cryptography\n")
    _say("1. PKI: Root → Visa Brand CA → Cardholder / Merchant / Payment Gateway CAs")
    cast = Parties(SUITE, now, card_secret=fresh())
    tree, trust = cast.tree, cast.tree.trust_store()
    alice, gateway = cast.cardholder, cast.gateway_kex
    gw_kex_cert, card_secret = gateway.cert, cast.card_secret
    _say(f"   cardholder certificate subject: {alice.cert.subject.rfc4514_string()}")
    _say("   (a keyed hash of PAN and expiry — the card number itself is not in the certificate)\n")

    order = pm.Order("1 blue teapot, gift-wrapped, to 742 Evergreen Terrace", 1234)
    _say(f"2. Cardholder builds PReq: order '{order.description}', amount {order.display()}")
    xid, od_salt = fresh(), fresh()
    tids = pm.trans_ids(lid_c=b"alice-0001", xid=xid, p_req_date=now)
    hod = pm.hod(order, od_salt)
    oi = pm.oi_data(trans_ids_der=tids, rrpid=fresh(), chall_c=fresh(), hod_dd=hod, od_salt=od_salt,
                    brand_id="Visa", bin_=PAN[:8], chall_m=fresh())
    head = pm.pi_head(trans_ids_der=tids, hod_dd=hod, order=order, merchant_id=Parties.MER_ID,
                      trans_stain_=pm.trans_stain(xid, card_secret), sw_ident="setmail/0.1",
                      pe_thumb=thumbprint(gw_kex_cert))
    pan = pm.pan_data(pan=PAN, expiry=EXPIRY, pan_secret=cast.pan_secret, ex_nonce=fresh())
    signed = dual.dual_sign(alice, gateway.cert, head, oi, pan)
    header = MessageHeader({"version": 1, "date": now, "message_ids": {"lid_c": b"alice-0001", "xid": xid},
                            "sw_ident": "setmail/0.1"})
    p_req = pu.PReq(name="p_req_dual_signed", value=pu.PReqDualSigned.load(signed.p_req_dual_signed))
    wire = make_wrapper(header, "PReq", p_req,
                        [{"ext_id": PROFILE_MODERN_2026, "ext_value": b"\x05\x00"}]).dump()
    _say(f"   MessageWrapper: {len(wire)} bytes DER; dual signature by the cardholder, "
         f"PI sealed for the gateway (EX, PAN in the OAEP block)\n")

    def validate_card(signer, included):
        validate_path(signer, [*included, *tree.cca.chain], trust, now=now, expected_type="card",
                      key_usage="digital_signature")

    # --- the merchant --------------------------------------------------------------------------
    received = decode_wrapper(wire)
    assert message_type(received) == "PReq"
    body = received["message"].chosen.chosen  # PReq -> PReqDualSigned
    pi_ds, oi_ds = body["pi_dual_signed"].dump(), body["oi_dual_signed"].dump()
    mview = dual.merchant_verify(pi_ds, oi_ds, validate=validate_card)
    oi_fields = pu.OIData.load(mview.oi_data)
    ok_hod = oi_fields["hod"].dump() == pm.hod(order, oi_fields["od_salt"].native)
    _say("3. The merchant's view (after verifying the dual signature and the cardholder's chain):")
    _say(f"   XID {oi_fields['trans_ids']['xid'].native.hex()[:16]}…, brand {oi_fields['brand_id'].native}, "
         f"BIN {oi_fields['bin'].native}")
    _say(f"   order + amount it agreed on match HOD: {ok_hod}")
    _say(f"   PAN visible to the merchant: {PAN.encode() in wire} (only the gateway can open the PI)\n")

    # --- the gateway ---------------------------------------------------------------------------
    gview = dual.gateway_verify(pi_ds, gateway, h_oi_data=DD("OIData", oi_fields.dump()),
                                validate=validate_card)
    head_f, pan_f = pu.PIHead.load(gview.pi_head), pu.PANData.load(gview.pan_data)
    gw_sees = gview.pi_head + gview.pan_data + gview.h_oi_data
    amount = head_f["inputs"]["purch_amt"].native
    _say("4. The gateway's view (after opening the PI and verifying the same dual signature):")
    _say(f"   card {pm.mask_pan(pan_f['pan'].native)} expiring {pan_f['card_expiry'].native}, "
         f"merchant {head_f['merchant_id'].native}, amount {amount['amount']} × 10^{amount['amt_exp10']} "
         f"(currency {amount['currency']})")
    _say(f"   PIHead names this gateway: {head_f['pe_thumb'].native == thumbprint(gw_kex_cert)}")
    _say(f"   order description visible to the gateway: {order.description.encode() in gw_sees} "
         "(it holds only DD(OIData) and HOD)")
    checks = [ok_hod, PAN.encode() not in wire, order.description.encode() not in gw_sees,
              head_f["pe_thumb"].native == thumbprint(gw_kex_cert)]
    _say("\nall checks passed" if all(checks) else "\nA CHECK FAILED")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
