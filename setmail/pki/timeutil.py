"""Time handling for a sans-I/O PKI: callers pass ``now``; everything is compared in UTC."""
from __future__ import annotations

from datetime import datetime, timezone


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
