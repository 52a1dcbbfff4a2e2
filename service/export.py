"""``journeyrec export-events``: the service's event stream as a JSON Lines training file.

One line per stream entry, oldest first, in the native event format the training loaders read:
``visitor_id``, ``item_id``, ``event``, ``timestamp`` (ISO-8601 UTC with ``Z``), then ``event_id``,
``session_id``, ``channel``, ``quantity``, ``value`` and ``country`` when set. The file appears complete or
not at all: it is written to a temporary file next to ``out`` and renamed over it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from models.domain import Event
from models.errors import InvalidInputError, StoreUnavailableError
from service.schemas import iso_utc
from service.settings import Settings
from service.store.base import StreamEntry
from service.store.factory import redis_store
from service.store.redis_store import RedisStore

PAGE_SIZE = 10_000  # stream entries per XRANGE call
#: seconds a reply may take to start arriving: a page of up to PAGE_SIZE entries from every shard is one
#: round trip, which a busy server (or a background save's fork) can hold back longer than the request
#: path's ``redis_socket_timeout`` (0.5 s), and a slow page is not an outage of an offline export
EXPORT_SOCKET_TIMEOUT = 30.0


class ExportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """events: lines written; last_entry_id: stream id of the last one (pass it as ``--after`` next time to
    export only newer events; None when nothing was exported); path: the file written."""

    events: int
    last_entry_id: str | None
    path: str

    def __str__(self) -> str:
        if self.last_entry_id is None:
            return f"exported 0 events to {self.path} (no stream entries after the given id)"
        return (
            f"exported {self.events} events to {self.path}; "
            f"last stream entry {self.last_entry_id} (use --after {self.last_entry_id} next time)"
        )


def event_line(e: Event) -> dict[str, Any]:
    """One event in the native JSON Lines format (unset optional fields left out)."""
    stamp = iso_utc(e.timestamp)
    line: dict[str, Any] = {
        "visitor_id": e.visitor_id,
        "item_id": e.item_id,
        "event": e.event.value,
        "timestamp": stamp,
    }
    optional = {
        "event_id": e.event_id,
        "session_id": e.session_id,
        "channel": e.channel.value if e.channel is not None else None,
        "quantity": e.quantity,
        "value": e.value,
        "country": e.country,
    }
    line.update({k: v for k, v in optional.items() if v is not None})
    return line


def out_file(out: Path) -> Path:
    """``--out`` of an export: a file name in an existing directory (InvalidInputError naming it else)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise InvalidInputError(f"--out {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise InvalidInputError(f"--out {out}: is a directory, not a file name")
    return out


async def export_events(
    settings: Settings, out: Path, *, after: str = "0", page_size: int = PAGE_SIZE
) -> ExportSummary:
    """Write every stream entry after ``after`` to ``out`` (JSON Lines); returns what was written.

    Raises InvalidInputError without a Redis URL or for a bad ``after`` id, StoreUnavailableError (one line,
    naming the Redis server without credentials) when Redis cannot be read; ``out`` is then left untouched.
    """
    if not settings.redis_url:
        raise InvalidInputError("exporting the event stream needs a Redis URL (--redis-url)")
    out = out_file(out)
    store = export_store(settings)
    encoder = msgspec.json.Encoder()
    written, last = 0, None
    try:
        # mkstemp creates the file readable by its owner only: the events are personal data
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                cursor = after
                while True:
                    page = await _page(store, cursor, page_size, settings.redis_url)
                    if not page:
                        break
                    f.write(b"".join(encoder.encode(event_line(entry.event)) + b"\n" for entry in page))
                    written += len(page)
                    cursor = last = page[-1].entry_id
                    if len(page) < page_size:
                        break
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        await store.close()
    return ExportSummary(events=written, last_entry_id=last, path=str(out))


def export_store(settings: Settings) -> RedisStore:
    """The store an export reads the stream with: ``settings``' Redis, waiting up to
    ``EXPORT_SOCKET_TIMEOUT`` for a reply (or the configured timeout, if longer)."""
    return redis_store(settings, socket_timeout=max(settings.redis_socket_timeout, EXPORT_SOCKET_TIMEOUT))


async def _page(store: RedisStore, after: str, count: int, url: str) -> list[StreamEntry]:
    try:
        return await store.read_stream(after, count)
    except StoreUnavailableError as e:
        # the store's own message is written for HTTP clients; an operator wants the server and the cause
        cause = e.__cause__ or e
        detail = " ".join(str(cause).split())
        raise StoreUnavailableError(
            f"cannot read the event stream from {safe_url(url)}: {type(cause).__name__}: {detail}"
        ) from cause


def safe_url(url: str) -> str:
    """The Redis URL without a password (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
