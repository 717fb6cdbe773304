"""Durable Maildir: delivery that survives power loss, and a two-phase consume for crash recovery.

Why not ``mailbox.Maildir``: its ``add`` fsyncs the file but never the ``new/`` directory (the
entry can vanish on power loss after the SMTP 250), it does not create parent folders, and its
unlocked class counter ``_count`` can give two writers in one process the same name.

Layout: ``tmp/``, ``new/``, ``cur/`` as every Maildir reader expects, plus ``.quarantine/`` (hidden
from readers by its leading dot) holding refused mails next to a ``<name>.reason`` text file.
A message's *key* is its unique file name without the ``:2,<flags>`` info suffix.

Life of a message: ``deliver`` → ``new/K``; ``claim`` → ``cur/K:2,`` (being processed);
``mark_done`` → ``cur/K:2,S`` (effects committed).  ``pending`` lists what a restarted consumer
must (re)process: everything in ``new/`` and every ``cur/`` entry without the S flag.
"""
from __future__ import annotations

import itertools
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from setmail.errors import MaildirError, MaildirKeyError

QUARANTINE = ".quarantine"
_INFO = ":2,"
_counter = itertools.count()  # next() on itertools.count is atomic under the GIL
_HOST = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


@dataclass(frozen=True)
class MaildirEntry:
    key: str
    folder: str  # "new", "cur" or "quarantine"
    flags: str
    size: int
    mtime: float

    @property
    def done(self) -> bool:
        return "S" in self.flags


def _fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique_name() -> str:
    """``sec.M<usec>P<pid>Q<n>R<rand>.host``: unique across threads, processes and pid reuse."""
    now = time.time_ns() // 1000
    return (f"{now // 1_000_000}.M{now % 1_000_000:06d}P{os.getpid()}Q{next(_counter)}"
            f"R{secrets.token_hex(4)}.{_HOST}")


def ensure_maildir(path: str | os.PathLike) -> Path:
    """Create the Maildir (and its parents) if missing; return its Path."""
    root = Path(path)
    try:
        for sub in ("tmp", "new", "cur", QUARANTINE):
            (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise MaildirError(f"cannot create Maildir {root}: {exc}") from exc
    return root


def deliver(path: str | os.PathLike, raw: bytes) -> str:
    """Store ``raw`` durably in ``new/`` and return its key.

    Only when this returns is the message on disk (file and directory entry fsynced), so an
    SMTP server may answer 250 afterwards and not before.
    """
    result = deliver_many([(path, raw)])[0]
    if isinstance(result, MaildirError):
        raise result
    return result


def deliver_many(items: list[tuple[str | os.PathLike, bytes]]) -> list[str | MaildirError]:
    """``deliver`` for several messages at once: each file is written and fsynced, and each
    ``new/`` directory is fsynced once after all its links (group commit: the directory fsync of
    a batch covers every entry made before it).  One result per item, in order: its key, or the
    MaildirError that item met; an item counts as delivered only if its directory's fsync, done
    after its link, succeeded too."""
    results: list[str | MaildirError] = []
    dirs: dict[str, list[int]] = {}
    for index, (path, raw) in enumerate(items):
        root = os.fspath(path)  # plain strings: pathlib was a tenth of the SMTP server's CPU
        try:
            results.append(_write_linked(root, raw))
            dirs.setdefault(os.path.join(root, "new"), []).append(index)
        except OSError as exc:
            results.append(MaildirError(f"delivery into {root} failed: {exc}"))
    for directory, indexes in dirs.items():
        try:
            _fsync_dir(directory)
        except OSError as exc:
            for index in indexes:
                results[index] = MaildirError(
                    f"delivery into {os.path.dirname(directory)} failed: {exc}")
    return results


def _write_linked(root: str, raw: bytes) -> str:
    """Write ``raw`` to ``tmp/``, fsync it and link it into ``new/``; its key."""
    name = _unique_name()
    tmp, new = os.path.join(root, "tmp", name), os.path.join(root, "new", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, new)
    finally:
        os.unlink(tmp)
    return name


def _split(name: str) -> tuple[str, str]:
    key, _, info = name.partition(":")
    return key, info[2:] if info.startswith("2,") else ""


def _find_cur(root: Path, key: str) -> Path | None:
    """The cur/ file of ``key`` whatever its flags (our two names are tried before a scan)."""
    cur = root / "cur"
    for flags in ("", "S"):
        candidate = cur / f"{key}{_INFO}{flags}"
        if candidate.exists():
            return candidate
    try:
        with os.scandir(cur) as it:
            for entry in it:
                if _split(entry.name)[0] == key:
                    return Path(entry.path)
    except OSError as exc:
        raise MaildirError(f"cannot list {cur}: {exc}") from exc
    return None


def _check_key(key: str) -> None:
    if not key or "/" in key or ":" in key or key.startswith(".") or "\0" in key:
        raise MaildirKeyError(f"invalid Maildir key {key!r}")


def _locate(root: Path, key: str) -> Path:
    _check_key(key)
    new = root / "new" / key
    if new.exists():
        return new
    found = _find_cur(root, key)
    if found is None:
        raise MaildirKeyError(f"no message {key!r} in {root}")
    return found


def claim(path: str | os.PathLike, key: str) -> str:
    """Move ``new/K`` to ``cur/K:2,``: this consumer now owns the message until ``mark_done``.
    Returns the claimed file's path, for ``read_claimed`` and ``mark_done(claimed=...)``.

    Not fsynced, nor is ``mark_done``: the agent's store, not the folder, records whether a mail
    was processed, so a rename lost in a power cut only makes the mail pending again, and the
    store's processed-mail record then finishes it without processing it twice."""
    root = os.fspath(path)
    _check_key(key)
    claimed = os.path.join(root, "cur", key + _INFO)
    try:
        os.rename(os.path.join(root, "new", key), claimed)
    except FileNotFoundError as exc:
        raise MaildirKeyError(f"no message {key!r} in {root}/new") from exc
    except OSError as exc:
        raise MaildirError(f"claim of {key!r} in {root} failed: {exc}") from exc
    return claimed


def read_claimed(path: str | os.PathLike, key: str, claimed: str) -> bytes:
    """The bytes of a message this consumer just claimed (``claim``'s path), without looking
    for it: ``read`` if it has moved meanwhile."""
    try:
        with open(claimed, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return read(path, key)
    except OSError as exc:
        raise MaildirError(f"cannot read {key!r} in {path}: {exc}") from exc


def mark_done(path: str | os.PathLike, key: str, *, claimed: str | None = None) -> None:
    """Add the S flag to a claimed message (idempotent): its effects are committed.
    ``claimed``: the path ``claim`` returned, tried first (no directory lookups)."""
    _check_key(key)
    if claimed is not None and os.path.basename(claimed) == key + _INFO:
        try:
            os.rename(claimed, claimed + "S")
            return
        except FileNotFoundError:
            pass  # moved meanwhile (or already done): the general path below decides
        except OSError as exc:
            raise MaildirError(f"mark_done of {key!r} in {path} failed: {exc}") from exc
    root = Path(path)
    src = _find_cur(root, key)
    if src is None:
        raise MaildirKeyError(f"message {key!r} is not claimed in {root}/cur")
    flags = _split(src.name)[1]
    if "S" in flags:
        return
    try:
        os.rename(src, src.parent / f"{key}{_INFO}{''.join(sorted(flags + 'S'))}")
    except OSError as exc:
        raise MaildirError(f"mark_done of {key!r} in {root} failed: {exc}") from exc


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def quarantine(path: str | os.PathLike, key: str, reason: str) -> Path:
    """Move the message out of new/ or cur/ into ``.quarantine/`` with a ``.reason`` file.

    The reason is written first: a crash in between leaves the mail where it was, to be
    processed (and quarantined) again, never a mail without its reason.
    """
    root = Path(path)
    src = _locate(root, key)
    qdir = root / QUARANTINE
    try:
        qdir.mkdir(mode=0o700, exist_ok=True)
        _write_durably(qdir / f"{key}.reason", reason.encode("utf-8", "replace") + b"\n")
        dst = qdir / key
        os.rename(src, dst)
        _fsync_dir(qdir)
        _fsync_dir(src.parent)
    except OSError as exc:
        raise MaildirError(f"quarantine of {key!r} in {root} failed: {exc}") from exc
    return dst


def read(path: str | os.PathLike, key: str) -> bytes:
    """The bytes of message ``key`` in new/, cur/ or the quarantine."""
    root = Path(path)
    _check_key(key)
    for _ in range(2):  # a concurrent claim may move the file between lookup and open
        try:
            src = _locate(root, key)
        except MaildirKeyError:
            src = root / QUARANTINE / key
        try:
            return src.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise MaildirError(f"cannot read {key!r} in {root}: {exc}") from exc
    raise MaildirKeyError(f"no message {key!r} in {root}")


def _scan(root: Path, folder: str) -> list[MaildirEntry]:
    directory = root / (QUARANTINE if folder == "quarantine" else folder)
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name.startswith(".") or (folder == "quarantine" and name.endswith(
                        (".reason", ".tmp"))):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # moved meanwhile
                    continue
                key, flags = _split(name) if folder == "cur" else (name, "")
                out.append(MaildirEntry(key, folder, flags, st.st_size, st.st_mtime))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MaildirError(f"cannot list {directory}: {exc}") from exc
    return out


def _oldest_first(entries: list[MaildirEntry]) -> list[MaildirEntry]:
    return sorted(entries, key=lambda e: (e.mtime, e.key))


def list_messages(path: str | os.PathLike, *, include_quarantine: bool = False
                  ) -> list[MaildirEntry]:
    """Every message in new/ and cur/ (and the quarantine if asked), oldest first."""
    root = Path(path)
    folders = ("new", "cur", "quarantine") if include_quarantine else ("new", "cur")
    return _oldest_first([e for f in folders for e in _scan(root, f)])


def pending(path: str | os.PathLike) -> list[MaildirEntry]:
    """What a (re)starting consumer must process: claimed-not-done in cur/ and all of new/.

    A key seen in both folders (a claim's rename half-persisted by a crash) is listed once, as
    claimed.
    """
    root = Path(path)
    claimed = [e for e in _scan(root, "cur") if not e.done]
    keys = {e.key for e in claimed}
    fresh = [e for e in _scan(root, "new") if e.key not in keys]
    return _oldest_first(claimed + fresh)
