"""Structured logs: JSON lines when not on a terminal, and never a secret."""

import asyncio
import atexit
import contextlib
import functools
import logging
import queue
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

_SECRET_WORDS = (
    "authorization",
    "signing_key",
    "signingkey",
    "access_key",
    "encryption_key",
    "token",
    "secret",
)


@functools.lru_cache(maxsize=1024)
def _names_a_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _drop_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A last line of defence: no log field whose name looks like a secret is ever written."""
    for key in list(event_dict):
        if _names_a_secret(key):
            event_dict[key] = "[redacted]"
    return event_dict


class _UtcTimestamp:
    """`timestamp` as ISO 8601 UTC with microseconds, formatting only the fraction per line.

    structlog's TimeStamper formats the whole date for every line; the dispatcher writes one
    line per attempt, thousands per second, and the date changes once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


class _BackgroundLogWriter:
    """Log lines leave the event loop: a writer thread does the file I/O.

    A write can block (a slow pipe to a log collector, a full disk queue), and a blocked write
    in the event loop would stall every request and delivery of the process. The lines of one
    loop iteration are handed over together, so the dispatcher's line per attempt costs one
    hand-over per batch; the thread writes them in order. Whatever is pending is written at
    exit.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._pending: list[bytes] = []
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def msg(self, message: bytes) -> None:
        self._pending.append(message)
        if len(self._pending) > 1:
            return  # a hand-over is already scheduled
        try:
            asyncio.get_running_loop().call_soon(self._hand_over)
        except RuntimeError:  # no loop (start-up, the CLI's short commands)
            self._hand_over()

    debug = info = warning = error = critical = exception = msg

    def _hand_over(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            lines.append(b"")
            self._queue.put(b"\n".join(lines))

    def _write_forever(self) -> None:
        while (chunk := self._queue.get()) is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
                self._file.write(chunk)
                self._file.flush()

    def close(self) -> None:
        self._hand_over()
        self._queue.put(None)
        self._thread.join(timeout=5)


def configure_logging(level: str = "INFO") -> None:
    renderer: Any
    factory: Any
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    else:
        # orjson: a log line per attempt is on the dispatcher's hot path.
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        shared = _BackgroundLogWriter(sys.stderr.buffer)
        factory = lambda *_: shared  # noqa: E731
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _UtcTimestamp(),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # asyncpg's pool logs a traceback each time it fails to reopen a connection during an
    # outage; it keeps retrying by itself, and the outage is already one line of ours.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
