"""Which URLs a subscription may target: https only, and never an internal address (SSRF).

The address rule runs twice: when a subscription is saved (against what the host resolves to
then) and at delivery time (against the address actually connected to).
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import SplitResult, urlsplit

from voicehooks.config import IPNetwork

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not reachable on the internet, though the `ipaddress` tables of some Python releases call
# them global: IETF protocol assignments, IPv6 site-local, SRv6 SIDs.
_ALSO_INTERNAL = tuple(
    ipaddress.ip_network(network) for network in ("192.0.0.0/24", "fec0::/10", "5f00::/16")
)


class TargetRefused(ValueError):
    """The URL may not be a subscription target; the message says why."""


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


def split_target(url: str, *, allow_http: bool) -> SplitResult:
    """Syntax rules of a target URL; raises TargetRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise TargetRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL: {exc}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused("must be an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetRefused("must not contain user information")
    if not parts.hostname:
        raise TargetRefused("must name a host")
    if port == 0:
        raise TargetRefused("must not use port 0")
    return parts


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


def _is_dotted_quad(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(
        part.isascii()
        and part.isdigit()
        and len(part) <= 3
        and str(int(part)) == part
        and int(part) <= 255
        for part in parts
    )


def refuse_numeric_spelling(host: str) -> None:
    """A host of digits and dots must be a dotted quad: the sender refuses any other spelling.

    aiohttp (like browsers' URL parsers) will not connect to 127.1, 2130706433 or 0177.0.0.1, so
    such a subscription could never be delivered to; better refused now, with the fix. Hex
    spellings (0x7f.0.0.1) go through the resolver and are delivered.
    """
    if not host.replace(".", "").isdigit() or _is_dotted_quad(host):
        return
    address = parse_ip_host(host)
    fix = f"write it as {address}" if address is not None else "write it as a.b.c.d, 0-255 each"
    raise TargetRefused(f"is a numeric host that is not a dotted-quad IPv4 address; {fix}")


async def check_target_url(
    url: str, *, allow_http: bool, allowed_networks: Sequence[IPNetwork]
) -> str:
    """Validate a subscription URL and return its lower-cased host; raises TargetRefused."""
    parts = split_target(url, allow_http=allow_http)
    host = parts.hostname or ""
    blocked = first_blocked(await resolve_host(host), allowed_networks)
    if blocked is not None:
        raise TargetRefused(f"resolves to a blocked address ({blocked})")
    refuse_numeric_spelling(host)
    return host
