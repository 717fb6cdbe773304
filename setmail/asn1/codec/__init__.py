"""The hand-written DER engine behind the SET type declarations of ``setmail.asn1`` (D-126).

``plan`` compiles an asn1crypto class declaration once into nodes that every direction shares:
``walk`` checks DER against them, ``native`` builds plain Python values from them, ``fastder``
writes DER from Python values with them.  ``strict`` is the decoding API (``decode``,
``decode_native``), ``der`` the TLV rules, ``prim`` the primitives' contents, ``reparse``
asn1crypto's own judgement for what the nodes do not model.  Imports nothing from setmail but
``setmail.errors``: the declarations sit above it and are only ever passed in as classes.
"""
