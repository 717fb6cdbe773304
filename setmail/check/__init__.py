"""An exhaustive exploration of the purchase roles under every order of delivery and every fault
up to a bound (``scripts/modelcheck``, docs/modelcheck.md)."""
