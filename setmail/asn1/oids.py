"""SET object identifiers (arc 2.23.42 = id-set), as registered (set-protocol.md §3.5, §2.3).

Names follow the spec with the ``setct-``/``setext-``/``setCext-`` prefixes turned into Python
identifiers.  ``CONTENT_TYPES`` maps every content-type name to its dotted OID and back.
"""
from __future__ import annotations

ID_SET = "2.23.42"
ID_SET_CTYPE = ID_SET + ".0"
ID_SET_MSG_EXT = ID_SET + ".1"
ID_SET_FIELD = ID_SET + ".2"
ID_SET_ATTRIBUTE = ID_SET + ".3"
ID_SET_ALGORITHM = ID_SET + ".4"
ID_SET_POLICY = ID_SET + ".5"
ID_SET_MODULE = ID_SET + ".6"
ID_SET_CERT_EXT = ID_SET + ".7"
ID_SET_BRAND = ID_SET + ".8"

# Content types, arc numbers exactly as registered (arc 15 is unassigned).
_CTYPE_ARCS = {
    "PANData": 0, "PANToken": 1, "PANOnly": 2, "OIData": 3, "PI": 4, "PIData": 5,
    "PIDataUnsigned": 6, "HODInput": 7, "AuthResBaggage": 8, "AuthRevReqBaggage": 9,
    "AuthRevResBaggage": 10, "CapTokenSeq": 11, "PInitResData": 12, "PI-TBS": 13,
    "PResData": 14, "AuthReqTBS": 16, "AuthResTBS": 17, "AuthResTBSX": 18, "AuthTokenTBS": 19,
    "CapTokenData": 20, "CapTokenTBS": 21, "AcqCardCodeMsg": 22, "AuthRevReqTBS": 23,
    "AuthRevResData": 24, "AuthRevResTBS": 25, "CapReqTBS": 26, "CapReqTBSX": 27,
    "CapResData": 28, "CapRevReqTBS": 29, "CapRevReqTBSX": 30, "CapRevResData": 31,
    "CredReqTBS": 32, "CredReqTBSX": 33, "CredResData": 34, "CredRevReqTBS": 35,
    "CredRevReqTBSX": 36, "CredRevResData": 37, "PCertReqData": 38, "PCertResTBS": 39,
    "BatchAdminReqData": 40, "BatchAdminResData": 41, "CardCInitResTBS": 42,
    "MeAqCInitResTBS": 43, "RegFormResTBS": 44, "CertReqData": 45, "CertReqTBS": 46,
    "CertResData": 47, "CertInqReqTBS": 48, "ErrorTBS": 49, "PIDualSignedTBE": 50,
    "PIUnsignedTBE": 51, "AuthReqTBE": 52, "AuthResTBE": 53, "AuthResTBEX": 54,
    "AuthTokenTBE": 55, "CapTokenTBE": 56, "CapTokenTBEX": 57, "AcqCardCodeMsgTBE": 58,
    "AuthRevReqTBE": 59, "AuthRevResTBE": 60, "AuthRevResTBEB": 61, "CapReqTBE": 62,
    "CapReqTBEX": 63, "CapResTBE": 64, "CapRevReqTBE": 65, "CapRevReqTBEX": 66,
    "CapRevResTBE": 67, "CredReqTBE": 68, "CredReqTBEX": 69, "CredResTBE": 70,
    "CredRevReqTBE": 71, "CredRevReqTBEX": 72, "CredRevResTBE": 73, "BatchAdminReqTBE": 74,
    "BatchAdminResTBE": 75, "RegFormReqTBE": 76, "CertReqTBE": 77, "CertReqTBEX": 78,
    "CertResTBE": 79, "CRLNotificationTBS": 80, "CRLNotificationResTBS": 81,
    "BCIDistributionTBS": 82,
}

#: content-type name (as in the spec, without "setct-") -> dotted OID
CONTENT_TYPES: dict[str, str] = {n: f"{ID_SET_CTYPE}.{a}" for n, a in _CTYPE_ARCS.items()}
#: dotted OID -> content-type name
CONTENT_TYPE_NAMES: dict[str, str] = {v: k for k, v in CONTENT_TYPES.items()}


def ct(name: str) -> str:
    """Dotted OID of the SET content type ``name`` (e.g. ``ct("PI-TBS")``)."""
    return CONTENT_TYPES[name]


# Certificate extensions (2.23.42.7)
HASHED_ROOT_KEY = ID_SET_CERT_EXT + ".0"
CERTIFICATE_TYPE = ID_SET_CERT_EXT + ".1"
MERCHANT_DATA = ID_SET_CERT_EXT + ".2"
CARD_CERT_REQUIRED = ID_SET_CERT_EXT + ".3"
TUNNELING = ID_SET_CERT_EXT + ".4"
SET_EXTENSIONS = ID_SET_CERT_EXT + ".5"
SET_QUALIFIER = ID_SET_CERT_EXT + ".6"

# Attributes (2.23.42.3)
ROOT_KEY_THUMB = ID_SET_ATTRIBUTE + ".0.0"
ADD_POLICY = ID_SET_ATTRIBUTE + ".0.1"

# Policy
POLICY_ROOT = ID_SET_POLICY + ".0"

# Message extensions (2.23.42.1)
EXT_GEN_CRYPT = ID_SET_MSG_EXT + ".1"
EXT_MI_AUTH = ID_SET_MSG_EXT + ".3"
EXT_PIN_SECURE = ID_SET_MSG_EXT + ".4"
EXT_PIN_ANY = ID_SET_MSG_EXT + ".5"
EXT_TRACK2 = ID_SET_MSG_EXT + ".7"
EXT_CV = ID_SET_MSG_EXT + ".8"

# Brands (2.23.42.8)
BRANDS = {
    "IATA-ATA": ID_SET_BRAND + ".1", "Visa": ID_SET_BRAND + ".4", "MasterCard": ID_SET_BRAND + ".5",
    "Diners": ID_SET_BRAND + ".30", "AmericanExpress": ID_SET_BRAND + ".34",
    "JCB": ID_SET_BRAND + ".35", "Novus": ID_SET_BRAND + ".6011",
}

# Modules (2.23.42.6)
MODULE_SET_MESSAGE = ID_SET_MODULE + ".0"
MODULE_SET_CERT_MSGS = ID_SET_MODULE + ".1"
MODULE_SET_PAY_MSGS = ID_SET_MODULE + ".2"

# setmail's own arc: a UUID OID (X.667, 2.25.<uuid>), since we own no arc under 2.23.42.
SETMAIL_ARC = "2.25.125581249297994116550827800490519085278"
#: mwExtensions OID naming the modern algorithm profile (RSA-PSS/OAEP-SHA256/AES-GCM)
PROFILE_MODERN_2026 = SETMAIL_ARC + ".1"

# Algorithm identifiers outside id-set that the SET operators use
RSA_OAEP_ENCRYPTION_SET = "1.2.840.113549.1.1.6"  # rsaOAEPEncryptionSET: OAEP block with extra data

# setmail additions (D-106): content types the registered list lacks, under our own arc.  Added to
# CONTENT_TYPES so ``ct()`` and the crypto operators accept them like the registered ones.
SETMAIL_CTYPE = SETMAIL_ARC + ".2"
SETMAIL_CONTENT_TYPES: dict[str, str] = {
    "InqReqData": SETMAIL_CTYPE + ".1",  # signed InqReq: S(C, InqReqData)
    # the gateway <-> issuer leg (D-130): Enc(s, r, <X>Data) under <X>TBE
    "IssAuthReqData": SETMAIL_CTYPE + ".2", "IssAuthReqTBE": SETMAIL_CTYPE + ".3",
    "IssAuthResData": SETMAIL_CTYPE + ".4", "IssAuthResTBE": SETMAIL_CTYPE + ".5",
    "IssCapReqData": SETMAIL_CTYPE + ".6", "IssCapReqTBE": SETMAIL_CTYPE + ".7",
    "IssCapResData": SETMAIL_CTYPE + ".8", "IssCapResTBE": SETMAIL_CTYPE + ".9",
    "IssRevReqData": SETMAIL_CTYPE + ".10", "IssRevReqTBE": SETMAIL_CTYPE + ".11",
    "IssRevResData": SETMAIL_CTYPE + ".12", "IssRevResTBE": SETMAIL_CTYPE + ".13",
    # its lifecycle pairs (issue 13)
    "IssCredReqData": SETMAIL_CTYPE + ".14", "IssCredReqTBE": SETMAIL_CTYPE + ".15",
    "IssCredResData": SETMAIL_CTYPE + ".16", "IssCredResTBE": SETMAIL_CTYPE + ".17",
    "IssCredRevReqData": SETMAIL_CTYPE + ".18", "IssCredRevReqTBE": SETMAIL_CTYPE + ".19",
    "IssCredRevResData": SETMAIL_CTYPE + ".20", "IssCredRevResTBE": SETMAIL_CTYPE + ".21",
    "IssCapRevReqData": SETMAIL_CTYPE + ".22", "IssCapRevReqTBE": SETMAIL_CTYPE + ".23",
    "IssCapRevResData": SETMAIL_CTYPE + ".24", "IssCapRevResTBE": SETMAIL_CTYPE + ".25",
    "IssClearReqData": SETMAIL_CTYPE + ".26", "IssClearReqTBE": SETMAIL_CTYPE + ".27",
    "IssClearResData": SETMAIL_CTYPE + ".28", "IssClearResTBE": SETMAIL_CTYPE + ".29",
    # the issuer's statement to a cardholder: S(I, StatementData)
    "StatementData": SETMAIL_CTYPE + ".30",
}
CONTENT_TYPES.update(SETMAIL_CONTENT_TYPES)
CONTENT_TYPE_NAMES.update({v: k for k, v in SETMAIL_CONTENT_TYPES.items()})
