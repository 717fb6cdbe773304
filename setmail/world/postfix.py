"""``setmail postfix-config``: the Postfix settings of one host serving one or more bundles.

Postfix is the mail network between hosts (docs/deploy.md): each host's Postfix delivers its
agents' mail into their Maildirs itself (virtual(8): ``new/`` files the agent's watcher sees,
names without a colon, as ``setmail.mail.maildir`` expects) and relays what the agents submit to
the other hosts.  The files written (``HostFiles``):

* ``main.cf``: the host's domains as virtual mailbox domains, the Maildir folder as
  ``virtual_mailbox_base``, ``permit_mynetworks, reject_unauth_destination`` (only the host's
  own agents may send out; nobody relays through it), ``message_size_limit`` = the agents' own
  limit, no local delivery, no aliases, opportunistic STARTTLS between MTAs;
* ``master.cf``: Postfix's standard services, none chrooted (the maps live outside the spool);
* ``transport``: ``DOMAIN smtp:[HOST]:PORT`` per ``--route`` (no MX look-up for those);
* ``vmailbox``: each agent's address -> its Maildir, relative to the base.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from setmail.errors import WorldError
from setmail.mail.smtpd import DEFAULT_SIZE_LIMIT
from setmail.world.config import World

MASTER_CF = """\
# master.cf written by setmail postfix-config: Postfix's standard services, none chrooted
# service type  private unpriv  chroot  wakeup  maxproc command
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Host:
    """One Postfix host: where it listens, its directories, its routes to the other hosts."""

    config_dir: Path
    listen: str = "all"                   # an IP address, or "all"
    hostname: str = ""                    # default: mx.<first domain>
    queue_dir: Path | None = None         # default: Postfix's own (/var/spool/postfix)
    data_dir: Path | None = None
    log_file: Path | None = None          # default: syslog
    routes: Mapping[str, str] = field(default_factory=dict)   # domain -> HOST[:PORT]
    routes_only: bool = False             # no DNS: mail goes to own domains and routes only
    mynetworks: str = ""                  # default: the listen address, else loopback
    uid: int = 0
    gid: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)    # further main.cf parameters


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def mailbox_base(bundles: Sequence[World]) -> Path:
    """The one folder holding the Maildirs of every bundle of the host (virtual_mailbox_base)."""
    bases = {b.mailboxes.absolute() for b in bundles}
    if len(bases) != 1:
        raise WorldError("the bundles of one host must share their Maildir folder (export them "
                         "with the same --mailboxes DIR); they have "
                         + ", ".join(sorted(map(str, bases))))
    return bases.pop()


def _ipv4(listen: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(listen))
    except ValueError:
        return None


def _route(target: str) -> str:
    host, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    if port and not port.isdigit():
        raise WorldError(f"bad route target {target!r}: expected HOST or HOST:PORT")
    return f"smtp:[{host}]:{port or 25}"


def host_files(bundles: Sequence[World], host: Host) -> dict[str, str]:
    """main.cf, master.cf, transport and vmailbox of ``host`` for ``bundles`` (module doc)."""
    if not bundles:
        raise WorldError("name at least one bundle this host serves")
    for b in bundles:
        if not b.bundle:
            raise WorldError(f"{b.home} is a whole world, not a bundle (setmail export)")
    base = mailbox_base(bundles)
    own = [(b.agent(b.bundle).address, b.maildir(b.bundle)) for b in bundles]
    domains = sorted({_domain(a) for a, _ in own})
    ip = _ipv4(host.listen)
    cfg = {
        "compatibility_level": "3.6",
        "myhostname": host.hostname or f"mx.{domains[0]}",
        "mydomain": domains[0],
        "myorigin": "$myhostname",
        "mydestination": "",
        "inet_interfaces": host.listen,
        "inet_protocols": "ipv4" if ip else "all",
        **({"smtp_bind_address": ip} if ip else {}),
        "mynetworks": host.mynetworks or (f"{ip}/32" if ip else "127.0.0.0/8 [::1]/128"),
        **({"queue_directory": str(host.queue_dir)} if host.queue_dir else {}),
        **({"data_directory": str(host.data_dir)} if host.data_dir else {}),
        **({"maillog_file": str(host.log_file),
            "maillog_file_prefixes": str(host.log_file.parent)} if host.log_file else {}),
        "syslog_name": f"postfix-{domains[0].split('.')[0]}",
        "alias_maps": "", "alias_database": "", "local_recipient_maps": "",
        "local_transport": "error:5.1.1 no local delivery on a setmail host",
        "virtual_mailbox_domains": " ".join(domains),
        "virtual_mailbox_base": str(base),
        "virtual_mailbox_maps": f"hash:{host.config_dir / 'vmailbox'}",
        "virtual_uid_maps": f"static:{host.uid}", "virtual_gid_maps": f"static:{host.gid}",
        "transport_maps": f"hash:{host.config_dir / 'transport'}",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "message_size_limit": str(DEFAULT_SIZE_LIMIT),
        "smtp_tls_security_level": "may",
        "smtpd_peername_lookup": "no", "in_flow_delay": "0",
        **({"default_transport": "error:5.4.4 no route to this domain from a setmail host",
            "smtp_dns_support_level": "disabled"} if host.routes_only else {}),
        **host.extra,
    }
    names = ", ".join(b.bundle for b in bundles)
    main = (f"# main.cf of {cfg['myhostname']}, written by setmail postfix-config for {names}\n"
            + "".join(f"{k} = {v}".rstrip() + "\n" for k, v in cfg.items()))
    transport = "".join(f"{d} {_route(t)}\n" for d, t in sorted(host.routes.items()))
    vmailbox = "".join(f"{a} {os.path.relpath(m, base)}/\n" for a, m in own)
    return {"main.cf": main, "master.cf": MASTER_CF, "transport": transport,
            "vmailbox": vmailbox}


def mismatched_smtp(bundles: Sequence[World], host: Host) -> list[str]:
    """Bundles whose agents would not submit to this host's Postfix (one line each)."""
    ip = _ipv4(host.listen)
    if ip is None:
        return []
    return [f"{b.bundle} sends to {b.smtp_host}:{b.smtp_port}, not to this host's Postfix at "
            f"{ip}:25 (export it with --smtp {ip}:25)"
            for b in bundles if (b.smtp_host, b.smtp_port) != (ip, 25)]
