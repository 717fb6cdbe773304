"""SET status and code enumerations, one place for all numeric values.

SET 1.0's numbers for these were not retrieved (set-protocol.md §12); every value here is our
choice, recorded in docs/deviations.md (D-110 .. D-120).  ENUMERATED, so an unknown number is a
decoding failure rather than a silently misread status.
"""
from __future__ import annotations

from asn1crypto import core


def _enum(*names: str, start: int = 0) -> dict[int, str]:
    return {i: n for i, n in enumerate(names, start)}


class ErrorCode(core.Enumerated):
    """Book 2 table 4.6.2.16 names in table order, numbered 1..20 (D-110)."""

    _map = _enum(
        "unspecifiedFailure", "messageNotSupported", "decodingFailure", "invalidCertificate",
        "expiredCertificate", "revokedCertificate", "missingCertificate", "signatureFailure",
        "badMessageHeader", "wrapperMsgMismatch", "versionTooOld", "versionTooNew",
        "unrecognizedExtension", "messageTooBig", "signatureRequired", "messageTooOld",
        "messageTooNew", "thumbsMismatch", "unknownXID", "challengeMismatch", start=1)


class AuthCode(core.Enumerated):
    """Authorisation outcome, ISO 8583 flavoured (D-111); ``wrongGateway`` is ours (D-102)."""

    _map = _enum(
        "approved", "unspecifiedFailure", "declined", "noReply", "callIssuer", "amountError",
        "expiredCard", "invalidTransaction", "systemError", "piPreviouslyUsed",
        "recurringTooSoon", "recurringExpired", "piAuthMismatch", "installRecurMismatch",
        "captureNotSupported", "signatureRequired", "cardMerchBrandMismatch", "wrongGateway")


class AuthRevCode(core.Enumerated):
    _map = _enum(
        "approved", "unspecifiedFailure", "declined", "noReply", "amountError", "unknownXID",
        "authExpired", "alreadyCaptured", "duplicateRequest")


class CapCode(core.Enumerated):
    _map = _enum(
        "success", "unspecifiedFailure", "duplicateRequest", "authExpired", "authDataMissing",
        "invalidAuthData", "capTokenMissing", "invalidCapToken", "batchUnknown", "batchClosed",
        "unknownXID", "unknownLID", "amountTooLarge")


class CapRevOrCredCode(core.Enumerated):
    """Shared by CapRevRes, CredRes and CredRevRes items (one layout, set-protocol.md §5.7)."""

    _map = _enum(
        "success", "unspecifiedFailure", "duplicateRequest", "originalProcessed",
        "originalNotFound", "capPurged", "capDataMismatch", "missingCapData", "missingCapToken",
        "invalidCapToken", "batchUnknown", "batchClosed", "unknownXID", "unknownLID",
        "amountTooLarge")


class CompletionCode(core.Enumerated):
    """Merchant's summary of a purchase for the cardholder (PRes/InqRes)."""

    _map = _enum(
        "meaninglessRatio", "orderRejected", "orderReceived", "orderNotReceived",
        "authorizationPerformed", "capturePerformed", "creditPerformed", "authorizationDeclined")


class AcqCardCode(core.Enumerated):
    _map = _enum("messageOfDay", "accountInfo", "callCustomerService")


class RespReason(core.Enumerated):
    """Which service decided an authorisation (issuer or a stand-in) and why."""

    _map = _enum(
        "issuer", "standInTimeOut", "standInFloorLimit", "standInSuppressInquiries",
        "standInIssuerUnavailable", "standInIssuerRequest")


class AVSResult(core.Enumerated):
    _map = _enum(
        "resultUnavailable", "exactMatch", "addressMatchOnly", "postalCodeMatchOnly", "noMatch",
        "notVerified")


class CardType(core.Enumerated):
    """Returned when RequestCardTypeInd was set; ``unavailable`` otherwise."""

    _map = _enum(
        "unavailable", "classic", "gold", "platinum", "premier", "debit", "pinBasedDebit", "atm",
        "electronOnly", "unspecifiedCredit", "unspecifiedDebit", "corporate", "purchasing")


class PCertCode(core.Enumerated):
    _map = _enum("success", "unspecifiedFailure", "brandNotSupported", "unknownBIN")


class BatchOperation(core.Enumerated):
    _map = _enum("open", "close", "purge", "query")


class BatchStatusCode(core.Enumerated):
    """Outcome of a BatchAdminReq (BAStatus)."""

    _map = _enum(
        "success", "unspecifiedFailure", "brandNotSupported", "unknownBIN",
        "batchIDUnavailable", "batchAlreadyOpen", "unknownBatchID", "brandBatchMismatch",
        "totalsOutOfBalance")


class CertStatusCode(core.Enumerated):
    """Outcome of a certificate request; ``requestPended`` means poll with CertInqReq."""

    _map = _enum(
        "requestComplete", "invalidLanguage", "invalidBIN", "sigValidationFail",
        "decryptionError", "requestInProgress", "rejectByIssuer", "requestPended",
        "rejectByAgent", "serverError", "rejectByCA", "unableToEncryptCertRes",
        "invalidCertRequestType", "invalidRegFormID", "duplicateRequest", start=1)


class RequestType(core.Enumerated):
    """Certificate request kind (set-protocol.md §6.2); 2, 3, 11, 12 reserved."""

    _map = {
        1: "cardInitialSig", 4: "merInitialSig", 5: "merInitialEnc", 6: "merInitialBoth",
        7: "pgwyInitialSig", 8: "pgwyInitialEnc", 9: "pgwyInitialBoth", 10: "cardRenewalSig",
        13: "merRenewalSig", 14: "merRenewalEnc", 15: "merRenewalBoth", 16: "pgwyRenewalSig",
        17: "pgwyRenewalEnc", 18: "pgwyRenewalBoth",
    }
