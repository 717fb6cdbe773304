"""Authorisation messages (merchant <-> payment gateway): AuthReq/Res, AuthRevReq/Res, the
gateway's tokens, and the payload parts capture reuses (set-protocol.md §5.4-5.5).

EncB(s,r,t,b) is ``SEQUENCE { <x>Enc ContentInfo, <baggage> }``; the signed plaintext inside is
``<X>TBS ::= L(t, b) = SEQUENCE { t, DD(b) }``.  The EncBX variants keep the same outer shape;
their signature covers ``<X>TBSX ::= L(<X>TBS, PANToken)`` (D-107).
"""
from __future__ import annotations

from asn1crypto import cms, core

from .base import (
    BackKeyData, CurrencyAmount, Date, DetachedDigest, MsgExtensions, RRPID, RRTags,
    SETString, Thumbprint, Thumbs, TransIDs,
)
from .codes import AuthCode, AuthRevCode, AVSResult, CapCode, CardType, RespReason
from .certext import BrandCRLIdentifier
from .purchase import PI, AcqCardMsg, CurrConv, InstallRecurData


# --- tokens (opaque to the merchant: the gateway keeps its state in the merchant's hands) ------
class CapToken(cms.ContentInfo):
    """Enc(P1, P2, CapTokenData) or EncX(P1, P2, CapTokenData, PANToken); P1 = P2 in 1.0."""


class CapTokenSeq(core.SequenceOf):
    _child_spec = CapToken


class CapTokenData(core.Sequence):
    _fields = [
        ("auth_rrpid", RRPID),
        ("auth_amt", CurrencyAmount),
        ("token_opaque", core.OctetString),
    ]


class CapTokenTBS(core.Sequence):
    """L(CapTokenData, PANToken): what the gateway signs in the EncX form of a CapToken."""

    _fields = [("cap_token_data", CapTokenData), ("h_pan_token", DetachedDigest)]


class AuthToken(cms.ContentInfo):
    """EncX(P, P, AuthTokenData, PANToken): used as the PI of a later AuthReq."""


class AuthTokenData(core.Sequence):
    """State of a multi-step authorisation; RecurringCount/TotalAuthAmount grow each use."""

    _fields = [
        ("trans_ids", TransIDs),
        ("purch_amt", CurrencyAmount),
        ("merchant_id", SETString),
        ("acq_back_key_data", BackKeyData, {"implicit": 0, "optional": True}),
        ("install_recur_data", InstallRecurData, {"implicit": 1, "optional": True}),
        ("recurring_count", core.Integer, {"implicit": 2, "optional": True}),
        ("prev_auth_date_time", Date),
        ("total_auth_amount", CurrencyAmount),
        ("auth_token_opaque", core.OctetString),
    ]


class AuthTokenTBS(core.Sequence):
    """L(AuthTokenData, PANToken), signed inside EncX."""

    _fields = [("auth_token_data", AuthTokenData), ("h_pan_token", DetachedDigest)]


# --- AuthReq -----------------------------------------------------------------------------------
class AuthTags(core.Sequence):
    _fields = [
        ("auth_rr_tags", RRTags),
        ("trans_ids", TransIDs),
        ("auth_ret_num", core.Integer, {"implicit": 0, "optional": True}),
    ]


class CheckDigests(core.Sequence):
    """The merchant's own DD(OIData) and DD(HODInput), compared by the gateway with the PI's."""

    _fields = [("h_oi_data", DetachedDigest), ("hod2", DetachedDigest)]


class Location(core.Sequence):
    _fields = [
        ("country_code", core.Integer),  # ISO 3166 numeric
        ("city", SETString, {"implicit": 0, "optional": True}),
        ("state_province", SETString, {"implicit": 1, "optional": True}),
        ("postal_code", SETString, {"implicit": 2, "optional": True}),
        ("location_id", SETString, {"implicit": 3, "optional": True}),
    ]


class AVSData(core.Sequence):
    _fields = [
        ("street_address", SETString, {"implicit": 0, "optional": True}),
        ("location", Location),
    ]


class SpecialProcessing(core.Enumerated):
    _map = {0: "directMarketing", 1: "preferredCustomer"}


class MarketAutoAuth(core.Sequence):
    _fields = [("duration", core.Integer)]  # days of rental


class MarketHotelAuth(core.Sequence):
    _fields = [
        ("duration", core.Integer),  # nights
        ("prestige", core.Integer, {"implicit": 0, "optional": True}),
    ]


class MarketTransportAuth(core.Sequence):
    _fields = [("passenger_name", SETString)]


class MarketSpecAuthData(core.Choice):
    _alternatives = [
        ("auto", MarketAutoAuth, {"implicit": 0}),
        ("hotel", MarketHotelAuth, {"implicit": 1}),
        ("transport", MarketTransportAuth, {"implicit": 2}),
    ]


class MerchData(core.Sequence):
    _fields = [
        ("merch_cat_code", core.NumericString, {"implicit": 0, "optional": True}),  # MCC
        ("merch_group", core.Integer, {"implicit": 1, "optional": True}),
    ]


class AuthReqPayload(core.Sequence):
    _fields = [
        ("subsequent_auth_ind", core.Boolean),
        ("auth_req_amt", CurrencyAmount),
        ("avs_data", AVSData, {"implicit": 0, "optional": True}),
        ("special_processing", SpecialProcessing, {"implicit": 1, "optional": True}),
        ("card_suspect", core.OctetString, {"implicit": 2, "optional": True}),
        ("request_card_type_ind", core.Boolean),
        ("install_recur_data", InstallRecurData, {"implicit": 3, "optional": True}),
        ("market_spec_auth_data", MarketSpecAuthData, {"explicit": 4, "optional": True}),
        ("merch_data", MerchData),
        ("a_rq_extensions", MsgExtensions, {"implicit": 5, "optional": True}),
    ]


class AuthReqItem(core.Sequence):
    _fields = [
        ("auth_tags", AuthTags),
        ("check_digests", CheckDigests, {"implicit": 0, "optional": True}),  # not with AuthToken
        ("auth_req_payload", AuthReqPayload),
    ]


class SaleDetail(core.Sequence):
    """Capture details for CaptureNow and CapPayload (D-108)."""

    _fields = [
        ("batch_id", core.Integer, {"implicit": 0, "optional": True}),
        ("batch_sequence_num", core.Integer, {"implicit": 1, "optional": True}),
        ("merchant_order_num", core.VisibleString, {"implicit": 2, "optional": True}),
        ("sd_extensions", MsgExtensions, {"implicit": 3, "optional": True}),
    ]


class AuthReqData(core.Sequence):
    _fields = [
        ("auth_req_item", AuthReqItem),
        ("m_thumbs", Thumbs, {"implicit": 0, "optional": True}),
        ("capture_now", core.Boolean, {"default": False}),
        ("sale_detail", SaleDetail, {"implicit": 1, "optional": True}),
    ]


class AuthReqTBS(core.Sequence):
    """L(AuthReqData, PI): the merchant's signature binds the baggage by digest."""

    _fields = [("auth_req_data", AuthReqData), ("h_pi", DetachedDigest)]


class AuthReq(core.Sequence):
    """EncB(M, P, AuthReqData, PI); the PI travels outside, unchanged."""

    _fields = [("auth_req_enc", cms.ContentInfo), ("pi", PI)]


# --- AuthRes -----------------------------------------------------------------------------------
class AuthValCodes(core.Sequence):
    _fields = [
        ("approval_code", core.VisibleString, {"implicit": 0, "optional": True}),
        ("auth_char_ind", core.VisibleString, {"implicit": 1, "optional": True}),
        ("validation_code", core.VisibleString, {"implicit": 2, "optional": True}),
        ("market_spec_data_id", core.Integer, {"implicit": 3, "optional": True}),
    ]


class ResponseData(core.Sequence):
    _fields = [
        ("auth_val_codes", AuthValCodes, {"implicit": 0, "optional": True}),
        ("resp_reason", RespReason, {"implicit": 1, "optional": True}),
        ("card_type", CardType, {"implicit": 2, "optional": True}),
        ("avs_result", AVSResult, {"implicit": 3, "optional": True}),
        ("log_ref_id", core.OctetString, {"implicit": 4, "optional": True}),
    ]


class BatchTotals(core.Sequence):
    _fields = [
        ("trans_count_credit", core.Integer),
        ("trans_total_credit", CurrencyAmount),
        ("trans_count_debit", core.Integer),
        ("trans_total_debit", CurrencyAmount),
        ("batch_total", CurrencyAmount),
    ]


class BatchStatus(core.Sequence):
    """State of the settlement batch a capture landed in (D-109)."""

    _fields = [
        ("batch_id", core.Integer),
        ("open_date_time", Date),
        ("closed_when", Date, {"implicit": 0, "optional": True}),
        ("batch_totals", BatchTotals, {"implicit": 1, "optional": True}),
    ]


class AuthHeader(core.Sequence):
    _fields = [
        ("auth_amt", CurrencyAmount),
        ("auth_code", AuthCode),
        ("response_data", ResponseData),
        ("batch_status", BatchStatus, {"implicit": 0, "optional": True}),
        ("curr_conv", CurrConv, {"implicit": 1, "optional": True}),
    ]


class CapResPayload(core.Sequence):
    _fields = [
        ("cap_code", CapCode),
        ("cap_amt", CurrencyAmount),
        ("batch_id", core.Integer, {"implicit": 0, "optional": True}),
        ("batch_sequence_num", core.Integer, {"implicit": 1, "optional": True}),
        ("c_rs_pay_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class AuthResPayload(core.Sequence):
    _fields = [
        ("auth_header", AuthHeader),
        ("cap_res_payload", CapResPayload, {"implicit": 0, "optional": True}),  # iff CaptureNow
        ("a_rs_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class AuthResData(core.Sequence):
    """``mer_thumb`` (hardening, D-103) names the merchant signature certificate that signed the
    AuthReq, so the merchant learns the answer is for its own request."""

    _fields = [
        ("auth_tags", AuthTags),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 0, "optional": True}),
        ("pe_thumb", Thumbprint, {"implicit": 1, "optional": True}),
        ("auth_res_payload", AuthResPayload),
        ("mer_thumb", Thumbprint, {"implicit": 2}),
    ]


class AuthResBaggage(core.Sequence):
    _fields = [
        ("cap_token", CapToken, {"implicit": 0, "optional": True}),
        ("acq_card_msg", AcqCardMsg, {"implicit": 1, "optional": True}),
        ("auth_token", AuthToken, {"implicit": 2, "optional": True}),
    ]


class AuthResTBS(core.Sequence):
    _fields = [("auth_res_data", AuthResData), ("h_auth_res_baggage", DetachedDigest)]


class AuthResTBSX(core.Sequence):
    """L(AuthResTBS, PANToken): the signed content of EncBX."""

    _fields = [("auth_res_tbs", AuthResTBS), ("h_pan_token", DetachedDigest)]


class AuthRes(core.Sequence):
    """EncB(P, M, AuthResData, AuthResBaggage), or EncBX(..., PANToken) if M may see it."""

    _fields = [("auth_res_enc", cms.ContentInfo), ("auth_res_baggage", AuthResBaggage)]


# --- AuthRevReq / AuthRevRes -------------------------------------------------------------------
class AuthRevTags(core.Sequence):
    _fields = [
        ("auth_rev_rr_tags", RRTags),
        ("trans_ids", TransIDs),
        ("auth_ret_num", core.Integer, {"implicit": 0, "optional": True}),
    ]


class AuthRevReqData(core.Sequence):
    """Cancel or reduce an authorisation: the original request and result plus the new amount."""

    _fields = [
        ("auth_rev_tags", AuthRevTags),
        ("m_thumbs", Thumbs, {"implicit": 0, "optional": True}),
        ("auth_req_data", AuthReqData),
        ("auth_res_payload", AuthResPayload),
        ("auth_new_amt", CurrencyAmount),
        ("a_rv_rq_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class AuthRevReqBaggage(core.Sequence):
    _fields = [
        ("pi", PI, {"explicit": 0, "optional": True}),
        ("cap_token", CapToken, {"implicit": 1, "optional": True}),
    ]


class AuthRevReqTBS(core.Sequence):
    _fields = [("auth_rev_req_data", AuthRevReqData), ("h_auth_rev_req_baggage", DetachedDigest)]


class AuthRevReq(core.Sequence):
    """EncB(M, P, AuthRevReqData, AuthRevReqBaggage)."""

    _fields = [
        ("auth_rev_req_enc", cms.ContentInfo),
        ("auth_rev_req_baggage", AuthRevReqBaggage),
    ]


class AuthRevResData(core.Sequence):
    _fields = [
        ("auth_rev_tags", AuthRevTags),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 0, "optional": True}),
        ("gk_thumb", Thumbprint, {"implicit": 1, "optional": True}),
        ("auth_rev_code", AuthRevCode),
        ("auth_new_amt", CurrencyAmount),
        ("auth_res_payload_new", AuthResPayload, {"implicit": 2, "optional": True}),
        ("a_rv_rs_extensions", MsgExtensions, {"implicit": 3, "optional": True}),
    ]


class AuthRevResBaggage(core.Sequence):
    _fields = [
        ("cap_token_new", CapToken, {"implicit": 0, "optional": True}),
        ("auth_token_new", AuthToken, {"implicit": 1, "optional": True}),
    ]


class AuthRevResTBS(core.Sequence):
    _fields = [("auth_rev_res_data", AuthRevResData), ("h_auth_rev_res_baggage", DetachedDigest)]


class AuthRevResEncB(core.Sequence):
    _fields = [
        ("auth_rev_res_enc", cms.ContentInfo),
        ("auth_rev_res_baggage", AuthRevResBaggage),
    ]


class AuthRevRes(core.Choice):
    """Enc(P, M, AuthRevResData) (content type AuthRevResTBE) when no new token is issued,
    EncB with the new tokens as baggage (AuthRevResTBEB) otherwise (D-107)."""

    _alternatives = [
        ("auth_rev_res_enc", cms.ContentInfo, {"implicit": 0}),
        ("auth_rev_res_enc_b", AuthRevResEncB, {"implicit": 1}),
    ]
