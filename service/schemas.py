"""Request and response bodies of the HTTP API (msgspec Structs; Litestar derives the OpenAPI from them)."""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from models.domain import Channel, Event, EventType, Source, Stage
from models.errors import InvalidInputError
from models.request import RuleEffect
from models.rules import PLACEMENT_PATTERN, Rule
from service.store.fleet_base import WorkerBeat
from service.store.rules_base import AuditEntry

if TYPE_CHECKING:
    from models.journey import StageResult
    from models.request import RecommendedItem

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# events far in the future would dominate every recency weight; allow a little clock skew
MAX_CLOCK_SKEW_S = 86_400.0


class EventIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One event as a client sends it. ``timestamp``: ISO-8601 with offset, or POSIX seconds; absent = now."""

    visitor_id: Id
    item_id: Id
    event: EventType
    timestamp: float | str | None = None
    event_id: ShortText | None = None
    session_id: ShortText | None = None
    channel: Channel | None = None
    quantity: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    value: Annotated[float, msgspec.Meta(ge=-1e12, le=1e12)] | None = None
    country: Annotated[str, msgspec.Meta(min_length=2, max_length=64)] | None = None
    recommendation_id: ShortText | None = None


class EventBatchIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A batch of events: ``{"events": [...]}``."""

    events: Annotated[list[EventIn], msgspec.Meta(min_length=1)]


def iso_utc(t: float) -> str:
    """POSIX seconds as ISO-8601 UTC with ``Z`` (the inverse of ``parse_timestamp``'s string form)."""
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: float | str | None, now: float, where: str) -> float:
    """POSIX seconds (UTC) from POSIX seconds, an ISO-8601 string with a UTC offset, or None (= now)."""
    if value is None:
        return now
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInputError(
                f"{where}: {value!r} is not an ISO-8601 timestamp or POSIX seconds"
            ) from None
        if t.tzinfo is None:
            raise InvalidInputError(f"{where}: {value!r} has no UTC offset (add 'Z' or '+00:00')")
        ts = t.timestamp()
    else:
        ts = float(value)
    if not math.isfinite(ts) or ts < 0:
        raise InvalidInputError(f"{where}: {value!r} is not a valid time")
    if ts > now + MAX_CLOCK_SKEW_S:
        raise InvalidInputError(f"{where}: {value!r} lies more than a day in the future")
    return ts


def to_event(e: EventIn, now: float, timestamp_field: str = "timestamp") -> Event:
    """The domain Event of one validated client event; ``timestamp_field`` names it in error messages."""
    if e.event is EventType.IMPRESSION and e.recommendation_id is None:
        field = timestamp_field.removesuffix("timestamp") + "recommendation_id"
        raise InvalidInputError(
            f"body field {field!r}: an impression needs the recommendation_id of the list it was shown in"
        )
    return Event(
        visitor_id=e.visitor_id,
        item_id=e.item_id,
        event=e.event,
        timestamp=parse_timestamp(e.timestamp, now, f"body field {timestamp_field!r}"),
        event_id=e.event_id,
        session_id=e.session_id,
        channel=e.channel,
        quantity=e.quantity,
        value=e.value,
        country=e.country,
        recommendation_id=e.recommendation_id,
    )


class IngestOut(msgspec.Struct, frozen=True):
    """accepted: newly stored; duplicates: already stored before under the same event_id (skipped);
    unknown_items: events of the request (stored like any other) whose item neither the live model nor
    the live catalog knows; impressions: new impression events (counted for attribution, not stored in
    the visitor's history; accepted does not include them); redirected (left out when none): events for an
    anonymous id linked to a user (``POST /v1/identities``), stored under that user and counted in accepted
    or duplicates as any other."""

    accepted: int
    duplicates: int
    unknown_items: int = 0
    impressions: int = 0
    redirected: int | msgspec.UnsetType = msgspec.UNSET  # left out when no event was redirected


class StageOut(msgspec.Struct, frozen=True):
    name: str
    confidence: float
    signals: list[str]

    @classmethod
    def of(cls, s: StageResult) -> StageOut:
        return cls(s.stage.value, round(float(s.confidence), 4), list(s.signals))


class ItemOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """One recommended item; ``source`` names the candidate source that explains it; ``rules`` the
    merchandising rules that changed it ("pinned by spring-sale"), left out when none did;
    ``exploration``: a new item shown in a slot kept for new items (left out when false)."""

    item_id: str
    score: float
    source: Source
    reason: str
    rules: tuple[RuleEffect, ...] = ()
    exploration: bool = False

    @classmethod
    def of(cls, r: RecommendedItem) -> ItemOut:
        return cls(r.item_id, r.score, r.source, r.reason, r.rules, r.exploration)


def items_out(items: list[RecommendedItem]) -> list[ItemOut]:
    return [ItemOut.of(r) for r in items]


class RecommendationsOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """recommendation_id: this answer's id (send it with the impressions, clicks, add-to-carts and
    purchases it leads to); experiment, variant: the experiment and variant that made it (left out when
    none); rules_version: the merchandising rule set applied (left out without rules); rules_fallback: it
    would have emptied the list, which is served without it (left out when false)."""

    visitor_id: str
    stage: StageOut
    products: list[ItemOut]
    content: list[ItemOut]
    model_version: str
    fallback: bool
    recommendation_id: str
    rules_version: int | None = None
    rules_fallback: bool = False
    experiment: str | None = None
    variant: str | None = None


class RelatedOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """Items related to ``item_ids`` (similar or complements).

    ``unknown``: requested anchors the model does not know (skipped); ``recommendation_id``,
    ``experiment``, ``variant`` as in RecommendationsOut."""

    item_ids: list[str]
    items: list[ItemOut]
    unknown: list[str]
    model_version: str
    recommendation_id: str
    experiment: str | None = None
    variant: str | None = None


class RetargetingOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """``recommendation_id``, ``experiment``, ``variant`` as in RecommendationsOut."""

    visitor_id: str
    campaign: str | None
    items: list[ItemOut]
    model_version: str
    recommendation_id: str
    experiment: str | None = None
    variant: str | None = None


class ExportIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Batch retargeting export.

    ``mark_sent`` (default false): record the exported items as sent by ``campaign`` so the next export for
    it skips them; a write, so it needs the ingest scope and a campaign."""

    visitor_ids: Annotated[list[Id], msgspec.Meta(min_length=1)]
    k: Annotated[int, msgspec.Meta(ge=1)] = 10
    campaign: ShortText | None = None
    mark_sent: bool = False
    category: ShortText | None = None
    exclude: list[Id] = msgspec.field(default_factory=list)


class ExportLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the JSON Lines export; ``error`` set (and ``items`` empty, no ``recommendation_id``)
    when this visitor failed; ``recommendation_id``, ``experiment``, ``variant`` as in RecommendationsOut."""

    visitor_id: str
    items: list[ItemOut]
    error: str | None = None
    recommendation_id: str | None = None
    experiment: str | None = None
    variant: str | None = None


class TouchpointOut(msgspec.Struct, frozen=True):
    """One stored event; ``stage``: the stage the visitor was in just after it
    (``models.journey.stages_after_events``)."""

    event: str
    item_id: str
    timestamp: float
    time: str
    channel: str | None
    stage: str


class JourneyOut(msgspec.Struct, frozen=True):
    visitor_id: str
    stage: StageOut
    touchpoints: list[TouchpointOut]
    cart: list[str]
    purchases: list[str]
    model_version: str


def touchpoint(e: Event, stage: Stage) -> TouchpointOut:
    iso = dt.datetime.fromtimestamp(e.timestamp, dt.UTC).isoformat(timespec="seconds")
    channel = e.channel.value if e.channel else None
    return TouchpointOut(e.event.value, e.item_id, e.timestamp, iso, channel, stage.value)


class IdentitiesOut(msgspec.Struct, frozen=True):
    """The ids linked through logins (``POST /v1/identities``). ``user_id``: the user ``visitor_id`` is
    linked to (None when it is not a linked anonymous id); ``anonymous_ids``: the anonymous ids linked to
    ``visitor_id``'s user (``user_id`` when set, else ``visitor_id`` itself), sorted."""

    visitor_id: str
    user_id: str | None
    anonymous_ids: list[str]


class ErasedOut(msgspec.Struct, frozen=True):
    visitor_id: str
    erased: bool
    records_removed: int


class IdentityIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A login: the anonymous visitor id (cookie) and the user id it belongs to. ``force`` moves an
    anonymous id that is linked to another user."""

    anonymous_id: Id
    user_id: Id
    force: bool = False


class IdentityOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """linked: false when the pair was linked already (nothing changed); previous_user_id: the user a
    forced link took the anonymous id from; events_carried / cart_carried: what of the anonymous state
    joined the user's; stage: the user's stage after the link (its first signal says why it changed),
    stage_before: the user's stage before it."""

    anonymous_id: str
    user_id: str
    linked: bool
    events_carried: int
    cart_carried: list[str]
    stage: StageOut
    stage_before: str
    model_version: str
    previous_user_id: str | None = None


class ModelInfo(msgspec.Struct, frozen=True):
    version: str
    loaded_at: float | None
    manifest: dict[str, Any]


class Refusal(msgspec.Struct, frozen=True):
    """A model version that was refused: its directory name, why, and when (POSIX seconds)."""

    version: str
    reason: str
    at: float


class VersionOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """One published version as its manifest describes it: when it was made, what it was trained on, its
    evaluation metrics; ``error``: why its manifest could not be read (the other fields are then empty)."""

    version: str
    created_at: str | None = None
    trained_until: float | None = None
    n_items: int | None = None
    n_visitors: int | None = None
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str | None = None


class WorkerOut(msgspec.Struct, frozen=True):
    """One worker process heard from lately (``service.heartbeat``): ``worker`` ``host:pid``; the model
    version it serves (None: none loaded); when it started and when it was last seen (POSIX seconds, its
    own clock) and how many seconds before this answer that was (the answering worker's clock)."""

    worker: str
    model_version: str | None
    started: float
    last_seen: float
    seen_seconds_ago: float

    @classmethod
    def of(cls, beat: WorkerBeat, now: float) -> WorkerOut:
        ago = round(max(now - beat.last_seen, 0.0), 3)
        return cls(beat.worker, beat.model_version, beat.started, beat.last_seen, ago)


class ModelsOut(msgspec.Struct, frozen=True):
    """``last_error``: why the last reload failed (None once a reload succeeds); ``last_refused``: the last
    version this worker refused, kept after later versions load; ``catalog_version``: the version of the
    live catalog this worker serves; ``published``: every version of ``versions`` with its manifest's
    figures (oldest first); ``worker``: the worker that answered (``host:pid``); ``workers``: every worker
    heard from within three heartbeat intervals with the version it serves, by worker id
    (``workers_error``: why they could not be read, the list then empty)."""

    live: ModelInfo | None
    latest: str | None
    versions: list[str]
    last_error: str | None
    last_refused: Refusal | None = None
    catalog_version: int = 0
    published: list[VersionOut] = msgspec.field(default_factory=list)
    worker: str = ""
    workers: list[WorkerOut] = msgspec.field(default_factory=list)
    workers_error: str | None = None


class ReloadOut(msgspec.Struct, frozen=True):
    version: str
    previous: str | None
    changed: bool


class ActivateIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The published version to serve and point ``latest`` at (``GET /v1/models`` lists them)."""

    version: Annotated[
        str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    ]


class HealthOut(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    model_version: str | None = None
    store: str | None = None
    detail: str | None = None


# -- merchandising rules (``/v1/rules``) ---------------------------------------------------------------------


class RulesIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole rule set (``models.rules.Rule``). ``version``: the version this one was edited from; when
    given and another change came first, the answer is 409 (absent: replace whatever is current). The
    rules file (JOURNEYREC_RULES_FILE) has the same form; a ``version`` in it is not used."""

    rules: tuple[Rule, ...]
    version: Annotated[int, msgspec.Meta(ge=0)] | None = None


class RulesOut(msgspec.Struct, frozen=True):
    """The stored rule set (version 0: none stored yet); ``served_version``: the version the answering
    worker's live model serves (None while no model is loaded), which follows ``version`` within
    JOURNEYREC_RULES_POLL_SECONDS."""

    version: int
    rules: tuple[Rule, ...]
    served_version: int | None


class RulesChangeOut(msgspec.Struct, frozen=True):
    """A stored change: its audit entry, and the pins the live model cannot place (unknown items,
    content)."""

    change: AuditEntry
    warnings: list[str]


class AuditOut(msgspec.Struct, frozen=True):
    """Changes of the rule set, newest first."""

    entries: list[AuditEntry]


class PreviewIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A proposed rule set and whom to try it on: ``visitor_ids``, or else the ``sample`` most recent
    distinct visitors of the event stream. Each visitor's list (``k`` products on ``placement``, at the
    visitor's own stage) under the proposal is compared with their list under the current rule set."""

    rules: tuple[Rule, ...]
    visitor_ids: Annotated[list[Id], msgspec.Meta(min_length=1)] | None = None
    sample: Annotated[int, msgspec.Meta(ge=1)] = 100
    k: Annotated[int, msgspec.Meta(ge=1)] = 10
    placement: Annotated[str, msgspec.Meta(pattern=PLACEMENT_PATTERN)] = "home"


class VisitorPreviewOut(msgspec.Struct, frozen=True):
    """One visitor's list under the current (``before``) and the proposed (``after``) rule set.

    entered / left  items in the proposed top-k and not in the current one, and the other way round
    changed         the list differs (items or order)
    empty           the proposed list has no item
    rules_fallback  the proposed rules would have emptied the list, which is then served without them
    """

    visitor_id: str
    stage: str
    before: list[str]
    after: list[str]
    entered: list[str]
    left: list[str]
    changed: bool
    empty: bool
    rules_fallback: bool


class PreviewOut(msgspec.Struct, frozen=True):
    """What the proposed rule set would change, before it goes live (nothing is stored).

    current_version  the stored version the proposal is compared with
    share_changed    changed / visitors (0 without visitors)
    empty            lists the proposal leaves empty; rules_fallback: lists it would have emptied
    warnings         pins of the proposal the live model cannot place
    """

    current_version: int
    model_version: str
    visitors: int
    changed: int
    share_changed: float
    empty: int
    rules_fallback: int
    lists: list[VisitorPreviewOut]
    warnings: list[str]
