"""Many Redis commands in one round trip, packed here rather than by redis-py's pipeline.

Journey analytics sends two commands per visitor of an ingest request (a read script and a
compare-and-set script, each on one visitor's slot): hundreds per request. redis-py's pipeline packs each
argument through several Python calls (type checks, encoders, buffer cutoffs), and that packing cost more
than the rest of the work; ``pack`` writes the RESP bytes in one pass. The connection comes from the
client's pool and goes back to it; one that was interrupted mid-reply (a cancelled request, a timeout) is
disconnected first, so no later command can read a stale reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

Arg = bytes | str

try:  # the value redis-py's hiredis reader returns while a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # another redis-py: replies are read one at a time
    _NOT_ENOUGH_DATA = None


def pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """The RESP2 bytes of ``commands`` (each a command name and its arguments)."""
    try:
        # the usual case (keys, numbers, JSON text): one text, encoded once, lengths counted in characters,
        # which are bytes only when every character is ASCII (checked; otherwise the general way)
        text = "".join([_text(args) for args in commands])
    except TypeError:  # a bytes argument
        text = ""
    if text and text.isascii():
        return text.encode()
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for a in args:
            b = a if isinstance(a, bytes) else a.encode()
            out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


def _text(args: Sequence[Arg]) -> str:
    """The RESP text of one command of text arguments; TypeError when one is bytes (``str.join``)."""
    texts = cast("Sequence[str]", args)
    "".join(texts)
    return f"*{len(texts)}\r\n" + "".join([f"${len(a)}\r\n{a}\r\n" for a in texts])


async def _replies(parser: Any, n: int) -> list[Any]:
    """``n`` replies. With hiredis, as many as the buffer holds are taken at once, and the socket is read
    only when it holds none (one awaited read per buffer, not per reply); otherwise one at a time."""
    reader: Any = getattr(parser, "_reader", None)
    if _NOT_ENOUGH_DATA is None or not hasattr(reader, "gets") or not hasattr(parser, "read_from_socket"):
        return [await parser.read_response() for _ in range(n)]
    out: list[Any] = []
    gets = reader.gets
    while len(out) < n:
        reply = gets()
        if reply is _NOT_ENOUGH_DATA:
            await parser.read_from_socket()
        elif isinstance(reply, ConnectionError):  # a protocol error: the connection is out of step
            raise reply
        else:
            out.append(reply)
    return out


async def _round_trip(client: Redis, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """Each command's reply (an error reply as its ``ResponseError``), in order."""
    return await round_trip_packed(client, pack(commands), len(commands))


async def round_trip_packed(client: Redis, payload: bytes, n: int) -> list[Any]:
    """The ``n`` replies (an error reply as its ``ResponseError``) of the ``n`` commands packed in
    ``payload`` (RESP), in order: for a caller that packs a fixed command shape faster than ``pack``."""
    return await (await send_packed(client, payload, n)).replies()


class Sent:
    """Commands written to a connection whose replies are still to be read (``replies``, once): the
    connection stays out of the pool until then."""

    def __init__(self, client: Redis, conn: Any, n: int) -> None:
        self._pool = client.connection_pool
        self._conn = conn
        self._n = n

    async def replies(self) -> list[Any]:
        """The replies in order (an error reply as its ``ResponseError``); the connection goes back to the
        pool, disconnected first unless every reply was read."""
        conn, clean = self._conn, False
        try:
            # the parser hands error replies back as ResponseError values (the connection's own
            # read_response raises them, and sets a timeout per reply: one for the whole batch here)
            limit = (conn.socket_timeout or 5.0) * (1.0 + self._n / 500)
            async with asyncio.timeout(limit):
                replies = await _replies(conn._parser, self._n)
            clean = True
            return replies
        finally:
            if not clean:
                await conn.disconnect()
            await self._pool.release(conn)


async def send_packed(client: Redis, payload: bytes, n: int) -> Sent:
    """Write the ``n`` commands of ``payload`` to a pooled connection and return without waiting for the
    replies: when this returns the bytes are in the socket, so the server runs them before any command
    that a later request sends (on this or another connection) once it has been told of them."""
    pool = client.connection_pool
    conn: Any = await pool.get_connection()
    try:
        await conn.send_packed_command(payload, check_health=False)
    except BaseException:
        await conn.disconnect()
        await pool.release(conn)
        raise
    return Sent(client, conn, n)


async def send(client: Redis, commands: Sequence[Sequence[Arg]]) -> Sent:
    """``send_packed`` of ``commands`` (plain commands: a script the server has lost cannot be retried
    from here)."""
    return await send_packed(client, pack(commands), len(commands))


def evalsha(script: AsyncScript, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
    """The command that runs ``script`` (its sha must be loaded: ``run`` loads it on NOSCRIPT)."""
    return ["EVALSHA", script.sha, str(len(keys)), *keys, *args]


async def run(client: Redis, commands: Sequence[Sequence[Arg]], scripts: Sequence[AsyncScript]) -> list[Any]:
    """Run ``commands`` in one round trip; raise the first error reply. Commands refused because a script
    was not loaded (a new or flushed server) are run again once ``scripts`` are loaded: a refused
    command did not run, so running it again is safe."""
    if not commands:
        return []
    replies = await _round_trip(client, commands)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for s in scripts:
            await client.script_load(s.script)
        again = await _round_trip(client, [commands[i] for i in missing])
        for i, r in zip(missing, again, strict=True):
            replies[i] = r
    for r in replies:
        if isinstance(r, ResponseError):
            raise r
    return replies
