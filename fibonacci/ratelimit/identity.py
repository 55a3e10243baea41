"""Whose request is this: the client address that a request's budgets are counted for.

The connecting address (REMOTE_ADDR) is the client, unless it is one of our
own proxies (FIB_TRUSTED_PROXIES); then the proxy's X-Real-IP names the
client. The shipped nginx config overwrites X-Real-IP with the address it saw,
so a client cannot choose whose budget it spends by sending the header itself.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.conf import settings

from fibonacci import addresses

if TYPE_CHECKING:  # settings.py validates FIB_TRUSTED_PROXIES here, before django.http loads
    from django.http import HttpRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# FIB_TRUSTED_PROXIES entry meaning "requests over a Unix socket come from our proxy".
UNIX_SOCKET = "unix"
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


@functools.lru_cache(maxsize=4096)
def _is_trusted(remote_addr: str, entries: tuple[str, ...]) -> bool:
    if not remote_addr:
        return UNIX_SOCKET in entries
    address = addresses.parse(remote_addr)
    return address is not None and any(address in net for net in _trusted_networks(entries))


def in_networks(address: str, entries: Iterable[str]) -> bool:
    """Whether `address` falls in one of `entries` (addresses or CIDRs; `unix` matches "")."""
    return _is_trusted(address, tuple(entries))


def is_trusted_address(address: str) -> bool:
    """Whether `address` is one of our proxies (FIB_TRUSTED_PROXIES); "" means a Unix socket."""
    return _is_trusted(address, tuple(settings.FIB_TRUSTED_PROXIES))


def is_from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the connecting peer is one of our proxies (FIB_TRUSTED_PROXIES)."""
    return is_trusted_address(request.META.get("REMOTE_ADDR") or "")


def client_ip(request: HttpRequest) -> str:
    """The client's canonical address, or `unknown` when there is none to be had.

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
        forwarded = addresses.canonical(request.META.get("HTTP_X_REAL_IP", ""))
        if forwarded is not None:
            return forwarded
    return addresses.canonical(request.META.get("REMOTE_ADDR") or "") or addresses.UNKNOWN
