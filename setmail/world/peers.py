"""Where an agent keeps its copy of another party's certificates: ``agents/<agent>/peers/<peer>/``.

A merchant encrypts to its gateway's key-exchange certificate; it learns it by PCertReq/PCertRes
(``roles.pcert``) and keeps it here (``kex.cert.pem``, ``sig.cert.pem``, ``chain.pem``), never
reading the gateway's own key files.  A world whose certificates ``setmail init`` issues directly
writes the same copy, as the acquirer would hand it over.
"""
from __future__ import annotations

from pathlib import Path

PEERS = "peers"


def peer_dir(agent_home: Path, peer: str) -> Path:
    """The folder of ``peer``'s certificates in the agent whose home is ``agent_home``."""
    safe = "".join(c for c in str(peer) if c.isalnum() or c in "-_.")[:64] or "x"
    return Path(agent_home) / PEERS / safe
