"""Clearing messages (merchant <-> payment gateway): CapReq/Res, the shared "CapRevOrCred"
layout of CapRevReq/Res, CredReq/Res and CredRevReq/Res, PCertReq/Res and BatchAdminReq/Res
(set-protocol.md §5.6-5.9).  Requests are batched (item sequences), which suits e-mail.
"""
from __future__ import annotations

from asn1crypto import cms, core

from .base import (
    BrandAndBINSeq, CurrencyAmount, Date, DetachedDigest, MsgExtensions, RRPID, RRTags,
    Thumbprint, Thumbs, TransIDs,
)
from .certext import BrandCRLIdentifier
from .codes import BatchOperation, BatchStatusCode, CapRevOrCredCode, PCertCode
from .gateway import (
    AuthReqItem, AuthResPayload, BatchStatus, CapResPayload, CapTokenSeq, SaleDetail,
)


# --- CapReq / CapRes ---------------------------------------------------------------------------
class CapPayload(core.Sequence):
    _fields = [
        ("cap_date", Date),
        ("cap_req_amt", CurrencyAmount),
        ("auth_req_item", AuthReqItem, {"implicit": 0, "optional": True}),
        ("auth_res_payload", AuthResPayload, {"implicit": 1, "optional": True}),
        ("sale_detail", SaleDetail, {"implicit": 2, "optional": True}),
        ("c_pay_extensions", MsgExtensions, {"implicit": 3, "optional": True}),
    ]


class CapItem(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("auth_rrpid", RRPID),
        ("cap_payload", CapPayload),
    ]


class CapItemSeq(core.SequenceOf):
    _child_spec = CapItem


class CapReqData(core.Sequence):
    _fields = [
        ("cap_rr_tags", RRTags),
        ("m_thumbs", Thumbs, {"implicit": 0, "optional": True}),
        ("cap_item_seq", CapItemSeq),
        ("c_rq_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class CapReqTBS(core.Sequence):
    """L(CapReqData, CapTokenSeq)."""

    _fields = [("cap_req_data", CapReqData), ("h_cap_token_seq", DetachedDigest)]


class CapReqTBSX(core.Sequence):
    """L(CapReqTBS, PANToken): EncBX form, when the merchant supplies account data (D-107)."""

    _fields = [("cap_req_tbs", CapReqTBS), ("h_pan_token", DetachedDigest)]


class CapReq(core.Sequence):
    """EncB(M, P, CapReqData, CapTokenSeq) or its EncBX variant."""

    _fields = [("cap_req_enc", cms.ContentInfo), ("cap_token_seq", CapTokenSeq)]


class CapResItem(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("auth_rrpid", RRPID),
        ("cap_res_payload", CapResPayload),
    ]


class CapResItemSeq(core.SequenceOf):
    _child_spec = CapResItem


class CapResData(core.Sequence):
    _fields = [
        ("cap_rr_tags", RRTags),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 0, "optional": True}),
        ("pe_thumb", Thumbprint, {"implicit": 1, "optional": True}),
        ("cap_res_item_seq", CapResItemSeq),
        ("c_rs_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class CapRes(cms.ContentInfo):
    """Enc(P, M, CapResData)."""


# --- CapRevOrCred: one layout for capture reversal, credit, credit reversal ------------------
class CapRevOrCredReqItem(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("auth_rrpid", RRPID),
        ("cap_payload", CapPayload),
        ("new_batch_id", core.Integer, {"implicit": 0, "optional": True}),
        ("cap_rev_or_cred_req_date", Date),
        ("cap_rev_or_cred_req_amt", CurrencyAmount, {"implicit": 1, "optional": True}),
        ("new_account_ind", core.Boolean, {"default": False}),
        ("c_rv_rq_item_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class CapRevOrCredReqItemSeq(core.SequenceOf):
    _child_spec = CapRevOrCredReqItem


class CapRevOrCredReqData(core.Sequence):
    _fields = [
        ("cap_rev_or_cred_rr_tags", RRTags),
        ("m_thumbs", Thumbs, {"implicit": 0, "optional": True}),
        ("cap_rev_or_cred_req_item_seq", CapRevOrCredReqItemSeq),
        ("c_rv_rq_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class CapRevOrCredReqTBS(core.Sequence):
    """L(CapRevOrCredReqData, CapTokenSeq) (D-107)."""

    _fields = [
        ("cap_rev_or_cred_req_data", CapRevOrCredReqData),
        ("h_cap_token_seq", DetachedDigest),
    ]


class CapRevOrCredReqTBSX(core.Sequence):
    """L(CapRevOrCredReqTBS, PANToken)."""

    _fields = [
        ("cap_rev_or_cred_req_tbs", CapRevOrCredReqTBS),
        ("h_pan_token", DetachedDigest),
    ]


class CapRevOrCredReq(core.Sequence):
    """EncB(M, P, <X>ReqData, CapTokenSeq) or its EncBX variant."""

    _fields = [
        ("cap_rev_or_cred_req_enc", cms.ContentInfo),
        ("cap_token_seq", CapTokenSeq),
    ]


class CapRevOrCredResPayload(core.Sequence):
    _fields = [
        ("cap_rev_or_cred_code", CapRevOrCredCode),
        ("cap_rev_or_cred_act_amt", CurrencyAmount),
        ("batch_id", core.Integer, {"implicit": 0, "optional": True}),
        ("batch_sequence_num", core.Integer, {"implicit": 1, "optional": True}),
        ("c_rv_rs_pay_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class CapRevOrCredResItem(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("auth_rrpid", RRPID),
        ("cap_rev_or_cred_res_payload", CapRevOrCredResPayload),
    ]


class CapRevOrCredResItemSeq(core.SequenceOf):
    _child_spec = CapRevOrCredResItem


class CapRevOrCredResData(core.Sequence):
    _fields = [
        ("cap_rev_or_cred_rr_tags", RRTags),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 0, "optional": True}),
        ("pe_thumb", Thumbprint, {"implicit": 1, "optional": True}),
        ("cap_rev_or_cred_res_item_seq", CapRevOrCredResItemSeq),
        ("c_rv_rs_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class CapRevOrCredRes(cms.ContentInfo):
    """Enc(P, M, <X>ResData)."""


# The spec's names for the three uses of the shared layout.
class CapRevReqData(CapRevOrCredReqData): pass  # noqa: E701
class CapRevReqTBS(CapRevOrCredReqTBS): pass  # noqa: E701
class CapRevReqTBSX(CapRevOrCredReqTBSX): pass  # noqa: E701
class CapRevReq(CapRevOrCredReq): pass  # noqa: E701
class CapRevResData(CapRevOrCredResData): pass  # noqa: E701
class CapRevRes(CapRevOrCredRes): pass  # noqa: E701
class CredReqData(CapRevOrCredReqData): pass  # noqa: E701
class CredReqTBS(CapRevOrCredReqTBS): pass  # noqa: E701
class CredReqTBSX(CapRevOrCredReqTBSX): pass  # noqa: E701
class CredReq(CapRevOrCredReq): pass  # noqa: E701
class CredResData(CapRevOrCredResData): pass  # noqa: E701
class CredRes(CapRevOrCredRes): pass  # noqa: E701
class CredRevReqData(CapRevOrCredReqData): pass  # noqa: E701
class CredRevReqTBS(CapRevOrCredReqTBS): pass  # noqa: E701
class CredRevReqTBSX(CapRevOrCredReqTBSX): pass  # noqa: E701
class CredRevReq(CapRevOrCredReq): pass  # noqa: E701
class CredRevResData(CapRevOrCredResData): pass  # noqa: E701
class CredRevRes(CapRevOrCredRes): pass  # noqa: E701


# --- PCertReq / PCertRes -----------------------------------------------------------------------
class PCertReqData(core.Sequence):
    _fields = [
        ("p_cert_rr_tags", RRTags),
        ("m_thumbs", Thumbs, {"implicit": 0, "optional": True}),
        ("brand_and_bin_seq", BrandAndBINSeq),
        ("p_c_rq_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class PCertReq(cms.ContentInfo):
    """S(M, PCertReqData)."""


class PCertResItem(core.Sequence):
    _fields = [
        ("p_cert_code", PCertCode),
        ("m_thumbs", Thumbs, {"implicit": 0, "optional": True}),
    ]


class PCertResItemSeq(core.SequenceOf):
    _child_spec = PCertResItem


class BrandCRLIdentifierSeq(core.SequenceOf):
    _child_spec = BrandCRLIdentifier


class PCertResTBS(core.Sequence):
    _fields = [
        ("p_cert_rr_tags", RRTags),
        ("p_cert_res_item_seq", PCertResItemSeq),
        ("brand_crl_identifier_seq", BrandCRLIdentifierSeq, {"implicit": 0, "optional": True}),
        ("p_c_rs_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class PCertRes(cms.ContentInfo):
    """S(P, PCertResTBS), the gateway certificates in the SignedData."""


# --- BatchAdminReq / BatchAdminRes -------------------------------------------------------------
class BatchAdminReqData(core.Sequence):
    _fields = [
        ("batch_admin_rr_tags", RRTags),
        ("batch_id", core.Integer, {"implicit": 0, "optional": True}),
        ("brand_and_bin_seq", BrandAndBINSeq, {"implicit": 1, "optional": True}),
        ("batch_operation", BatchOperation, {"implicit": 2, "optional": True}),
        ("return_batch_summary_ind", core.Boolean, {"implicit": 3, "default": False}),
        ("return_trans_detail_ind", core.Boolean, {"implicit": 4, "default": False}),
        ("m_thumbs", Thumbs, {"implicit": 5, "optional": True}),
        ("ba_rq_extensions", MsgExtensions, {"implicit": 6, "optional": True}),
    ]


class BatchAdminReq(cms.ContentInfo):
    """Enc(M, P, BatchAdminReqData)."""


class TransDetail(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("auth_rrpid", RRPID),
        ("cap_amt", CurrencyAmount),
        ("batch_sequence_num", core.Integer),
    ]


class TransDetailSeq(core.SequenceOf):
    _child_spec = TransDetail


class BatchAdminResData(core.Sequence):
    _fields = [
        ("batch_admin_rr_tags", RRTags),
        ("batch_id", core.Integer, {"implicit": 0, "optional": True}),
        ("ba_status", BatchStatusCode),
        ("batch_status", BatchStatus, {"implicit": 1, "optional": True}),
        ("trans_detail_seq", TransDetailSeq, {"implicit": 2, "optional": True}),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 3, "optional": True}),
        ("pe_thumb", Thumbprint, {"implicit": 4, "optional": True}),
        ("ba_rs_extensions", MsgExtensions, {"implicit": 5, "optional": True}),
    ]


class BatchAdminRes(cms.ContentInfo):
    """Enc(P, M, BatchAdminResData)."""
