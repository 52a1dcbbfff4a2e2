"""Redis URLs: ``redis://``, ``rediss://`` and ``unix://`` name one server (redis-py's own parsing);
``redis+cluster://`` and ``rediss+cluster://`` name a Redis Cluster by its seed nodes.

A cluster URL is ``redis+cluster://[user[:password]@]host:port[,host:port...]``: the client asks the first
seed that answers for the cluster's layout and then talks to every master itself (following ``MOVED``).
A cluster has one database, so the URL takes no ``/N`` (``SELECT`` is refused in cluster mode) and no
query string.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from msgspec import Struct

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_NODE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class ClusterUrlError(ValueError):
    """A cluster URL that cannot be used; the message names the part at fault, never the password."""


class ClusterUrl(Struct, frozen=True, kw_only=True):
    """A parsed cluster URL: seed nodes ``(host, port)`` in the URL's order, TLS, credentials."""

    nodes: tuple[tuple[str, int], ...]
    ssl: bool
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """``url`` (a ``redis+cluster://`` or ``rediss+cluster://`` URL) parsed; ClusterUrlError else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ClusterUrlError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
    if "?" in rest or "#" in rest:
        raise ClusterUrlError("a cluster URL takes no query string or fragment")
    auth, at, hosts = rest.rpartition("@")
    if not at:
        auth, hosts = "", rest
    hosts, slash, db = hosts.partition("/")
    if slash and db:
        raise ClusterUrlError(
            f"a Redis Cluster has a single database: drop /{db} (SELECT is not allowed in cluster mode)"
        )
    nodes: list[tuple[str, int]] = []
    for part in hosts.split(","):
        m = _NODE.match(part.strip())
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise ClusterUrlError(f"cluster seed node {part.strip()!r} is not host:port")
        nodes.append((m.group(1).strip("[]"), int(m.group(2))))
    username: str | None = None
    password: str | None = None
    if auth:
        user, colon, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return ClusterUrl(
        nodes=tuple(nodes), ssl=scheme.lower() == "rediss+cluster", username=username, password=password
    )
