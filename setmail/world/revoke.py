"""``setmail revoke``: put an agent's certificates on its CA's CRL, on disk.

The issuing CA is rebuilt from the world's files (with its saved revocation state), revokes, and
its new CRL and the brand's new BrandCRLIdentifier are written back next to its keys, where
every agent reads them when it starts (``trees.crls``, ``trees.brand_bci``).
"""
from __future__ import annotations

import datetime as dt

from cryptography import x509

from setmail.pki.parse import to_pem
from setmail.world.config import World
from setmail.world.files import write_private
from setmail.world.keys import load_cert
from setmail.world.trees import ca_directory, load_ca_tree

#: files in an agent's keys/ that are CA chains, not the agent's own certificates
_CHAINS = ("chain.pem",)


def agent_certificates(world: World, name: str) -> list[x509.Certificate]:
    keys = world.keys_dir(name)
    return [load_cert(p) for p in sorted(keys.glob("*.cert.pem"))
            if p.name not in _CHAINS and not p.name.endswith(".chain.pem")]


def revoke_agent(world: World, name: str, now: dt.datetime,
                 reason: x509.ReasonFlags = x509.ReasonFlags.unspecified) -> list[tuple]:
    """Revoke every certificate of agent ``name`` a CA of the world issued; returns
    [(ca label, serial, subject)] of those newly revoked (already revoked ones are left as they
    are).  A CA agent itself is not revoked this way."""
    world.agent(name)
    tree = load_ca_tree(world)
    by_subject = {ca.certificate.subject: (label, ca) for label, ca in tree.items()}
    done, touched = [], {}
    for cert in agent_certificates(world, name):
        found = by_subject.get(cert.issuer)
        if found is None or found[1].certificate == cert:
            continue  # pinned or foreign certificate, or the CA's own
        label, ca = found
        if ca.is_revoked(cert.serial_number):
            continue  # already on the CRL: nothing to re-sign
        ca.revoke(cert, now, reason)
        touched[label] = ca
        done.append((label, cert.serial_number, cert.subject.rfc4514_string()))
    for label, ca in touched.items():
        write_private(ca_directory(world, label) / "crl.pem", to_pem(ca.crl))
    if touched and "brand" in tree and tree["brand"].bci is not None:
        write_private(ca_directory(world, "brand") / "bci.pem", to_pem(tree["brand"].bci))
    return done
