"""The feedback store interface, the read structs of contract 3, and the counter layout both stores share.

Counters (per experiment; ``"-"`` is the service-wide summary: every served list and every attributed event
is counted there too, whatever experiment applied, with variant ``"-"``):

- daily cells: (day, stage at serve time, variant, metric) -> total, for ``DAILY_METRICS``
- per-visitor sums, for experiments other than ``"-"``: for (stage or ``"all"``, variant): the number of
  visitors served a list of the variant in that stage (``"all"``: in any stage, each visitor once), and over
  those visitors the sum, the sum of squares of each per-visitor value (``METRICS``), and the sum of
  clicks × impressions. These let per-visitor intervals (delta method) be computed from O(cells) numbers.

Per-visitor values: ``lists``, ``impressions``, ``clicks``, ``carts``, ``purchases``, ``revenue`` count the
lists served and the events attributed to them (``revenue``: the ``value`` of attributed purchases);
``clicked``, ``carted``, ``converted`` are 0/1: the visitor viewed a product / added to cart / purchased
anything at or after their first exposure (the first list of that variant and stage); ``revenue_all`` sums
the value of every purchase at or after first exposure (intent to treat).

Counters are exact: each update is applied once (events are deduplicated by ``event_id`` in the visitor's
own state, see the stores), and are kept without expiry.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from models.attribution import Method, ServedList
from models.domain import Event, EventType
from models.experiments import DailyCell, VariantStageStats

SUMMARY = "-"  # experiment (and variant) name of lists no experiment applied to, and of the summary
ALL = "all"  # the stage of the per-visitor cells that count a visitor once per variant
DAILY_METRICS = ("lists", "impressions", "clicks", "carts", "purchases", "revenue")
INDICATORS = ("clicked", "carted", "converted")
METRICS = (*DAILY_METRICS, *INDICATORS, "revenue_all")
CROSS = "clicks*impressions"
#: the counter of each attributed event kind
EVENT_METRIC = {
    EventType.IMPRESSION: "impressions",
    EventType.PRODUCT_VIEW: "clicks",
    EventType.ADD_TO_CART: "carts",
    EventType.PURCHASE: "purchases",
}
#: the per-visitor indicator each event kind sets (any item, attributed or not)
EVENT_INDICATOR = {
    EventType.PRODUCT_VIEW: "clicked",
    EventType.ADD_TO_CART: "carted",
    EventType.PURCHASE: "converted",
}
#: counters of one experiment are spread over this many keys (by visitor), summed when read: no single
#: Redis key (slot) takes every write
SHARDS = 8
SEP = "\x1f"  # between the parts of a counter name; ids never hold control characters
#: the field of a retired experiment's counter keys: until when (ms) it counts nothing (not a counter)
RETIRED = SEP.join(("retired", "until"))


class FeedbackResult(msgspec.Struct, frozen=True):
    """What feeding events did: ``impressions`` new impression events, ``duplicates`` impression events
    whose event_id was seen before (skipped); ``outcomes`` (event kind, Method value) -> events, for the
    attributable events that were not duplicates."""

    impressions: int = 0
    duplicates: int = 0
    outcomes: dict[tuple[str, str], int] = msgspec.field(default_factory=dict)


class FeedbackStore(Protocol):
    async def log_served(self, visitor_id: str, served: ServedList) -> None:
        """Keep a served list for the visitor (one write in the visitor's slot): from now on events carrying
        its id are credited to it. Raises StoreUnavailableError."""
        ...

    async def send_served(self, visitor_id: str, served: ServedList) -> Awaitable[None]:
        """``log_served`` in two halves, for the request path: when this returns the write is on its way,
        ahead of any write or read a later request makes (so an event about the list, sent once the
        answer is out, finds it); awaiting the result confirms it (StoreUnavailableError if it failed).
        Raises StoreUnavailableError when nothing could be sent."""
        ...

    async def count_served(self, lists: Sequence[tuple[str, ServedList]]) -> Deltas:
        """Count kept lists ((visitor id, list) pairs) in the visitors' exposures; returns the counter
        increments for ``add``."""
        ...

    async def add(self, deltas: Deltas) -> None:
        """Add counter increments (one write per counter key)."""
        ...

    async def record_events(self, events: list[Event]) -> FeedbackResult:
        """Attribute events and update the counters (impressions included; other kinds are ignored).
        Idempotent on ``event_id`` for as long as served lists are kept."""
        ...

    async def served(self, visitor_id: str) -> list[ServedList]:
        """The visitor's kept served lists, oldest first, with their clicks and impressions."""
        ...

    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]:
        """The counters of one experiment (``"-"``: the summary, daily cells only), sorted."""
        ...

    async def retire_experiment(self, experiment: str) -> float:
        """Drop the counters of a deleted experiment and count nothing more under its id for
        ``windows.retention`` seconds: events crediting the lists it served can arrive for as long as those
        lists are kept, and must not count for a new experiment of the same id. Returns until when (POSIX
        seconds). Raises StoreUnavailableError."""
        ...

    async def retired_until(self, experiment: str) -> float | None:
        """Until when (POSIX seconds) the id of a deleted experiment counts nothing (None: it does not)."""
        ...

    async def erase(self, visitor_id: str) -> int:
        """Forget the visitor's served lists and feedback state; returns the records removed."""
        ...

    async def close(self) -> None: ...


class Deltas:
    """Counter increments: (experiment, shard) -> counter name -> amount."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, experiment: str, shard: int, name: str, amount: float) -> None:
        if amount:
            self.by_key[(experiment, shard)][name] += amount

    def merge(self, other: Deltas) -> None:
        for key, names in other.by_key.items():
            mine = self.by_key[key]
            for name, amount in names.items():
                mine[name] += amount

    def __bool__(self) -> bool:
        return any(self.by_key.values())


@functools.lru_cache(maxsize=1 << 16)
def shard_of(visitor_id: str) -> int:
    """The counter shard a visitor's increments go to (stable across processes)."""
    digest = hashlib.blake2b(visitor_id.encode("utf-8"), digest_size=2).digest()
    return int.from_bytes(digest, "big") % SHARDS


def daily_name(day: str, stage: str, variant: str, metric: str) -> str:
    return SEP.join(("d", day, stage, variant, metric))


def visitors_name(stage: str, variant: str) -> str:
    return SEP.join(("n", stage, variant))


def sum_name(kind: str, stage: str, variant: str, metric: str) -> str:
    """kind: ``s`` sum, ``q`` sum of squares, ``x`` cross product."""
    return SEP.join((kind, stage, variant, metric))


def stats_of(counters: Mapping[str, float]) -> tuple[list[VariantStageStats], list[DailyCell]]:
    """Counter names -> totals, as the read structs (every metric present, 0 when never counted)."""
    visitors: dict[tuple[str, str], float] = defaultdict(float)
    sums: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(
        lambda: {"s": dict.fromkeys(METRICS, 0.0), "q": dict.fromkeys(METRICS, 0.0), "x": {CROSS: 0.0}}
    )
    daily: dict[tuple[str, str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(DAILY_METRICS, 0.0)
    )
    for name, value in counters.items():
        parts = name.split(SEP)
        if parts[0] == "d" and len(parts) == 5:
            daily[(parts[1], parts[3], parts[2])][parts[4]] += value
        elif parts[0] == "n" and len(parts) == 3:
            visitors[(parts[2], parts[1])] += value
        elif parts[0] in ("s", "q", "x") and len(parts) == 4:
            bucket = sums[(parts[2], parts[1])][parts[0]]
            bucket[parts[3]] = bucket.get(parts[3], 0.0) + value
    cells = sorted(set(visitors) | set(sums))
    stats = [
        VariantStageStats(
            variant=v,
            stage=s,
            visitors=int(visitors[(v, s)]),
            sums=sums[(v, s)]["s"],
            squares=sums[(v, s)]["q"],
            cross=sums[(v, s)]["x"],
        )
        for v, s in cells
    ]
    days = [DailyCell(day=d, variant=v, stage=s, counts=c) for (d, v, s), c in sorted(daily.items())]
    return stats, days


def sum_counters(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The shards of one experiment added up."""
    total: dict[str, float] = defaultdict(float)
    for part in parts:
        for name, value in part.items():
            total[name] += value
    return dict(total)


def count_outcome(outcomes: dict[tuple[str, str], int], event: Event, method: Method) -> None:
    key = (event.event.value, method.value)
    outcomes[key] = outcomes.get(key, 0) + 1
