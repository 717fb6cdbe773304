"""Private files of a world: written atomically, mode 0600 in 0700 directories, fsynced.

Why here: keys, CRLs and BrandCRLIdentifiers are world files (``world.keys``, ``world.revoke``),
and the agent's effects write the wallet's keys into the same layout; the world sits below the
agent, so the agent imports this (``agent.effects`` re-exports it), never the other way round.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600 (directory 0700), fsynced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
