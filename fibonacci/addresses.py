"""The forms of a client address: canonical, its rate-limit budget key, and anonymized.

One home for every rule about how an address is written, used by the client
identity (fibonacci.ratelimit.identity), the request log and the admin's
search. Plain functions on strings; no Django imports.
"""

from __future__ import annotations

import functools
import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What an unidentifiable peer is called; all of them share one budget.
UNKNOWN = "unknown"
# IPv6 clients get a /64 each from their provider: one budget per /64.
BUDGET_PREFIX_V6 = 64
# Anonymized addresses keep the network part only (FIB_LOG_IP_ANONYMIZE).
ANONYMIZED_PREFIX_V4 = 24
ANONYMIZED_PREFIX_V6 = 48


def parse(address: str) -> IPAddress | None:
    """The address `address` names (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        return parsed.ipv4_mapped
    return parsed


@functools.lru_cache(maxsize=4096)
def canonical(address: str) -> str | None:
    """The one spelling of an address (`::ffff:192.0.2.1` is `192.0.2.1`), or None.

    Cached: parsing costs more than the rest of resolving a client, the same
    clients come back, and the bound keeps spoofed variety from growing it.
    """
    parsed = parse(address)
    return str(parsed) if parsed is not None else None


@functools.lru_cache(maxsize=4096)
def budget_key(address: str) -> str:
    """The budget an address spends: IPv4 as is, IPv6 grouped by its /64."""
    parsed = parse(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, BUDGET_PREFIX_V6), strict=False))
    return address


@functools.lru_cache(maxsize=4096)
def anonymized(address: str) -> str:
    """IPv4 cut to its /24 and IPv6 to its /48 (network address); anything else unchanged."""
    parsed = parse(address)
    if parsed is None:
        return address
    prefix = ANONYMIZED_PREFIX_V4 if parsed.version == 4 else ANONYMIZED_PREFIX_V6
    return str(ipaddress.ip_network((parsed, prefix), strict=False).network_address)


def stored(address: str, *, anonymize: bool) -> str | None:
    """How the request log stores `address` (canonical, then anonymized if asked), or None."""
    form = canonical(address)
    if form is None:
        return None
    return anonymized(form) if anonymize else form
