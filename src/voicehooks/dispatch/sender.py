"""Sending one attempt: a pooled aiohttp client, the SSRF check at connect time, 2 KiB of answer.

aiohttp is the client because deliveries are the hot path: on a 2-core machine it POSTs several
times faster than httpx (see bench/README.md); httpx stays in the tests.
"""

import functools
import ipaddress
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.payload import BytesPayload
from aiohttp.resolver import DefaultResolver
from yarl import URL

import voicehooks
from voicehooks.config import IPNetwork, Settings
from voicehooks.dispatch.signing import signature_headers
from voicehooks.net.addresses import is_blocked_address, parse_ip_host

RESPONSE_EXCERPT_BYTES = 2048


class BlockedAddressError(OSError):
    """The destination resolved to an address deliveries may not reach."""


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then refuses internal addresses: the check sees what is connected to."""

    def __init__(self, allowed: list[IPNetwork]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            if is_blocked_address(address, self._allowed):
                raise BlockedAddressError(f"blocked address {address}")
        return results

    async def close(self) -> None:
        await self._inner.close()


# Slots, not frozen: one is built per attempt, and a frozen init costs three times as much.
@dataclass(slots=True)
class Outcome:
    succeeded: bool
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: str | None = None
    # The headers the request went out with (none when it was not sent).
    request_headers: dict[str, str] | None = None


class Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._user_agent = f"voicehooks/{voicehooks.__version__}"

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_in_flight,
            limit_per_host=self.settings.max_in_flight_per_host,
            resolver=GuardedResolver(self.settings.allowed_target_networks),
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.delivery_timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one sender per process, URLs repeat
    def _literal_blocked(self, url: str) -> str | None:
        """Why an IP-literal URL may not be sent to (names are checked by the resolver)."""
        host = URL(url).raw_host or ""
        address = parse_ip_host(host.strip("[]"))
        if address is not None and is_blocked_address(
            address, self.settings.allowed_target_networks
        ):
            return f"blocked address {address}"
        return None

    async def send(
        self,
        *,
        delivery_id: str,
        url: str,
        body: bytes,
        signing_key: str,
        previous_keys: tuple[str, ...],
    ) -> Outcome:
        assert self._session is not None, "start() the sender first"
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        blocked = self._literal_blocked(url)
        if blocked is not None:
            return Outcome(False, elapsed(), error=blocked)
        timestamp = int(time.time())
        headers: dict[str, str] = {
            "content-type": "application/json",
            "user-agent": self._user_agent,
            **signature_headers(
                delivery_id=delivery_id,
                timestamp=timestamp,
                url=url,
                body=body,
                signing_key=signing_key,
                previous_keys=previous_keys,
            ),
        }
        try:
            async with self._session.post(
                url,
                # A ready payload skips aiohttp's per-request lookup of how to encode `data`.
                data=BytesPayload(body, content_type="application/json"),
                headers=headers,
                allow_redirects=False,
            ) as response:
                excerpt = await _read_excerpt(response)
                status = response.status
                retry_after = response.headers.get("retry-after")
        except TimeoutError:
            return Outcome(False, elapsed(), error="timeout", request_headers=headers)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, BlockedAddressError):
                return Outcome(False, elapsed(), error=str(exc.os_error), request_headers=headers)
            return Outcome(False, elapsed(), error="host not found", request_headers=headers)
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            return Outcome(
                False,
                elapsed(),
                error="connection refused" if refused else str(exc),
                request_headers=headers,
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}".replace("\x00", "\ufffd")
            return Outcome(False, elapsed(), error=reason[:500], request_headers=headers)
        # Postgres text holds no NUL: it becomes U+FFFD like any other undecodable byte.
        text = excerpt.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        if 200 <= status < 300:
            return Outcome(True, elapsed(), status, None, text, request_headers=headers)
        error = "redirect (not followed)" if 300 <= status < 400 else None
        return Outcome(False, elapsed(), status, error, text, retry_after, headers)


async def _read_excerpt(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length <= RESPONSE_EXCERPT_BYTES:
        return await response.read()  # the usual short answer, in one read
    chunks = bytearray()
    while len(chunks) < RESPONSE_EXCERPT_BYTES:
        chunk = await response.content.read(RESPONSE_EXCERPT_BYTES - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)
