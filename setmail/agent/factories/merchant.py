"""The merchant agent's role, built from a world on disk.

world.toml options of a merchant:

* ``gateway`` (agent name, required): its acquirer's gateway, the only one whose answers count;
* ``auto_capture`` (bool, default false);
* ``mer_id`` (must match the merchantData of its signature certificate, which is what the gateway
  checks; default: read from the certificate);
* ``retry_after`` (seconds, default 1800) and ``max_retries`` (default 3): AuthReq/CapReq re-sends;
* ``expire_after`` (seconds, default ``[world] purchase_expiry``, 86400 = 1 day): an ORDERED,
  PARKED or PINIT_SENT purchase nobody continues becomes EXPIRED (parked PInitReqs and unanswered challenges go with it);
* ``auth_expiry_days`` (default: its gateway's ``auth_expiry_days``, else 7): an AUTHORIZED
  purchase not captured by then becomes EXPIRED and a ``capture`` is refused (the gateway has
  reversed the hold at the same age);
* ``sale`` (bool, default false): every AuthReq asks to capture at once (CaptureNow): approved
  purchases are CAPTURED by the AuthRes, in the gateway's open batch;
* ``auto_close`` (seconds, default 0 = never): the merchant closes a batch (BatchAdminReq close,
  then reconciles) that long after the first capture or credit it recorded in it.

Keys: ``agents/<name>/keys/{sig,kex}.{key,cert}.pem`` and
``chain.pem``; the gateway's key-exchange certificate and chain from ``agents/<gateway>/keys``; the
brand's BCI (omitted from messages if absent) and every CA's CRL (cardholder and gateway paths are
checked against them) as ``setmail.world.trees`` reads them when the agent starts.
"""
from __future__ import annotations

import datetime as dt

from setmail.agent.factories.gateway import days_option
from setmail.agent.factory import register_role
from setmail.errors import WorldError
from setmail.roles.base import Role
from setmail.world.config import AgentSpec, World


def _without_root(chain) -> tuple:
    """SET messages carry the issuing CAs but never the root (everybody pins it)."""
    return tuple(c for c in chain if c.subject != c.issuer)


@register_role("merchant")
def merchant(world: World, spec: AgentSpec) -> Role:
    from setmail.agent.certfiles import previous_key_exchange
    from setmail.crypto.cms import Identity
    from setmail.crypto.suite import get_suite
    from setmail.pki.setext import read_merchant_data
    from setmail.roles.merchant import Merchant, MerchantConfig
    from setmail.world.keys import load_cert, load_chain, load_key
    from setmail.world.trees import brand_bci, crls, trust_store

    opts = spec.options
    if not opts.get("gateway"):
        raise WorldError(f"merchant {spec.name} has no `gateway` option in world.toml")
    gateway = world.agent(opts["gateway"])
    keys, gateway_keys = world.keys_dir(spec.name), world.keys_dir(gateway.name)
    chain = _without_root(load_chain(keys / "chain.pem"))
    sig = Identity(load_key(keys / "sig.key.pem"), load_cert(keys / "sig.cert.pem"), chain)
    kex = Identity(load_key(keys / "kex.key.pem"), load_cert(keys / "kex.cert.pem"), chain,
                   previous_key_exchange(keys))
    info = read_merchant_data(sig.cert)
    mer_id = str(opts.get("mer_id") or (info.mer_id if info else ""))
    if info is None or info.mer_id != mer_id:
        raise WorldError(f"merchant {spec.name}: mer_id {mer_id!r} is not the one its signature "
                         f"certificate carries ({info.mer_id if info else 'none'!r})")
    return Merchant(MerchantConfig(
        name=spec.address, sig=sig, kex=kex, mer_id=mer_id, gateway=gateway.address,
        gateway_kex=load_cert(gateway_keys / "kex.cert.pem"),
        gateway_chain=_without_root(load_chain(gateway_keys / "chain.pem")),
        trust=trust_store(world), bci=brand_bci(world), crls=crls(world),
        auto_capture=bool(opts.get("auto_capture", False)), suite=get_suite(world.suite),
        retry_after=dt.timedelta(seconds=float(opts.get("retry_after", 1800))),
        max_retries=int(opts.get("max_retries", 3)),
        expire_after=dt.timedelta(seconds=float(opts.get("expire_after",
                                                          world.purchase_expiry))),
        auth_expiry=days_option(spec.name, opts, "auth_expiry_days",
                                gateway.options.get("auth_expiry_days", 7)),
        sale=_flag(spec.name, opts, "sale"),
        auto_close=dt.timedelta(seconds=_seconds(spec.name, opts, "auto_close"))))


def _flag(name: str, opts, option: str) -> bool:
    value = opts.get(option, False)
    if not isinstance(value, bool):
        raise WorldError(f"merchant {name}: `{option}` must be true or false")
    return value


def _seconds(name: str, opts, option: str) -> float:
    """A number of seconds >= 0 from world.toml (0: off; a clear error otherwise)."""
    value = opts.get(option, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise WorldError(f"merchant {name}: `{option}` must be a number of seconds (0: off)")
    return float(value)
