"""Whose request is this: the client IP, and the key its rate limit is counted under.

The connecting address (REMOTE_ADDR) is the client, unless it is one of our
own proxies (FIB_TRUSTED_PROXIES); then the proxy's X-Real-IP names the
client. The shipped nginx config overwrites X-Real-IP with the address it saw,
so a client cannot choose whose budget it spends by sending the header itself.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# FIB_TRUSTED_PROXIES entry meaning "requests over a Unix socket come from our proxy".
UNIX_SOCKET = "unix"
# What an unidentifiable peer is called; all of them share one budget.
UNKNOWN = "unknown"
# Where client_ip() keeps its answer for the rest of the request.
_RESOLVED_KEY = "fibonacci.client_ip"


@functools.lru_cache(maxsize=8)
def _trusted_networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(
        ipaddress.ip_network(entry, strict=False) for entry in entries if entry != UNIX_SOCKET
    )


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[str, ...]:
    """Validate FIB_TRUSTED_PROXIES entries (addresses, CIDRs or `unix`); raise ValueError."""
    entries = tuple(entries)
    _trusted_networks(entries)
    return entries


def _parse(address: str) -> IPAddress | None:
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        return parsed.ipv4_mapped
    return parsed


@functools.lru_cache(maxsize=4096)
def _is_trusted(remote_addr: str, entries: tuple[str, ...]) -> bool:
    if not remote_addr:
        return UNIX_SOCKET in entries
    address = _parse(remote_addr)
    return address is not None and any(address in net for net in _trusted_networks(entries))


def is_from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the connecting peer is one of our proxies (FIB_TRUSTED_PROXIES)."""
    remote_addr = request.META.get("REMOTE_ADDR") or ""
    return _is_trusted(remote_addr, tuple(settings.FIB_TRUSTED_PROXIES))


def client_ip(request: HttpRequest) -> str:
    """The client's address as a string, or `unknown` when there is none to be had.

    Resolved once per request (the rate limiter and the request log both ask)
    and kept in the WSGI environ under a key of ours.
    """
    resolved: str | None = request.META.get(_RESOLVED_KEY)
    if resolved is None:
        resolved = _resolve(request)
        request.META[_RESOLVED_KEY] = resolved
    return resolved


def _resolve(request: HttpRequest) -> str:
    if is_from_trusted_proxy(request):
        forwarded = _canonical(request.META.get("HTTP_X_REAL_IP", ""))
        if forwarded is not None:
            return forwarded
    return _canonical(request.META.get("REMOTE_ADDR") or "") or UNKNOWN


@functools.lru_cache(maxsize=4096)
def _canonical(address: str) -> str | None:
    # Parsing an address costs more than the rest of client_ip(); the same
    # clients come back, and the bound keeps spoofed variety from growing it.
    parsed = _parse(address)
    return str(parsed) if parsed is not None else None


@functools.lru_cache(maxsize=4096)
def rate_limit_key(ip: str) -> str:
    """The budget an address spends: IPv4 as is, IPv6 grouped by its /64."""
    address = _parse(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip
