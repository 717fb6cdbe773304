"""Durable Maildir: delivery that survives power loss, and a two-phase consume for crash recovery.

Why not ``mailbox.Maildir``: its ``add`` fsyncs the file but never the ``new/`` directory (the
entry can vanish on power loss after the SMTP 250), it does not create parent folders, and its
unlocked class counter ``_count`` can give two writers in one process the same name.

Layout: ``tmp/``, ``new/``, ``cur/`` as every Maildir reader expects, plus two Maildir++ folders
(each its own ``tmp/new/cur``, hidden from the inbox by the leading dot, listed by mail clients as
folders): ``.quarantine/`` holds refused mails (in its ``new/``: nobody has looked at them yet),
each with a ``<key>.reason`` text file at the folder's top where no reader takes it for a mail;
``.Sent/`` holds the agent's copies of what it sent (``file_copies``).
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
SENT = ".Sent"
FOLDERS = (QUARANTINE, SENT)
_INFO = ":2,"
_counter = itertools.count()  # next() on itertools.count is atomic under the GIL
_HOST = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


@dataclass(frozen=True)
class MaildirEntry:
    key: str
    folder: str  # "new", "cur", "quarantine" or "sent"
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
    """Create the Maildir (and its parents) and its folders if missing; return its Path.
    Writes nothing when all is there, so an agent starts on a read-only Maildir (and waits)."""
    root = Path(path)
    try:
        for sub in ("tmp", "new", "cur", *(f"{f}/{s}" for f in FOLDERS for s in ("tmp", "new",
                                                                                 "cur"))):
            if not (root / sub).is_dir():
                (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in FOLDERS:  # Maildir++: marks a folder (Courier, Dovecot, mailbox.Maildir)
            if not (root / folder / "maildirfolder").exists():
                (root / folder / "maildirfolder").touch(mode=0o600, exist_ok=True)
        _move_flat_quarantine(root / QUARANTINE)
    except OSError as exc:
        raise MaildirError(f"cannot create Maildir {root}: {exc}") from exc
    return root


def _move_flat_quarantine(qdir: Path) -> None:
    """Mails quarantined before ``.quarantine`` was a Maildir++ folder lay at its top: into its
    ``new/`` (their reasons stay where they are)."""
    with os.scandir(qdir) as it:
        flat = [e.name for e in it if e.is_file(follow_symlinks=False)
                and not e.name.startswith(".") and e.name != "maildirfolder"
                and not e.name.endswith((".reason", ".tmp"))]
    for name in flat:
        os.rename(qdir / name, qdir / "new" / name)
    if flat:
        _fsync_dir(qdir / "new")
        _fsync_dir(qdir)


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
            results.append(_delivery_failed(root, exc))
    for directory, indexes in dirs.items():
        try:
            _fsync_dir(directory)
        except OSError as exc:
            for index in indexes:
                results[index] = _delivery_failed(os.path.dirname(directory), exc)
    return results


def _delivery_failed(root: str, exc: OSError) -> MaildirError:
    """The error of one delivery, keeping the OS's ``errno`` (the SMTP server answers a full
    disk with 452, any other failure with 451)."""
    error = MaildirError(f"delivery into {root} failed: {exc.strerror or exc}")
    error.errno = exc.errno
    return error


def file_copies(folder: str | os.PathLike, items: list[tuple[str, bytes]]) -> list[str]:
    """File mails into the Maildir (or folder, e.g. ``<maildir>/.Sent``) ``folder`` as seen
    (``cur/<key>:2,S``, as mail clients keep what they sent), under the keys given, each once:
    a key already there is skipped, so a mail sent again (a re-send after a crash, a stored
    answer repeated) keeps one copy.  Every file is fsynced, then ``cur/`` once: when this
    returns, the copies survive power loss.  The keys filed now."""
    root = os.fspath(folder)
    filed = []
    try:
        for key, raw in items:
            _check_key(key)
            if key in filed or any(os.path.exists(os.path.join(root, sub, key + info))
                                   for sub, info in (("cur", _INFO + "S"), ("cur", _INFO),
                                                     ("new", ""))):
                continue
            try:
                filed.append(_write_linked(root, raw, key, seen=True))
            except FileExistsError:
                continue  # filed meanwhile by an earlier round of the same key
        if filed:
            _fsync_dir(os.path.join(root, "cur"))
    except OSError as exc:
        raise MaildirError(f"filing into {root} failed: {exc}") from exc
    return filed


def _write_linked(root: str, raw: bytes, name: str | None = None, seen: bool = False) -> str:
    """Write ``raw`` to ``tmp/``, fsync it and link it into ``new/`` (``seen``: as
    ``cur/<key>:2,S``); its key (a fresh unique name unless given)."""
    name = name or _unique_name()
    tmp = os.path.join(root, "tmp", name)
    new = os.path.join(root, "cur", name + _INFO + "S") if seen else os.path.join(root, "new", name)
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


def split_name(name: str) -> tuple[str, str]:
    """(key, flags) of a file's name (``key:2,FLAGS`` in cur/; a name in new/ is its key)."""
    return _split(name)


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
        raise MaildirError(f"claim of {key!r} in {root} failed: {exc.strerror or exc}") from exc
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
            raise MaildirError(f"mark_done of {key!r} in {path} failed: {exc.strerror or exc}") from exc
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
        raise MaildirError(f"mark_done of {key!r} in {root} failed: {exc.strerror or exc}") from exc


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def quarantine(path: str | os.PathLike, key: str, reason: str) -> Path:
    """Move the message out of new/ or cur/ into ``.quarantine/new/`` with a ``.reason`` file.

    The reason is written first: a crash in between leaves the mail where it was, to be
    processed (and quarantined) again, never a mail without its reason.
    """
    root = Path(path)
    src = _locate(root, key)
    qdir = root / QUARANTINE
    try:
        (qdir / "new").mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_durably(qdir / f"{key}.reason", reason.encode("utf-8", "replace") + b"\n")
        dst = qdir / "new" / key
        os.rename(src, dst)
        _fsync_dir(dst.parent)
        _fsync_dir(src.parent)
    except OSError as exc:
        raise MaildirError(f"quarantine of {key!r} in {root} failed: {exc}") from exc
    return dst


def reason(path: str | os.PathLike, key: str) -> str | None:
    """Why message ``key`` was quarantined (its ``.reason`` file), None if it was not."""
    _check_key(key)
    try:
        return (Path(path) / QUARANTINE / f"{key}.reason").read_text("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MaildirError(f"cannot read the reason of {key!r} in {path}: {exc}") from exc


def read(path: str | os.PathLike, key: str) -> bytes:
    """The bytes of message ``key`` in new/, cur/, the quarantine or the Sent folder."""
    return read_stamped(path, key)[0]


def read_stamped(path: str | os.PathLike, key: str) -> tuple[bytes, float]:
    """``read``, and when the message was delivered (its file's mtime), from one open."""
    root = Path(path)
    _check_key(key)
    for _ in range(2):  # a concurrent claim may move the file between lookup and open
        src = None
        for folder in (root, root / QUARANTINE, root / SENT):
            try:
                src = _locate(folder, key)
                break
            except MaildirKeyError:
                continue
        if src is None:
            break
        try:
            with open(src, "rb") as fh:
                return fh.read(), os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise MaildirError(f"cannot read {key!r} in {root}: {exc}") from exc
    raise MaildirKeyError(f"no message {key!r} in {root}")


#: list_messages' folder names -> the folder they are in
_SUBFOLDERS = {"quarantine": QUARANTINE, "sent": SENT}


def _scan(root: Path, folder: str) -> list[MaildirEntry]:
    sub = _SUBFOLDERS.get(folder)
    if sub is not None:  # a Maildir++ folder: its new/ and cur/, listed under its own name
        return [e for part in ("new", "cur") for e in _scan_dir(root / sub / part, folder,
                                                                  part == "cur")]
    return _scan_dir(root / folder, folder, folder == "cur")


def _scan_dir(directory: Path, folder: str, with_info: bool, *,
              unfinished: bool = False) -> list[MaildirEntry]:
    """``unfinished``: only the files without the S flag, judged by name before any stat (an
    agent's cur/ may hold 100,000 done mails; its start looks for the few that are not)."""
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                if unfinished and "S" in _split(name)[1]:
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # moved meanwhile
                    continue
                key, flags = _split(name) if with_info else (name, "")
                out.append(MaildirEntry(key, folder, flags, st.st_size, st.st_mtime))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MaildirError(f"cannot list {directory}: {exc}") from exc
    return out


def _oldest_first(entries: list[MaildirEntry]) -> list[MaildirEntry]:
    return sorted(entries, key=lambda e: (e.mtime, e.key))


def list_messages(path: str | os.PathLike, *, include_quarantine: bool = False,
                  include_sent: bool = False) -> list[MaildirEntry]:
    """Every message in new/ and cur/ (and the quarantine, the Sent folder if asked), oldest
    first; a folder's messages are listed with ``folder`` "quarantine" or "sent"."""
    root = Path(path)
    folders = ("new", "cur", *(("quarantine",) if include_quarantine else ()),
               *(("sent",) if include_sent else ()))
    return _oldest_first([e for f in folders for e in _scan(root, f)])


def fresh(path: str | os.PathLike) -> list[MaildirEntry]:
    """The mail in new/: delivered, not yet claimed; oldest first."""
    return _oldest_first(_scan(Path(path), "new"))


def pending(path: str | os.PathLike) -> list[MaildirEntry]:
    """What a (re)starting consumer must process: claimed-not-done in cur/ and all of new/.

    A key seen in both folders (a claim's rename half-persisted by a crash) is listed once, as
    claimed.
    """
    root = Path(path)
    claimed = _scan_dir(root / "cur", "cur", True, unfinished=True)
    keys = {e.key for e in claimed}
    unclaimed = [e for e in _scan(root, "new") if e.key not in keys]
    return _oldest_first(claimed + unclaimed)
