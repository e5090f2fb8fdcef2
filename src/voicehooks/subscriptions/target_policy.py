"""Which URLs a subscription may target: https only, and never an internal address (SSRF).

The address rule (net.addresses) runs twice: here, when a subscription is saved, against
what the host resolves to then; and in the sender, against the address actually connected to.
"""

from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from voicehooks.config import IPNetwork
from voicehooks.net.addresses import first_blocked, parse_ip_host, resolve_host

MAX_URL_LENGTH = 2048


class TargetRefused(ValueError):
    """The URL may not be a subscription target; the message says why."""


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
