"""The world's directory (``roles.directory.Directory``) read from a world on disk.

Each agent's entry binds its address to the certificate identities that are its: a merchant's
merID (from the merchantData of its signature certificate), the subject names of a gateway's,
issuer's or CA's certificates.  Agents whose keys are not on disk yet (a merchant before
registration) are listed by address only.  Read once when an agent starts, like the CRLs.

In a bundle (``setmail export``) a merchant's certificate is on the merchant's host, not on its
counterparts': there the merID world.toml agrees for it (``mer_id``, as the acquirer assigned it)
binds its address instead (D-401).  The certificate presented in a message still has to carry
that merID and be valid under the Merchant CA.
"""
from __future__ import annotations

from setmail.pki.setext import read_merchant_data
from setmail.roles.directory import Directory, Party
from setmail.world.config import World
from setmail.world.keys import load_cert
from setmail.world.trees import ca_directory


def _certificates(world: World, name: str, kind: str) -> list:
    spec = world.agent(name)
    folder = (ca_directory(world, spec.options.get("ca", name)) if kind == "ca"
              else world.keys_dir(name))
    return [load_cert(folder / f) for f in ("sig.cert.pem", "kex.cert.pem")
            if (folder / f).exists()]


def load_directory(world: World) -> Directory:
    parties = []
    for name, spec in world.agents.items():
        certs = [] if spec.kind == "cardholder" else _certificates(world, name, spec.kind)
        mer_id = None
        if spec.kind == "merchant" and certs:
            info = read_merchant_data(certs[0])
            mer_id = info.mer_id if info else None
        elif spec.kind == "merchant" and world.bundle and spec.options.get("mer_id"):
            mer_id = str(spec.options["mer_id"])
        parties.append(Party(name, spec.kind, spec.address, mer_id,
                             frozenset(c.subject.public_bytes() for c in certs)))
    return Directory(parties)
