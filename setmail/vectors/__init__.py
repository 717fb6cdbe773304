"""``setmail vectors OUTDIR``: one complete MessageWrapper of every SET message type, in DER,
made with real keys and real operators, plus the PKI they were made with — so anyone can check
our encodings and CMS with independent tools (``openssl asn1parse``, ``openssl cms``).

Layout written::

    OUTDIR/messages/<Type>.der        every type in asn1.MESSAGE_TYPES (a MessageWrapper)
    OUTDIR/messages/manifest.json     per message: operator, signer, recipient, CMS layers, and
                                      for each layer what an independent checker needs
    OUTDIR/messages/<Type>.<n>.content  detached content of SO layers / plaintext of envelopes
    OUTDIR/pki/root.pem, chain.pem    trusted root; all intermediate CA certificates
    OUTDIR/pki/<party>.cert.pem|.key.pem   every party key used (unencrypted PEM: test keys only)
    OUTDIR/pki/<ca>.crl.pem, bci.der  the CRL of every CA and the BrandCRLIdentifier

Field values come from ``setmail.vectors.samples``; every crypto layer is real.
"""
from setmail.vectors.build import EXPIRY, PAN, Parties, VectorSet, build_vectors, write_vectors

__all__ = ["EXPIRY", "PAN", "Parties", "VectorSet", "build_vectors", "write_vectors"]
