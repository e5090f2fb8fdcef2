"""Which IP addresses a delivery may go to (SSRF): the one rule, used when a subscription is
saved (against what its host resolves to then) and when a delivery connects (against the
address actually connected to, so DNS rebinding gains nothing)."""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence

from voicehooks.config import IPNetwork

RESOLVE_TIMEOUT = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not reachable on the internet, though the `ipaddress` tables of some Python releases call
# them global: IETF protocol assignments, IPv6 site-local, SRv6 SIDs.
_ALSO_INTERNAL = tuple(
    ipaddress.ip_network(network) for network in ("192.0.0.0/24", "fec0::/10", "5f00::/16")
)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_internal(address: IPAddress) -> bool:
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
        or any(address in network for network in _ALSO_INTERNAL)
    )


def is_blocked_address(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """True when delivering to this address could reach something that is not the internet."""
    candidates = [address]
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        candidates.append(embedded)
    if any(candidate in network for candidate in candidates for network in allowed):
        return False
    return any(_is_internal(candidate) for candidate in candidates)


def parse_ip_host(host: str) -> IPAddress | None:
    """An IP written any way a resolver would accept it: 127.0.0.1, 2130706433, 0x7f.1, ::1."""
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # "127.0.0.1." is still 127.0.0.1 to a URL parser (WHATWG)
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if host and all(ch in "0123456789abcdefx." for ch in host.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


async def resolve_host(host: str) -> list[IPAddress]:
    """Every address the host resolves to now; empty when it does not resolve (yet)."""
    literal = parse_ip_host(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def first_blocked(addresses: Iterable[IPAddress], allowed: Sequence[IPNetwork]) -> IPAddress | None:
    return next((address for address in addresses if is_blocked_address(address, allowed)), None)
