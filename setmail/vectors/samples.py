"""Representative values of every SET message and plaintext type, optional fields filled.

Used by the ASN.1 round-trip tests (as placeholders) and by ``setmail vectors`` (which puts real
crypto around the plaintexts).

Crypto-produced layers are placeholders shaped like the real thing (SignedData, AuthEnvelopedData,
DigestedData); nothing here is signed or encrypted.  ``MESSAGE_SAMPLES``/``PLAINTEXT_SAMPLES`` map
the registry names (``MESSAGE_TYPES``/``PLAINTEXT_TYPES`` keys) to builders.
"""
from __future__ import annotations

from datetime import datetime, timezone

from asn1crypto import cms, x509

from setmail.asn1 import capture as cap
from setmail.asn1 import certext, certmsgs as cm, error, gateway as gw, purchase as pu
from setmail.asn1 import issuer as iss
from setmail.asn1 import statement as st
from setmail.asn1.oids import PROFILE_MODERN_2026, ct
from setmail.asn1.pkcs7plus import GCMParameters
from setmail.asn1.wrapper import make_wrapper

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def octets(tag: int, n: int = 32) -> bytes:
    return bytes([tag]) * n


# --- crypto-shaped placeholders ------------------------------------------------------------------
def dd(name: str = "OIData") -> dict:
    """DD(t) for content type ``name``: a DigestedData without content."""
    return {"version": "v2", "digest_algorithm": {"algorithm": "sha256"},
            "encap_content_info": {"content_type": ct(name)}, "digest": octets(0xDD)}


def signed(name: str, content: bytes | None = b"\x30\x00", cls=cms.ContentInfo):
    """S(s,t) (or SO when ``content`` is None) shape, eContentType = ``name``."""
    encap = {"content_type": ct(name)}
    if content is not None:
        encap["content"] = content
    return cls({"content_type": "signed_data", "content": {
        "version": "v3", "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": encap, "signer_infos": [{
            "version": "v3", "sid": cms.SignerIdentifier(name="subject_key_identifier",
                                                          value=octets(0x5A, 20)),
            "digest_algorithm": {"algorithm": "sha256"},
            "signature_algorithm": {"algorithm": "rsassa_pss"},
            "signature": octets(0x51, 256)}]}})


def enveloped(name: str, cls=cms.ContentInfo):
    """Enc/EX/EXH/EncX shape: AuthEnvelopedData, one RSA-OAEP recipient, AES-256-GCM."""
    issuer = x509.Name.build({"common_name": "Test Gateway"})
    gcm = GCMParameters({"aes_nonce": octets(0x6E, 12)})
    return cls({"content_type": "authenticated_enveloped_data", "content": {
        "version": "v0",
        "recipient_infos": [cms.RecipientInfo(name="ktri", value={
            "version": "v0",
            "rid": {"issuer_and_serial_number": {"issuer": issuer, "serial_number": 7}},
            "key_encryption_algorithm": {"algorithm": "rsaes_oaep"},
            "encrypted_key": octets(0xEE, 256)})],
        "auth_encrypted_content_info": {
            "content_type": ct(name),
            "content_encryption_algorithm": {"algorithm": "aes256_gcm", "parameters": gcm},
            "encrypted_content": octets(0xC1, 48)},
        "mac": octets(0x3A, 16)}})


def data_ci(payload: bytes = b"opaque") -> cms.ContentInfo:
    return cms.ContentInfo({"content_type": "data", "content": payload})


# --- shared components -----------------------------------------------------------------------
def amount(minor: int = 12950) -> dict:
    return {"currency": 978, "amount": minor, "amt_exp10": -2}


def extensions() -> list:
    return [{"ext_id": PROFILE_MODERN_2026, "critical": True, "ext_value": b"\x05\x00"}]


def thumbs() -> dict:
    return {"digest_algorithm": {"algorithm": "sha256"}, "cert_thumbs": [octets(0x71)],
            "crl_thumbs": [octets(0x72)], "brl_thumbs": [octets(0x73)]}


def trans_ids() -> dict:
    return {"lid_c": b"cardholder-1", "lid_m": b"order-42", "xid": octets(0x58),
            "p_req_date": NOW, "pay_sys_id": b"ps-1", "language": "en-GB"}


def rr_tags() -> dict:
    return {"rrpid": octets(0x52), "date": NOW, "mer_term_ids": {
        "merchant_id": "MER-0001", "terminal_id": "T1", "agent_num": 1, "chain_num": 2,
        "store_num": 3}}


def bci() -> certext.BrandCRLIdentifier:
    return certext.BrandCRLIdentifier({
        "tbs": {"version": 0, "sequence_num": 1, "brand_id": "Visa", "not_before": NOW,
                "not_after": NOW, "crl_identifier_seq": [{
                    "issuer": x509.Name.build({"common_name": "Visa CCA"}),
                    "crl_number": 3, "crl_thumb": octets(0x7C)}]},
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": octets(0x51, 256)})


def back_key() -> dict:
    return {"back_alg_id": {"algorithm": "aes256_wrap"}, "back_key": octets(0x4B)}


def install_recur() -> dict:
    return {"install_recur_ind": pu.InstallRecurInd(
        name="recurring", value={"recurring_frequency": 30, "recurring_expiry": NOW}),
        "ir_extensions": extensions()}


def cap_token(name: str = "CapTokenTBE") -> gw.CapToken:
    return enveloped(name, gw.CapToken)


def pan_fields() -> dict:
    return {"pan": "4111111111111111", "card_expiry": "202912", "ex_nonce": octets(0x45)}


def pan_data() -> pu.PANData:
    return pu.PANData(dict(pan_fields(), pan_secret=octets(0x50)))


def pan_token() -> pu.PANToken:
    return pu.PANToken(pan_fields())


def pan_only() -> pu.PANOnly:
    return pu.PANOnly({"pan": "4111111111111111", "ex_nonce": octets(0x45)})


# --- purchase --------------------------------------------------------------------------------
def hod_input() -> pu.HODInput:
    return pu.HODInput({"od": b"1 x teapot", "purch_amt": amount(), "od_salt": octets(0x53),
                        "install_recur_data": install_recur(), "od_extensions": extensions()})


def oi_data() -> pu.OIData:
    return pu.OIData({
        "trans_ids": trans_ids(), "rrpid": octets(0x52), "chall_c": octets(0x43),
        "hod": dd("HODInput"), "od_salt": octets(0x53), "chall_m": octets(0x4D),
        "brand_id": "Visa:Gold", "bin": "41111111", "od_ext_oids": [PROFILE_MODERN_2026],
        "oi_extensions": extensions()})


def pi_head() -> pu.PIHead:
    return pu.PIHead({
        "trans_ids": trans_ids(), "inputs": {"hod": dd("HODInput"), "purch_amt": amount()},
        "merchant_id": "MER-0001", "install_recur_data": install_recur(),
        "trans_stain": octets(0x54), "sw_ident": "setmail/0.1",
        "acq_back_key_data": back_key(), "pi_extensions": extensions(),
        "pe_thumb": octets(0x50)})


def pi_oi_link() -> pu.PI_OILink:
    return pu.PI_OILink({"pi_head": pi_head(), "h_oi_data": dd("OIData")})


def pi_dual_signed() -> pu.PIDualSigned:
    return pu.PIDualSigned({"pi_signature": signed("PI-TBS", None),
                            "ex_pi_data": enveloped("PIDualSignedTBE")})


def pi(kind: str = "pi_dual_signed") -> pu.PI:
    value = pi_dual_signed() if kind == "pi_dual_signed" else enveloped("PIUnsignedTBE")
    return pu.PI(name=kind, value=value)


def p_req(kind: str = "p_req_dual_signed") -> pu.PReq:
    if kind == "p_req_dual_signed":
        return pu.PReq(name=kind, value={
            "pi_dual_signed": pi_dual_signed(),
            "oi_dual_signed": {"oi_data": oi_data(), "h_pi_data": dd("PIData")}})
    return pu.PReq(name=kind, value={
        "pi_unsigned": enveloped("PIUnsignedTBE"),
        "oi_unsigned": {"oi_data": oi_data(), "h_pi_data_unsigned": dd("PIDataUnsigned")}})


def p_init_req() -> pu.PInitReq:
    return pu.PInitReq({
        "rrpid": octets(0x52), "language": "en-GB", "local_id_c": b"cardholder-1",
        "local_id_m": b"order-42", "chall_c": octets(0x43), "brand_id": "Visa",
        "bin": "41111111", "thumbs": thumbs(), "pi_rq_extensions": extensions()})


def p_init_res_data() -> pu.PInitResData:
    return pu.PInitResData({
        "trans_ids": trans_ids(), "rrpid": octets(0x52), "chall_c": octets(0x43),
        "chall_m": octets(0x4D), "brand_crl_identifier": bci(), "pe_thumb": octets(0x50),
        "thumbs": thumbs(), "pi_rs_extensions": extensions()})


def ratio() -> dict:
    return {"numerator": 1, "denominator": 1}


def p_res_data() -> pu.PResData:
    results = {
        "acq_card_msg": enveloped("AcqCardCodeMsgTBE", pu.AcqCardMsg),
        "auth_status": {"auth_date": NOW, "auth_code": "approved", "auth_ratio": ratio(),
                        "curr_conv": {"curr_conv_rate": ratio(), "card_curr": 840}},
        "cap_status": {"cap_date": NOW, "cap_code": "success", "cap_ratio": ratio()},
        "cred_status_seq": [{"credit_date": NOW, "credit_code": "success",
                             "credit_ratio": ratio()}]}
    return pu.PResData({
        "trans_ids": trans_ids(), "rrpid": octets(0x52), "chall_c": octets(0x43),
        "brand_crl_identifier": bci(), "p_res_payload_seq": [{
            "completion_code": "capturePerformed", "results": results,
            "p_rs_extensions": extensions()}]})


def inq_req_data() -> pu.InqReqData:
    return pu.InqReqData({"trans_ids": trans_ids(), "rrpid": octets(0x52),
                          "chall_c2": octets(0x43), "inq_rq_extensions": extensions()})


def acq_card_code_msg() -> pu.AcqCardCodeMsg:
    return pu.AcqCardCodeMsg({"acq_card_code": "callCustomerService", "acq_card_msg_data": {
        "acq_card_text": "Please call us", "acq_card_url": "https://bank.example/",
        "acq_card_phone": "+44 20 0000 0000"}})


# --- authorisation ---------------------------------------------------------------------------
def auth_tags() -> dict:
    return {"auth_rr_tags": rr_tags(), "trans_ids": trans_ids(), "auth_ret_num": 9}


def sale_detail() -> dict:
    return {"batch_id": 5, "batch_sequence_num": 6, "merchant_order_num": "ORD-42",
            "sd_extensions": extensions()}


def auth_req_item() -> dict:
    payload = {
        "subsequent_auth_ind": False, "auth_req_amt": amount(),
        "avs_data": {"street_address": "1 High St", "location": {
            "country_code": 826, "city": "London", "state_province": "LDN",
            "postal_code": "N1 1AA", "location_id": "shop-1"}},
        "special_processing": "directMarketing", "card_suspect": b"\x01",
        "request_card_type_ind": True, "install_recur_data": install_recur(),
        "market_spec_auth_data": gw.MarketSpecAuthData(
            name="hotel", value={"duration": 2, "prestige": 1}),
        "merch_data": {"merch_cat_code": "5732", "merch_group": 1},
        "a_rq_extensions": extensions()}
    return {"auth_tags": auth_tags(), "auth_req_payload": payload, "check_digests": {
        "h_oi_data": dd("OIData"), "hod2": dd("HODInput")}}


def auth_req_data() -> gw.AuthReqData:
    return gw.AuthReqData({"auth_req_item": auth_req_item(), "m_thumbs": thumbs(),
                           "capture_now": True, "sale_detail": sale_detail()})


def cap_res_payload() -> dict:
    return {"cap_code": "success", "cap_amt": amount(), "batch_id": 5,
            "batch_sequence_num": 6, "c_rs_pay_extensions": extensions()}


def batch_status() -> dict:
    return {"batch_id": 5, "open_date_time": NOW, "closed_when": NOW, "batch_totals": {
        "trans_count_credit": 1, "trans_total_credit": amount(1), "trans_count_debit": 2,
        "trans_total_debit": amount(2), "batch_total": amount(1)}}


def auth_res_payload() -> gw.AuthResPayload:
    header = {"auth_amt": amount(), "auth_code": "approved", "batch_status": batch_status(),
              "curr_conv": {"curr_conv_rate": ratio(), "card_curr": 840}, "response_data": {
                  "auth_val_codes": {"approval_code": "A12345", "auth_char_ind": "E",
                                     "validation_code": "V1", "market_spec_data_id": 1},
                  "resp_reason": "issuer", "card_type": "gold", "avs_result": "exactMatch",
                  "log_ref_id": b"log-1"}}
    return gw.AuthResPayload({"auth_header": header, "cap_res_payload": cap_res_payload(),
                              "a_rs_extensions": extensions()})


def auth_res_data() -> gw.AuthResData:
    return gw.AuthResData({"auth_tags": auth_tags(), "brand_crl_identifier": bci(),
                           "pe_thumb": octets(0x50), "auth_res_payload": auth_res_payload(),
                           "mer_thumb": octets(0x4E)})


def auth_res_baggage() -> gw.AuthResBaggage:
    return gw.AuthResBaggage({"cap_token": cap_token(),
                              "acq_card_msg": enveloped("AcqCardCodeMsgTBE", pu.AcqCardMsg),
                              "auth_token": enveloped("AuthTokenTBE", gw.AuthToken)})


def auth_token_data() -> gw.AuthTokenData:
    return gw.AuthTokenData({
        "trans_ids": trans_ids(), "purch_amt": amount(), "merchant_id": "MER-0001",
        "acq_back_key_data": back_key(), "install_recur_data": install_recur(),
        "recurring_count": 2, "prev_auth_date_time": NOW, "total_auth_amount": amount(),
        "auth_token_opaque": b"gateway-state"})


def cap_token_data() -> gw.CapTokenData:
    return gw.CapTokenData({"auth_rrpid": octets(0x52), "auth_amt": amount(),
                            "token_opaque": b"gateway-state"})


def auth_rev_tags() -> dict:
    return {"auth_rev_rr_tags": rr_tags(), "trans_ids": trans_ids(), "auth_ret_num": 9}


def auth_rev_req_data() -> gw.AuthRevReqData:
    return gw.AuthRevReqData({
        "auth_rev_tags": auth_rev_tags(), "m_thumbs": thumbs(),
        "auth_req_data": auth_req_data(), "auth_res_payload": auth_res_payload(),
        "auth_new_amt": amount(100), "a_rv_rq_extensions": extensions()})


def auth_rev_req_baggage() -> gw.AuthRevReqBaggage:
    return gw.AuthRevReqBaggage({"pi": pi(), "cap_token": cap_token()})


def auth_rev_res_data() -> gw.AuthRevResData:
    return gw.AuthRevResData({
        "auth_rev_tags": auth_rev_tags(), "brand_crl_identifier": bci(),
        "gk_thumb": octets(0x50), "auth_rev_code": "approved", "auth_new_amt": amount(100),
        "auth_res_payload_new": auth_res_payload(), "a_rv_rs_extensions": extensions()})


def auth_rev_res_baggage() -> gw.AuthRevResBaggage:
    return gw.AuthRevResBaggage({"cap_token_new": cap_token(),
                                 "auth_token_new": enveloped("AuthTokenTBE", gw.AuthToken)})


def auth_rev_res(kind: str = "auth_rev_res_enc_b") -> gw.AuthRevRes:
    if kind == "auth_rev_res_enc":
        return gw.AuthRevRes(name=kind, value=enveloped("AuthRevResTBE"))
    return gw.AuthRevRes(name=kind, value={"auth_rev_res_enc": enveloped("AuthRevResTBEB"),
                                           "auth_rev_res_baggage": auth_rev_res_baggage()})


# --- clearing --------------------------------------------------------------------------------
def cap_payload() -> dict:
    return {"cap_date": NOW, "cap_req_amt": amount(), "auth_req_item": auth_req_item(),
            "auth_res_payload": auth_res_payload(), "sale_detail": sale_detail(),
            "c_pay_extensions": extensions()}


def cap_req_data() -> cap.CapReqData:
    return cap.CapReqData({
        "cap_rr_tags": rr_tags(), "m_thumbs": thumbs(), "c_rq_extensions": extensions(),
        "cap_item_seq": [{"trans_ids": trans_ids(), "auth_rrpid": octets(0x52),
                          "cap_payload": cap_payload()}]})


def cap_res_data() -> cap.CapResData:
    return cap.CapResData({
        "cap_rr_tags": rr_tags(), "brand_crl_identifier": bci(), "pe_thumb": octets(0x50),
        "c_rs_extensions": extensions(),
        "cap_res_item_seq": [{"trans_ids": trans_ids(), "auth_rrpid": octets(0x52),
                              "cap_res_payload": cap_res_payload()}]})


def cap_rev_or_cred_req_data(cls=cap.CapRevOrCredReqData):
    item = {"trans_ids": trans_ids(), "auth_rrpid": octets(0x52), "cap_payload": cap_payload(),
            "new_batch_id": 8, "cap_rev_or_cred_req_date": NOW,
            "cap_rev_or_cred_req_amt": amount(500), "new_account_ind": True,
            "c_rv_rq_item_extensions": extensions()}
    return cls({"cap_rev_or_cred_rr_tags": rr_tags(), "m_thumbs": thumbs(),
                "cap_rev_or_cred_req_item_seq": [item], "c_rv_rq_extensions": extensions()})


def cap_rev_or_cred_res_data(cls=cap.CapRevOrCredResData):
    payload = {"cap_rev_or_cred_code": "success", "cap_rev_or_cred_act_amt": amount(500),
               "batch_id": 8, "batch_sequence_num": 1, "c_rv_rs_pay_extensions": extensions()}
    item = {"trans_ids": trans_ids(), "auth_rrpid": octets(0x52),
            "cap_rev_or_cred_res_payload": payload}
    return cls({"cap_rev_or_cred_rr_tags": rr_tags(), "brand_crl_identifier": bci(),
                "pe_thumb": octets(0x50), "cap_rev_or_cred_res_item_seq": [item],
                "c_rv_rs_extensions": extensions()})


def brand_and_bin_seq() -> list:
    return [{"brand_id": "Visa", "bin": "41111111"}, {"brand_id": "MasterCard"}]


def p_cert_req_data() -> cap.PCertReqData:
    return cap.PCertReqData({"p_cert_rr_tags": rr_tags(), "m_thumbs": thumbs(),
                             "brand_and_bin_seq": brand_and_bin_seq(),
                             "p_c_rq_extensions": extensions()})


def p_cert_res_tbs() -> cap.PCertResTBS:
    return cap.PCertResTBS({
        "p_cert_rr_tags": rr_tags(), "brand_crl_identifier_seq": [bci()],
        "p_cert_res_item_seq": [{"p_cert_code": "success", "m_thumbs": thumbs()}],
        "p_c_rs_extensions": extensions()})


def batch_admin_req_data() -> cap.BatchAdminReqData:
    return cap.BatchAdminReqData({
        "batch_admin_rr_tags": rr_tags(), "batch_id": 5, "brand_and_bin_seq": brand_and_bin_seq(),
        "batch_operation": "close", "return_batch_summary_ind": True,
        "return_trans_detail_ind": True, "m_thumbs": thumbs(), "ba_rq_extensions": extensions()})


def batch_admin_res_data() -> cap.BatchAdminResData:
    return cap.BatchAdminResData({
        "batch_admin_rr_tags": rr_tags(), "batch_id": 5, "ba_status": "success",
        "batch_status": batch_status(), "brand_crl_identifier": bci(), "pe_thumb": octets(0x50),
        "trans_detail_seq": [{"trans_ids": trans_ids(), "auth_rrpid": octets(0x52),
                              "cap_amt": amount(), "batch_sequence_num": 6}],
        "ba_rs_extensions": extensions()})


# --- certificate management ----------------------------------------------------------------
def reg_form_or_referral(kind: str = "reg_form_data") -> cm.RegFormOrReferral:
    if kind == "referral_data":
        return cm.RegFormOrReferral(name=kind, value={
            "reason": "ask your bank", "referral_urls": ["https://bank.example/set"]})
    template = {"reg_form_id": 3, "brand_logo_url": "https://ca.example/b.png",
                "card_logo_url": "https://ca.example/c.png", "reg_field_seq": [{
                    "field_id": PROFILE_MODERN_2026, "field_name": "Name",
                    "field_desc": "as on card", "field_len": 40, "field_required": True,
                    "field_invisible": True}]}
    return cm.RegFormOrReferral(name=kind, value={"reg_template": template,
                                                  "policy": "Policy text"})


def ee_ids(chall: str = "chall_ee") -> dict:
    return {"rrpid": octets(0x52), "lid_ee": b"ee-1", chall: octets(0x45)}


def id_data() -> cm.IDData:
    return cm.IDData(name="merchant_acquirer_id",
                     value={"merchant_bin": "41111111", "merchant_id": "MER-0001"})


def card_c_init_res_tbs() -> cm.CardCInitResTBS:
    return cm.CardCInitResTBS(dict(ee_ids(), lid_ca=b"ca-1", cae_thumb=octets(0x43),
                                   brand_crl_identifier=bci(), thumbs=thumbs()))


def me_aq_c_init_res_tbs() -> cm.MeAqCInitResTBS:
    return cm.MeAqCInitResTBS(dict(
        ee_ids(), lid_ca=b"ca-1", chall_ca=octets(0x41), request_type="merInitialBoth",
        reg_form_or_referral=reg_form_or_referral(), cae_thumb=octets(0x43),
        brand_crl_identifier=bci(), thumbs=thumbs()))


def reg_form_req_data() -> cm.RegFormReqData:
    return cm.RegFormReqData(dict(ee_ids("chall_ee2"), request_type="cardInitialSig",
                                  language="en-GB", thumbs=thumbs()))


def reg_form_res_tbs() -> cm.RegFormResTBS:
    return cm.RegFormResTBS(dict(
        ee_ids("chall_ee2"), lid_ca=b"ca-1", chall_ca=octets(0x41),
        request_type="cardInitialSig", reg_form_or_referral=reg_form_or_referral("referral_data"),
        brand_crl_identifier=bci(), thumbs=thumbs()))


def public_key() -> dict:
    return {"algorithm": {"algorithm": "rsa"},
            "public_key": {"modulus": (1 << 2047) + 12345, "public_exponent": 65537}}


def cert_req_data() -> cm.CertReqData:
    return cm.CertReqData(dict(
        ee_ids("chall_ee3"), lid_ca=b"ca-1", chall_ca=octets(0x41),
        request_type="merInitialBoth", request_date=NOW, id_data=id_data(), reg_form_id=3,
        reg_form=[{"field_name": "Name", "field_value": "Ada"}], ca_back_key_data=back_key(),
        public_key_sor_e={"public_key_s": public_key(), "public_key_e": public_key()},
        ee_thumb=octets(0x45), thumbs=thumbs()))


def acct_info(kind: str = "pan_data0") -> cm.AcctInfo:
    if kind == "acct_data":
        return cm.AcctInfo(name=kind, value={"acct_identification": "MER-0001",
                                             "ex_nonce": octets(0x45)})
    return cm.AcctInfo(name=kind, value=dict(pan_fields(), card_secret=octets(0x43)))


def cert_res_data() -> cm.CertResData:
    status = {"cert_status_code": "requestComplete", "nonce_cca": octets(0x4E),
              "ee_message": "Welcome", "cae_thumb": octets(0x43)}
    return cm.CertResData(dict(ee_ids("chall_ee3"), lid_ca=b"ca-1", cert_status=status,
                               cert_thumbs=[octets(0x71)], brand_crl_identifier=bci(),
                               thumbs=thumbs()))


def cert_inq_req_tbs() -> cm.CertInqReqTBS:
    return cm.CertInqReqTBS(dict(ee_ids("chall_ee3"), lid_ca=b"ca-1"))


def error_tbs(kind: str = "message_header") -> error.ErrorTBS:
    msg = (error.ErrorMsg(name=kind, value=header()) if kind == "message_header"
           else error.ErrorMsg(name=kind, value=b"\x30\x03\x02\x01\x01"))
    return error.ErrorTBS({"error_code": "unknownXID", "error_nonce": octets(0x4E),
                           "error_oid": PROFILE_MODERN_2026, "error_thumb": octets(0x71),
                           "error_msg": msg})


# --- wrapper ------------------------------------------------------------------------------
# --- gateway <-> issuer (D-130) -----------------------------------------------------------------
def iss_auth_req_data() -> iss.IssAuthReqData:
    return iss.IssAuthReqData({
        "mti": "0100", "stan": 123456, "rrn": "581234567890", "processing_code": "000000",
        "pan": "4111111111111111", "card_expiry": "202912", "amount": amount(), "transmitted": NOW,
        "acquirer_id": "41111111", "merchant_id": "MER-0001", "xid": octets(0x58)})


def iss_auth_res_data() -> iss.IssAuthResData:
    return iss.IssAuthResData({
        "mti": "0110", "stan": 123456, "rrn": "581234567890", "response_code": "00",
        "amount": amount(), "transmitted": NOW, "xid": octets(0x58), "approval_code": "A1B2C3"})


def iss_cap_req_data() -> iss.IssCapReqData:
    return iss.IssCapReqData({
        "mti": "0220", "stan": 123457, "rrn": "581234567890", "pan": "4111111111111111",
        "amount": amount(), "approval_code": "A1B2C3", "transmitted": NOW,
        "merchant_id": "MER-0001", "xid": octets(0x58), "remaining_hold": amount(2050)})


def iss_cap_res_data() -> iss.IssCapResData:
    return iss.IssCapResData({
        "mti": "0230", "stan": 123457, "rrn": "581234567890", "response_code": "00",
        "amount": amount(), "transmitted": NOW, "xid": octets(0x58)})


def iss_rev_req_data() -> iss.IssRevReqData:
    return iss.IssRevReqData({
        "mti": "0400", "stan": 123458, "rrn": "581234567890", "amount": amount(),
        "approval_code": "A1B2C3", "reason_code": "68", "original_mti": "0100",
        "original_stan": 123456, "transmitted": NOW, "merchant_id": "MER-0001",
        "xid": octets(0x58), "replacement_amount": amount(10000)})


def iss_rev_res_data() -> iss.IssRevResData:
    return iss.IssRevResData({
        "mti": "0410", "stan": 123458, "rrn": "581234567890", "response_code": "00",
        "amount": amount(), "transmitted": NOW, "xid": octets(0x58)})


def iss_moved_answer(cls, mti: str, stan: int = 123459):
    """A 0230/0430 answer (credit, credit reversal, capture reversal)."""
    return cls({"mti": mti, "stan": stan, "rrn": "581234567890", "response_code": "00",
                "amount": amount(), "transmitted": NOW, "xid": octets(0x58),
                "merchant_id": "MER-0001"})


def iss_cred_req_data() -> iss.IssCredReqData:
    return iss.IssCredReqData({
        "mti": "0220", "stan": 123459, "rrn": "581234567890", "processing_code": "200000",
        "amount": amount(), "approval_code": "A1B2C3", "transmitted": NOW,
        "merchant_id": "MER-0001", "xid": octets(0x58)})


def iss_reversal_advice(cls, original_stan: int = 123459):
    """A 0420 (credit reversal, capture reversal) naming the original's STAN."""
    return cls({"mti": "0420", "stan": 123460, "rrn": "581234567890", "amount": amount(),
                "approval_code": "A1B2C3", "reason_code": "17", "original_mti": "0220",
                "original_stan": original_stan, "transmitted": NOW, "merchant_id": "MER-0001",
                "xid": octets(0x58)})


def clear_totals() -> list:
    return [{"currency": 840, "amt_exp10": -2, "capture_count": 1, "capture_amount": 12950,
             "credit_count": 1, "credit_amount": 2000}]


def iss_clear_req_data() -> iss.IssClearReqData:
    return iss.IssClearReqData({
        "mti": "0500", "stan": 654321, "rrn": "5a1b2c3d4e5f", "batch_id": 1,
        "items": [{"xid": octets(0x58), "kind": "capture", "stan": 123457, "amount": amount()},
                  {"xid": octets(0x58), "kind": "credit", "stan": 123459,
                   "amount": amount(2000)}],
        "totals": clear_totals(), "transmitted": NOW, "merchant_id": "MER-0001",
        "xid": octets(0x5A)})


def iss_clear_res_data() -> iss.IssClearResData:
    return iss.IssClearResData({
        "mti": "0510", "stan": 654321, "rrn": "5a1b2c3d4e5f", "response_code": "00",
        "batch_id": 1, "totals": clear_totals(), "transmitted": NOW, "xid": octets(0x5A),
        "merchant_id": "MER-0001"})


def statement_data() -> st.StatementData:
    entries = [{"xid": octets(0x58), "kind": "hold", "amount": 12950, "at": NOW,
                "merchant_id": "MER-0001"},
               {"xid": octets(0x58), "kind": "post", "amount": 12950, "at": NOW}]
    card = {"pan_last4": "1111", "currency": 840, "amt_exp10": -2, "limit": 500000, "held": 0,
            "posted_pending": 12950, "posted_settled": 0, "credited_pending": 0,
            "credited_settled": 0, "balance": 12950, "available": 487050, "entries": entries}
    return st.StatementData({"statement_id": octets(0x53), "issuer": "Issuer Bank",
                             "holder": "alice", "issued": NOW, "cards": [card],
                             "period_from": NOW, "period_to": NOW})


def header() -> dict:
    return {"version": 1, "revision": 0, "date": NOW, "rrpid": octets(0x52),
            "message_ids": {"lid_c": b"cardholder-1", "lid_m": b"order-42", "xid": octets(0x58)},
            "sw_ident": "setmail/0.1"}


def encb(cls, enc_type: str, baggage):
    enc_field, bag_field = (name for name, *_ in cls._fields)
    return cls({enc_field: enveloped(enc_type), bag_field: baggage})


MESSAGE_SAMPLES = {
    "PInitReq": p_init_req,
    "PInitRes": lambda: signed("PInitResData", p_init_res_data().dump(), pu.PInitRes),
    "PReq": p_req,
    "PRes": lambda: signed("PResData", p_res_data().dump(), pu.PRes),
    "InqReq": lambda: pu.InqReq(name="inq_req_unsigned", value=inq_req_data()),
    "InqRes": lambda: signed("PResData", p_res_data().dump(), pu.InqRes),
    "AuthReq": lambda: encb(gw.AuthReq, "AuthReqTBE", pi()),
    "AuthRes": lambda: encb(gw.AuthRes, "AuthResTBEX", auth_res_baggage()),
    "AuthRevReq": lambda: encb(gw.AuthRevReq, "AuthRevReqTBE", auth_rev_req_baggage()),
    "AuthRevRes": auth_rev_res,
    "CapReq": lambda: encb(cap.CapReq, "CapReqTBE", [cap_token()]),
    "CapRes": lambda: enveloped("CapResTBE", cap.CapRes),
    "CapRevReq": lambda: encb(cap.CapRevReq, "CapRevReqTBE", [cap_token()]),
    "CapRevRes": lambda: enveloped("CapRevResTBE", cap.CapRevRes),
    "CredReq": lambda: encb(cap.CredReq, "CredReqTBEX", [cap_token()]),
    "CredRes": lambda: enveloped("CredResTBE", cap.CredRes),
    "CredRevReq": lambda: encb(cap.CredRevReq, "CredRevReqTBE", []),
    "CredRevRes": lambda: enveloped("CredRevResTBE", cap.CredRevRes),
    "PCertReq": lambda: signed("PCertReqData", p_cert_req_data().dump(), cap.PCertReq),
    "PCertRes": lambda: signed("PCertResTBS", p_cert_res_tbs().dump(), cap.PCertRes),
    "BatchAdminReq": lambda: enveloped("BatchAdminReqTBE", cap.BatchAdminReq),
    "BatchAdminRes": lambda: enveloped("BatchAdminResTBE", cap.BatchAdminRes),
    "CardCInitReq": lambda: cm.CardCInitReq(dict(ee_ids(), brand_id="Visa", thumbs=thumbs())),
    "CardCInitRes": lambda: signed("CardCInitResTBS", card_c_init_res_tbs().dump(),
                                   cm.CardCInitRes),
    "Me-AqCInitReq": lambda: cm.MeAqCInitReq(dict(
        ee_ids(), request_type="merInitialBoth", id_data=id_data(), language="en-GB",
        thumbs=thumbs())),
    "Me-AqCInitRes": lambda: signed("MeAqCInitResTBS", me_aq_c_init_res_tbs().dump(),
                                    cm.MeAqCInitRes),
    "RegFormReq": lambda: enveloped("RegFormReqTBE", cm.RegFormReq),
    "RegFormRes": lambda: signed("RegFormResTBS", reg_form_res_tbs().dump(), cm.RegFormRes),
    "CertReq": lambda: enveloped("CertReqTBEX", cm.CertReq),
    "CertRes": lambda: enveloped("CertResTBE", cm.CertRes),
    "CertInqReq": lambda: signed("CertInqReqTBS", cert_inq_req_tbs().dump(), cm.CertInqReq),
    "CertInqRes": lambda: signed("CertResData", cert_res_data().dump(), cm.CertInqRes),
    "Error": lambda: error.Error(name="unsigned_error", value=error_tbs()),
    "IssAuthReq": lambda: enveloped("IssAuthReqTBE", iss.IssAuthReq),
    "IssAuthRes": lambda: enveloped("IssAuthResTBE", iss.IssAuthRes),
    "IssCapReq": lambda: enveloped("IssCapReqTBE", iss.IssCapReq),
    "IssCapRes": lambda: enveloped("IssCapResTBE", iss.IssCapRes),
    "IssRevReq": lambda: enveloped("IssRevReqTBE", iss.IssRevReq),
    "IssRevRes": lambda: enveloped("IssRevResTBE", iss.IssRevRes),
    "IssCredReq": lambda: enveloped("IssCredReqTBE", iss.IssCredReq),
    "IssCredRes": lambda: enveloped("IssCredResTBE", iss.IssCredRes),
    "IssCredRevReq": lambda: enveloped("IssCredRevReqTBE", iss.IssCredRevReq),
    "IssCredRevRes": lambda: enveloped("IssCredRevResTBE", iss.IssCredRevRes),
    "IssCapRevReq": lambda: enveloped("IssCapRevReqTBE", iss.IssCapRevReq),
    "IssCapRevRes": lambda: enveloped("IssCapRevResTBE", iss.IssCapRevRes),
    "IssClearReq": lambda: enveloped("IssClearReqTBE", iss.IssClearReq),
    "IssClearRes": lambda: enveloped("IssClearResTBE", iss.IssClearRes),
    "Statement": lambda: signed("StatementData", statement_data().dump(), st.Statement),
}

#: further alternatives of the CHOICE-typed messages, so every alternative is exercised
MESSAGE_VARIANTS = {
    "PReq/unsigned": ("PReq", lambda: p_req("p_req_unsigned")),
    "InqReq/signed": ("InqReq", lambda: pu.InqReq(
        name="inq_req_signed", value=signed("InqReqData", inq_req_data().dump()))),
    "AuthReq/unsigned-PI": ("AuthReq", lambda: encb(gw.AuthReq, "AuthReqTBE", pi("pi_unsigned"))),
    "AuthReq/auth-token": ("AuthReq", lambda: encb(gw.AuthReq, "AuthReqTBE", pu.PI(
        name="auth_token", value=enveloped("AuthTokenTBE")))),
    "AuthRevRes/enc": ("AuthRevRes", lambda: auth_rev_res("auth_rev_res_enc")),
    "Error/signed": ("Error", lambda: error.Error(
        name="signed_error", value=signed("ErrorTBS", error_tbs("bad_wrapper").dump()))),
}


def _l(cls, t, name: str):
    """An L(t, x) structure of class ``cls``: ``t`` then the DD of content type ``name``."""
    first, second = (n for n, *_ in cls._fields)
    return cls({first: t, second: dd(name)})


PLAINTEXT_SAMPLES = {
    "PANData": pan_data, "PANToken": pan_token, "PANOnly": pan_only, "OIData": oi_data,
    "PI": pi, "PIData": lambda: pu.PIData({"pi_head": pi_head(), "pan_data": pan_data()}),
    "PIDataUnsigned": lambda: pu.PIDataUnsigned({"pi_head": pi_head(),
                                                 "pan_token": pan_token()}),
    "HODInput": hod_input, "PInitResData": p_init_res_data,
    "PI-TBS": lambda: pu.PI_TBS({"h_pi_data": dd("PIData"), "h_oi_data": dd("OIData")}),
    "PResData": p_res_data, "InqReqData": inq_req_data, "AcqCardCodeMsg": acq_card_code_msg,
    "PIDualSignedTBE": lambda: _l(pu.PIDualSignedTBE, pi_oi_link(), "PANData"),
    "PIUnsignedTBE": lambda: _l(pu.PIUnsignedTBE, pi_oi_link(), "PANToken"),
    "AuthReqTBS": lambda: _l(gw.AuthReqTBS, auth_req_data(), "PI"),
    "AuthResTBS": lambda: _l(gw.AuthResTBS, auth_res_data(), "AuthResBaggage"),
    "AuthResTBSX": lambda: _l(gw.AuthResTBSX, _l(gw.AuthResTBS, auth_res_data(),
                                                 "AuthResBaggage"), "PANToken"),
    "AuthResBaggage": auth_res_baggage,
    "AuthTokenTBS": lambda: _l(gw.AuthTokenTBS, auth_token_data(), "PANToken"),
    "CapTokenData": cap_token_data,
    "CapTokenTBS": lambda: _l(gw.CapTokenTBS, cap_token_data(), "PANToken"),
    "CapTokenSeq": lambda: gw.CapTokenSeq([cap_token(), cap_token("CapTokenTBEX")]),
    "AuthRevReqTBS": lambda: _l(gw.AuthRevReqTBS, auth_rev_req_data(), "AuthRevReqBaggage"),
    "AuthRevReqBaggage": auth_rev_req_baggage, "AuthRevResData": auth_rev_res_data,
    "AuthRevResTBS": lambda: _l(gw.AuthRevResTBS, auth_rev_res_data(), "AuthRevResBaggage"),
    "AuthRevResBaggage": auth_rev_res_baggage,
    "CapReqTBS": lambda: _l(cap.CapReqTBS, cap_req_data(), "CapTokenSeq"),
    "CapReqTBSX": lambda: _l(cap.CapReqTBSX, _l(cap.CapReqTBS, cap_req_data(), "CapTokenSeq"),
                             "PANToken"),
    "CapResData": cap_res_data,
    "PCertReqData": p_cert_req_data, "PCertResTBS": p_cert_res_tbs,
    "BatchAdminReqData": batch_admin_req_data, "BatchAdminResData": batch_admin_res_data,
    "CardCInitResTBS": card_c_init_res_tbs, "MeAqCInitResTBS": me_aq_c_init_res_tbs,
    "RegFormReqTBE": lambda: _l(cm.RegFormReqTBE, reg_form_req_data(), "PANOnly"),
    "RegFormResTBS": reg_form_res_tbs, "CertReqData": cert_req_data,
    "CertReqTBS": lambda: _l(cm.CertReqTBS, cert_req_data(), "CertReqData"),
    "CertResData": cert_res_data, "CertInqReqTBS": cert_inq_req_tbs, "ErrorTBS": error_tbs,
    "IssAuthReqData": iss_auth_req_data, "IssAuthResData": iss_auth_res_data,
    "IssCapReqData": iss_cap_req_data, "IssCapResData": iss_cap_res_data,
    "IssRevReqData": iss_rev_req_data, "IssRevResData": iss_rev_res_data,
    "IssCredReqData": iss_cred_req_data,
    "IssCredResData": lambda: iss_moved_answer(iss.IssCredResData, "0230"),
    "IssCredRevReqData": lambda: iss_reversal_advice(iss.IssCredRevReqData),
    "IssCredRevResData": lambda: iss_moved_answer(iss.IssCredRevResData, "0430", 123460),
    "IssCapRevReqData": lambda: iss_reversal_advice(iss.IssCapRevReqData, 123457),
    "IssCapRevResData": lambda: iss_moved_answer(iss.IssCapRevResData, "0430", 123460),
    "IssClearReqData": iss_clear_req_data, "IssClearResData": iss_clear_res_data,
    "StatementData": statement_data,
}
for _kind in ("CapRev", "Cred", "CredRev"):
    _req, _tbs, _tbsx, _res = (getattr(cap, _kind + s) for s in
                                ("ReqData", "ReqTBS", "ReqTBSX", "ResData"))
    PLAINTEXT_SAMPLES[_kind + "ReqTBS"] = (
        lambda r=_req, t=_tbs: _l(t, cap_rev_or_cred_req_data(r), "CapTokenSeq"))
    PLAINTEXT_SAMPLES[_kind + "ReqTBSX"] = (lambda r=_req, t=_tbs, x=_tbsx: _l(
        x, _l(t, cap_rev_or_cred_req_data(r), "CapTokenSeq"), "PANToken"))
    PLAINTEXT_SAMPLES[_kind + "ResData"] = lambda c=_res: cap_rev_or_cred_res_data(c)


def plaintext_sample(name: str):
    """Sample for PLAINTEXT_TYPES[name]; the envelope (…TBE/TBEX) layers carry a SignedData."""
    if name in PLAINTEXT_SAMPLES:
        return PLAINTEXT_SAMPLES[name]()
    return signed(name)


def wrapper_for(type_name: str, message):
    return make_wrapper(header(), type_name, message, mw_extensions=extensions())

