"""Columnar event log: the in-memory form every loader produces and every trainer consumes.

All per-event arrays have length ``n_events`` and are aligned; rows are sorted by (visitor, timestamp).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.domain import EVENT_TYPES, CatalogItem, Channel, EventType
from models.errors import EmptyDatasetError

CHANNELS: tuple[Channel, ...] = tuple(Channel)


@dataclass(frozen=True)
class EventLog:
    """Interaction history plus the catalog, with dense integer ids.

    visitor   int32[n]   index into ``visitor_ids``
    item      int32[n]   index into ``catalog`` / ``item_ids``
    event     int8[n]    ``EventType.code``
    ts        float64[n] POSIX seconds, UTC
    session   int64[n]   basket/session key (hash or given number), -1 when unknown
    channel   int8[n]    index into ``CHANNELS``, -1 when unknown
    quantity  float32[n] units (1 when unknown)
    value     float32[n] monetary value or rating (NaN when unknown)
    visitor_features  one list of feature tokens per visitor (e.g. ``country:united kingdom``)
    """

    visitor_ids: list[str]
    catalog: list[CatalogItem]
    visitor: np.ndarray
    item: np.ndarray
    event: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    channel: np.ndarray
    quantity: np.ndarray
    value: np.ndarray
    visitor_features: list[list[str]] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.visitor)
        for name in ("item", "event", "ts", "session", "channel", "quantity", "value"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"EventLog.{name} has {len(getattr(self, name))} rows, expected {n}")
        if not self.visitor_features:
            object.__setattr__(self, "visitor_features", [[] for _ in self.visitor_ids])

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        *,
        visitor_ids: Sequence[str],
        item_ids: Sequence[str],
        event: np.ndarray,
        ts: np.ndarray,
        catalog: Sequence[CatalogItem] = (),
        session: np.ndarray | None = None,
        channel: np.ndarray | None = None,
        quantity: np.ndarray | None = None,
        value: np.ndarray | None = None,
        visitor_features: dict[str, list[str]] | None = None,
        source: str = "",
    ) -> EventLog:
        """Build from per-event string ids (``visitor_ids``/``item_ids`` have one entry per event).

        Items named in ``catalog`` but absent from the events are kept (content pages, new products); items
        in the events but absent from the catalog get a default product entry.
        """
        n = len(visitor_ids)
        if n == 0:
            raise EmptyDatasetError("no events left after parsing and filtering")
        v_uni, v_idx = np.unique(np.asarray(visitor_ids, dtype=object).astype(str), return_inverse=True)
        by_id = {c.item_id: c for c in catalog}
        ev_items = np.asarray(item_ids, dtype=object).astype(str)
        i_uni, i_idx = np.unique(ev_items, return_inverse=True)
        extra = sorted(set(by_id) - set(i_uni.tolist()))
        item_list = [*i_uni.tolist(), *extra]
        cat = [by_id.get(i) or CatalogItem(item_id=i) for i in item_list]
        feats = visitor_features or {}
        log = cls(
            visitor_ids=v_uni.tolist(),
            catalog=cat,
            visitor=v_idx.astype(np.int32),
            item=i_idx.astype(np.int32),
            event=np.asarray(event, dtype=np.int8),
            ts=np.asarray(ts, dtype=np.float64),
            session=np.full(n, -1, np.int64) if session is None else np.asarray(session, dtype=np.int64),
            channel=np.full(n, -1, np.int8) if channel is None else np.asarray(channel, dtype=np.int8),
            quantity=np.ones(n, np.float32) if quantity is None else np.asarray(quantity, dtype=np.float32),
            value=np.full(n, np.nan, np.float32) if value is None else np.asarray(value, dtype=np.float32),
            visitor_features=[list(feats.get(v, [])) for v in v_uni.tolist()],
            source=source,
        )
        return log.sorted()

    # -- views ----------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        return len(self.visitor)

    @property
    def n_visitors(self) -> int:
        return len(self.visitor_ids)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    @property
    def item_ids(self) -> list[str]:
        return [c.item_id for c in self.catalog]

    def sorted(self) -> EventLog:
        """Rows ordered by (visitor, ts); stable so same-time events keep file order."""
        order = np.lexsort((self.ts, self.visitor))
        return self.take(order)

    def take(self, rows: np.ndarray) -> EventLog:
        """A log with only ``rows`` (int indices or bool mask); ids and catalog are kept as they are."""
        return EventLog(
            visitor_ids=self.visitor_ids,
            catalog=self.catalog,
            visitor=self.visitor[rows],
            item=self.item[rows],
            event=self.event[rows],
            ts=self.ts[rows],
            session=self.session[rows],
            channel=self.channel[rows],
            quantity=self.quantity[rows],
            value=self.value[rows],
            visitor_features=self.visitor_features,
            source=self.source,
        )

    def concat(self, other: EventLog) -> EventLog:
        """Both logs' events in one log; they must share the id space (same ids and catalog)."""
        if other.visitor_ids is not self.visitor_ids or other.catalog is not self.catalog:
            raise ValueError("concat needs two logs of the same id space (split from one load)")
        cols = ("visitor", "item", "event", "ts", "session", "channel", "quantity", "value")
        merged = {c: np.concatenate([getattr(self, c), getattr(other, c)]) for c in cols}
        return EventLog(
            visitor_ids=self.visitor_ids,
            catalog=self.catalog,
            visitor_features=self.visitor_features,
            source=self.source,
            **merged,
        ).sorted()

    def mask_events(self, *types: EventType) -> np.ndarray:
        """bool[n]: rows whose event is one of ``types``."""
        return np.isin(self.event, np.array([t.code for t in types], dtype=np.int8))

    def event_type(self, row: int) -> EventType:
        return EVENT_TYPES[int(self.event[row])]

    def fingerprint(self) -> str:
        """sha256 over the event arrays and ids: identifies the training data in a manifest."""
        h = hashlib.sha256()
        for arr in (self.visitor, self.item, self.event, self.ts, self.quantity):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x1f".join(self.visitor_ids).encode())
        h.update("\x1f".join(self.item_ids).encode())
        return h.hexdigest()
