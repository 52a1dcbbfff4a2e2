"""``journeyrec simulate-traffic``: the simulated shop driving a running server over HTTP.

The visitors are those of ``training.simulate`` (their latent taste, their journeys from awareness to
advocacy, sessions over ``days``), over the catalog ``journeyrec simulate --items I --seed S`` writes: the
server should serve a model trained on that catalog (``--items``, ``--shop-seed``), else the items it
recommends are unknown to the simulated visitors, who then never click them (counted in
``unknown_items_shown``).

Every visitor's session, in this order over HTTP:

1. ``POST /v1/events``: the events left from the visitor's previous session (one batch, as a storefront's
   tracker sends a page's events);
2. sometimes a login first: ``POST /v1/identities {anonymous_id, user_id}``, after which the visitor's
   requests and events use the user id (a registered visitor logs in with a probability that grows along
   the journey, most at checkout); a server answering 404/405 there has no identities, so logins are
   skipped, counted, and the visitor stays anonymous;
3. ``GET /v1/visitors/{id}/recommendations?placement=P&k=K&n_content=N&channel=C``: the list it is shown;
4. the reactions, drawn by ``training.simulate.respond`` (the response model) and queued for the next
   batch: one ``impression`` per shown item (with the answer's ``recommendation_id``; none when the
   answer has no id), clicks as ``product_view`` / ``content_view`` carrying the id, an ``add_to_cart``,
   and ``checkout`` + ``purchase`` (with ``value`` = price x quantity), then the session's own browsing
   (``Walk.play``).

Sessions run in lock step: every visitor's n-th session runs before anyone's (n+1)-th, so the reactions
of a step are drawn together, vectorised, in visitor order: the same seed and the same answers give the
same traffic, whatever the concurrency. Time is compressed: events carry no timestamp (the server's clock
stamps them) and each has its session's ``session_id``, so a return "days later" reaches the server a few
seconds later; what depends on elapsed days on the server (a cart expiring, a customer lapsing) does not
happen within a run. Every event has an ``event_id`` (``<prefix>-<session>-<n>``), so a retried batch is
counted once. A 503 or 429 is retried after its ``Retry-After`` (at most ``max_attempts`` tries); a
connection error likewise after a short back-off. A 401/403 stops the run: the key needs the ingest and read
scopes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
import msgspec
import numpy as np

from models.domain import EVENT_TYPES, STAGES, EventType
from models.errors import InvalidInputError, JourneyrecError
from training.simulate import (
    CHANNELS,
    Audience,
    Reactions,
    ResponseModel,
    Shop,
    SimulationConfig,
    Walk,
    respond,
)

_E = EventType
# chance per session that a registered visitor still anonymous logs in, by true stage (Stage order)
LOGIN_P = np.array([0.03, 0.08, 0.5, 0.3, 0.3])
_BATCH = 500  # events per POST at most (the server's JOURNEYREC_MAX_BATCH defaults to 1000)
_RETRY_CAP_S = 10.0


class TrafficConfig(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    api_key: str
    visitors: int = 1000
    concurrency: int = 16
    seed: int = 1  # the visitors and their reactions
    days: int = 30  # simulated days the visitors' sessions spread over
    placement: str = "home"
    items: int = 2000  # the catalog of ``journeyrec simulate --items ITEMS --seed SHOP_SEED``
    shop_seed: int = 1
    k: int = 10
    n_content: int = 3
    login_share: float = 0.5  # share of visitors with an account (the others never log in)
    prefix: str = ""  # visitor ids are <prefix>-a<n> (anonymous) and <prefix>-u<n>; "" = sim<seed>
    timeout: float = 30.0  # seconds per HTTP request
    max_attempts: int = 6
    response: ResponseModel = ResponseModel()

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise InvalidInputError(f"--url: expected http://host:port or https://..., got {self.url!r}")
        if not self.api_key:
            raise InvalidInputError("--api-key: empty")
        if self.visitors < 1 or self.concurrency < 1 or self.days < 1:
            raise InvalidInputError("--visitors, --concurrency and --days must be at least 1")
        if not 0.0 <= self.login_share <= 1.0:
            raise InvalidInputError("login_share must lie in [0, 1]")

    @property
    def id_prefix(self) -> str:
        return self.prefix or f"sim{self.seed}"


class Outcome(msgspec.Struct, kw_only=True):
    """What the simulated visitors did with the lists of one (variant, true stage): the simulator's truth,
    to read next to the server's own results."""

    variant: str  # the answer's variant, "-" without one
    stage: str  # the visitor's true stage when the list was served
    lists: int = 0
    impressions: int = 0  # items shown (sent as impression events when the answer had an id)
    clicks: int = 0  # product clicks (product_view with the list's id)
    content_clicks: int = 0  # clicks on content (content_view with the list's id)
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    served_at_stage: int = 0  # lists whose answer named the visitor's true stage


class TrafficSummary(msgspec.Struct, kw_only=True):
    url: str
    visitors: int
    seed: int
    days: int
    placement: str
    concurrency: int
    id_prefix: str
    sessions: int = 0
    requests: dict[str, int] = msgspec.field(default_factory=dict)  # by endpoint, retries included
    retries: int = 0
    events: dict[str, int] = msgspec.field(default_factory=dict)  # sent in answered batches, by type
    events_accepted: int = 0
    events_duplicate: int = 0
    impressions_counted: int = 0  # impressions a server counts apart from its stored events (its answer's)
    lists: int = 0
    lists_without_recommendation_id: int = 0
    unknown_items_shown: int = 0
    logins: int = 0
    logins_unsupported: int = 0  # logins skipped: the server has no /v1/identities (404/405)
    errors: dict[str, int] = msgspec.field(default_factory=dict)  # final answers >= 400 by status
    elapsed_seconds: float = 0.0
    requests_per_second: float = 0.0
    outcomes: list[Outcome] = msgspec.field(default_factory=list)


class _Shown(NamedTuple):
    """What the events of one session need of the answer: its id, variant ("-": none, "": no answer),
    the stage it named, and the ids of the items shown (products, then content)."""

    recommendation_id: str | None
    variant: str
    stage: str
    item_ids: list[str]


class ServerRefusedError(JourneyrecError):
    """The server refused the API key (401/403): nothing more can be sent."""


class _Http:
    """One ``httpx.AsyncClient`` with retries and the summary's counters."""

    def __init__(self, client: httpx.AsyncClient, summary: TrafficSummary, max_attempts: int) -> None:
        self.client, self.s, self.max_attempts = client, summary, max_attempts
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    async def call(
        self, endpoint: str, method: str, path: str, expected: tuple[int, ...] = (), **kw: Any
    ) -> httpx.Response | None:
        """The final answer (None after repeated connection errors); 503/429 and connection errors are
        retried, after Retry-After when the server gives one. Answers >= 400 count as errors unless
        ``expected``."""
        for attempt in range(self.max_attempts):
            last = attempt == self.max_attempts - 1
            self.requests[endpoint] += 1
            try:
                r = await self.client.request(method, path, **kw)
            except httpx.TransportError as e:
                if last:
                    self.errors[type(e).__name__] += 1
                    return None
                self.s.retries += 1
                await asyncio.sleep(min(0.1 * 2**attempt, _RETRY_CAP_S))
                continue
            if r.status_code in (401, 403):
                raise ServerRefusedError(
                    f"{method} {path}: the server answered {r.status_code} (the key needs ingest and read)"
                )
            if r.status_code in (429, 503) and not last:
                self.s.retries += 1
                await asyncio.sleep(_retry_after(r.headers.get("retry-after"), attempt))
                continue
            if r.status_code >= 400 and r.status_code not in expected:
                self.errors[str(r.status_code)] += 1
            return r
        raise AssertionError("unreachable")  # pragma: no cover


def _no_route(r: httpx.Response) -> bool:
    """Whether the server has no such route: 405, or Litestar's bare 404 ("Not Found"), not a 404 that
    names something missing."""
    if r.status_code == 405:
        return True
    if r.status_code != 404:
        return False
    try:
        detail = msgspec.json.decode(r.content).get("detail")
    except (msgspec.DecodeError, AttributeError):
        return True
    return detail in (None, "Not Found")


def _json(body: Any) -> bytes:
    return msgspec.json.encode(body)


def _retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait: the Retry-After header's seconds (capped), else an exponential back-off."""
    try:
        return min(max(float(value or ""), 0.0), _RETRY_CAP_S)
    except ValueError:
        return min(0.1 * 2**attempt, _RETRY_CAP_S)


class _Traffic:
    """The lock-step run: the walk's visitors, their ids and the events each still has to send."""

    def __init__(self, cfg: TrafficConfig, http: _Http, summary: TrafficSummary) -> None:
        sim = SimulationConfig(
            visitors=cfg.visitors, items=cfg.items, days=cfg.days, seed=cfg.shop_seed, warmup_days=0
        )
        self.cfg, self.http, self.s = cfg, http, summary
        self.shop = Shop(sim, np.random.default_rng(cfg.shop_seed))
        self.walk = Walk(
            msgspec.structs.replace(sim, seed=cfg.seed), self.shop, np.random.default_rng(cfg.seed)
        )
        self.rng = np.random.default_rng((cfg.seed, 1))  # logins and reactions, apart from the walk
        self.item_ids = [c.item_id for c in self.shop.items]
        self.index = {i: n for n, i in enumerate(self.item_ids)}
        self.price = self.shop.price
        p = cfg.id_prefix
        self.anon = [f"{p}-a{i}" for i in range(cfg.visitors)]
        self.user = [f"{p}-u{i}" for i in range(cfg.visitors)]
        self.registered = self.rng.random(cfg.visitors) < cfg.login_share
        self.logged_in = np.zeros(cfg.visitors, bool)
        self.visited = np.zeros(cfg.visitors, bool)  # had a session before
        self.identities = True  # until the server says it has none
        self.pending: dict[int, list[dict[str, Any]]] = {}
        self.sem = asyncio.Semaphore(cfg.concurrency)
        self.events: Counter[str] = Counter()
        self.outcomes: dict[tuple[str, int], Outcome] = {}

    def visitor_id(self, v: int) -> str:
        return self.user[v] if self.logged_in[v] else self.anon[v]

    # -- HTTP ------------------------------------------------------------------------------------------
    async def flush(self, v: int) -> None:
        """Send visitor ``v``'s queued events (batches of at most ``_BATCH``)."""
        events = self.pending.pop(v, [])
        for a in range(0, len(events), _BATCH):
            batch = events[a : a + _BATCH]
            r = await self.http.call("events", "POST", "/v1/events", content=_json({"events": batch}))
            if r is not None and r.status_code == 200:
                body = msgspec.json.decode(r.content)
                self.s.events_accepted += int(body.get("accepted", 0))
                self.s.events_duplicate += int(body.get("duplicates", 0))
                self.s.impressions_counted += int(body.get("impressions", 0))
                self.events.update(e["event"] for e in batch)

    async def login(self, v: int) -> None:
        if not self.identities:
            self.s.logins_unsupported += 1
            return
        body = {"anonymous_id": self.anon[v], "user_id": self.user[v]}
        r = await self.http.call("identities", "POST", "/v1/identities", (404, 405), content=_json(body))
        if r is None:
            return
        if _no_route(r):
            self.identities = False
            self.s.logins_unsupported += 1
        elif r.status_code < 300:
            self.logged_in[v] = True
            self.s.logins += 1
        elif r.status_code in (404, 405):  # a 404 naming something: an error like any other
            self.http.errors[str(r.status_code)] += 1

    async def session(self, v: int, login: bool, channel: str) -> dict[str, Any] | None:
        """Visitor ``v``'s requests of one session up to the list it is shown (None when it got none)."""
        async with self.sem:
            await self.flush(v)
            if login:
                await self.login(v)
            params: dict[str, Any] = {
                "placement": self.cfg.placement,
                "k": self.cfg.k,
                "n_content": self.cfg.n_content,
                "channel": channel,
            }
            r = await self.http.call(
                "recommendations", "GET", f"/v1/visitors/{self.visitor_id(v)}/recommendations", params=params
            )
        if r is None or r.status_code != 200:
            return None
        answer: dict[str, Any] = msgspec.json.decode(r.content)
        return answer

    # -- one step --------------------------------------------------------------------------------------
    async def step(self) -> int:
        """One session of every visitor still around; returns how many (0: the run is over)."""
        walk = self.walk
        act = walk.begin()
        if len(act) == 0:
            return 0
        aud = Audience.of(walk, act)
        # a visitor logs in on a later visit, never on its first page (the server knows the anonymous id)
        draw = self.rng.random(len(act)) < LOGIN_P[aud.stage]
        login = self.registered[act] & ~self.logged_in[act] & self.visited[act] & draw
        self.visited[act] = True
        channels = [CHANNELS[c].value for c in walk.chan[act].tolist()]
        sessions = walk.sess[act].tolist()
        walk.play(act)
        organic = walk.take_events()
        answers = await asyncio.gather(
            *(
                self.session(v, lg, ch)
                for v, lg, ch in zip(act.tolist(), login.tolist(), channels, strict=True)
            )
        )
        items, rank, meta = self.shown(answers)
        r = respond(self.shop, aud, items, rank, self.cfg.response, self.rng)
        walk.react(act, items, r, self.cfg.response)
        walk.finish(act)
        self.tally(aud, items, r, meta)
        self.queue(act, sessions, channels, items, r, meta, organic)
        self.s.sessions += len(act)
        return len(act)

    def shown(self, answers: list[dict[str, Any] | None]) -> tuple[np.ndarray, np.ndarray, list[_Shown]]:
        """The shop indices (int64[n, k + n_content]: -1 = empty slot, -2 = an item the shop does not know)
        and 1-based ranks of what each visitor was shown (products, then the content widget ranked on its
        own), and per answer what the events need of it."""
        kp, kc = self.cfg.k, self.cfg.n_content
        items = np.full((len(answers), kp + kc), -1, np.int64)
        rank = np.concatenate([np.arange(1, kp + 1), np.arange(1, kc + 1)])[None, :].repeat(len(answers), 0)
        meta: list[_Shown] = []
        for row, a in enumerate(answers):
            if a is None:
                meta.append(_Shown(None, "", "", []))
                continue
            self.s.lists += 1
            rid = a.get("recommendation_id")
            self.s.lists_without_recommendation_id += rid is None
            stage = (a.get("stage") or {}).get("name", "")
            shown = _Shown(rid, a.get("variant") or "-", stage, [])
            for base, key, width in ((0, "products", kp), (kp, "content", kc)):
                for j, it in enumerate((a.get(key) or [])[:width]):
                    shown.item_ids.append(str(it.get("item_id")))
                    n = self.index.get(shown.item_ids[-1], -2)
                    self.s.unknown_items_shown += n == -2
                    items[row, base + j] = n
            meta.append(shown)
        return items, rank, meta

    def tally(self, aud: Audience, items: np.ndarray, r: Reactions, meta: list[_Shown]) -> None:
        """Add the step's lists to the outcomes by (variant, true stage)."""
        value = np.where(r.purchase, self.price[np.maximum(items, 0)] * r.quantity, 0.0)
        product = (items >= 0) & (items < self.shop.n_products)
        per = (
            (items != -1).sum(axis=1),
            (r.click & product).sum(axis=1),
            (r.click & ~product).sum(axis=1),
            r.cart.sum(axis=1),
            r.purchase.sum(axis=1),
            value.sum(axis=1),
        )
        for row, m in enumerate(meta):
            if not m.variant:
                continue
            stage = int(aud.stage[row])
            o = self.outcomes.setdefault(
                (m.variant, stage), Outcome(variant=m.variant, stage=STAGES[stage].value)
            )
            o.lists += 1
            o.impressions += int(per[0][row])
            o.clicks += int(per[1][row])
            o.content_clicks += int(per[2][row])
            o.carts += int(per[3][row])
            o.purchases += int(per[4][row])
            o.revenue += float(per[5][row])
            o.served_at_stage += m.stage == STAGES[stage].value

    def queue(
        self,
        act: np.ndarray,
        sessions: list[int],
        channels: list[str],
        items: np.ndarray,
        r: Reactions,
        meta: list[_Shown],
        organic: tuple[np.ndarray, ...],
    ) -> None:
        """Queue each visitor's impressions, reactions and own browsing of the step for its next batch."""
        ids = self.item_ids
        o_vis, o_item, o_code, _clock, _sess, _chan, o_qty = organic
        bounds = np.searchsorted(o_vis, act), np.searchsorted(o_vis, act, side="right")
        for row, v in enumerate(act.tolist()):
            rid = meta[row].recommendation_id
            # (item id, event, quantity, value, carries the list's id)
            out: list[tuple[str, EventType, float, float | None, bool]] = []
            if rid is not None:
                out += [(i, _E.IMPRESSION, 1.0, None, True) for i in meta[row].item_ids]
            for j in np.flatnonzero(r.click[row]).tolist():
                i = int(items[row, j])
                product = i < self.shop.n_products
                out.append((ids[i], _E.PRODUCT_VIEW if product else _E.CONTENT_VIEW, 1.0, None, True))
                if r.cart[row, j]:
                    out.append((ids[i], _E.ADD_TO_CART, 1.0, None, True))
                if r.purchase[row, j]:
                    q = float(r.quantity[row, j])
                    out.append((ids[i], _E.CHECKOUT, 1.0, None, True))
                    out.append((ids[i], _E.PURCHASE, q, round(float(self.price[i]) * q, 2), True))
            a, b = bounds[0][row], bounds[1][row]
            for i, code, q in zip(
                o_item[a:b].tolist(), o_code[a:b].tolist(), o_qty[a:b].tolist(), strict=True
            ):
                e = EVENT_TYPES[code]
                value = round(float(self.price[i]) * q, 2) if e is _E.PURCHASE else None
                out.append((ids[i], e, float(q), value, False))
            if not out:
                continue
            vid, sid = self.visitor_id(v), f"{self.cfg.id_prefix}-s{sessions[row]}"
            batch = self.pending.setdefault(v, [])
            for n, (item_id, e, q, value, rec) in enumerate(out):
                ev: dict[str, Any] = {
                    "event_id": f"{sid}-{n}",
                    "visitor_id": vid,
                    "item_id": item_id,
                    "event": e.value,
                    "session_id": sid,
                    "channel": channels[row],
                }
                if q != 1.0:
                    ev["quantity"] = q
                if value is not None:
                    ev["value"] = value
                if rec and rid is not None:
                    ev["recommendation_id"] = rid
                batch.append(ev)

    async def run(self, progress: Callable[[str], None]) -> None:
        step = 0
        while n := await self.step():
            step += 1
            progress(f"session step {step}: {n:,} visitors, {sum(self.http.requests.values()):,} requests")
        progress("sending the last events")
        await asyncio.gather(*(self._flush_limited(v) for v in list(self.pending)))

    async def _flush_limited(self, v: int) -> None:
        async with self.sem:
            await self.flush(v)


async def run_traffic(
    cfg: TrafficConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrafficSummary:
    """Drive the server at ``cfg.url`` with simulated visitors; returns what was sent and answered.

    Raises ``InvalidInputError`` when the server cannot be reached, ``ServerRefusedError`` when it refuses
    the key. ``transport``: an httpx transport (tests pass a mock)."""
    summary = TrafficSummary(
        url=cfg.url,
        visitors=cfg.visitors,
        seed=cfg.seed,
        days=cfg.days,
        placement=cfg.placement,
        concurrency=cfg.concurrency,
        id_prefix=cfg.id_prefix,
    )
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    async with httpx.AsyncClient(
        base_url=cfg.url,
        headers={"X-API-Key": cfg.api_key, "Content-Type": "application/json"},
        timeout=cfg.timeout,
        limits=limits,
        transport=transport,
    ) as client:
        try:
            await client.get("/health/live")
        except httpx.TransportError as e:
            raise InvalidInputError(f"--url: cannot reach {cfg.url}: {e or type(e).__name__}") from None
        http = _Http(client, summary, cfg.max_attempts)
        traffic = _Traffic(cfg, http, summary)
        t0 = time.perf_counter()
        await traffic.run(progress or (lambda _m: None))
        took = time.perf_counter() - t0
    summary.requests = dict(sorted(http.requests.items()))
    summary.errors = dict(sorted(http.errors.items()))
    summary.events = {e.value: traffic.events[e.value] for e in EVENT_TYPES if traffic.events[e.value]}
    summary.elapsed_seconds = round(took, 2)
    summary.requests_per_second = round(sum(http.requests.values()) / took, 1) if took > 0 else 0.0
    summary.outcomes = [traffic.outcomes[k] for k in sorted(traffic.outcomes)]
    return summary


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


def summary_lines(s: TrafficSummary) -> list[str]:
    """The summary as plain lines: totals, events by type, errors, and the simulator's per-stage truth."""
    total = sum(s.requests.values())
    lines = [
        f"{s.visitors:,} visitors ({s.id_prefix}-a<n>), {s.sessions:,} sessions over {s.days} days: {s.url}",
        f"requests {total:,} ({_pairs(s.requests)}), retries {s.retries:,}",
        f"elapsed {s.elapsed_seconds:.1f} s, {s.requests_per_second:,.1f} requests/s",
        f"events {_pairs(s.events)}",
        f"accepted {s.events_accepted:,}, duplicates {s.events_duplicate:,}",
        f"impressions counted apart from stored events {s.impressions_counted:,}",
        f"lists {s.lists:,}, without recommendation_id {s.lists_without_recommendation_id:,}",
        f"unknown items shown {s.unknown_items_shown:,}",
        f"logins {s.logins:,}, skipped (no /v1/identities) {s.logins_unsupported:,}",
        f"errors {_pairs(s.errors)}",
    ]
    lines.append(
        "the simulator's counts (CTR: product clicks / items shown, as the feedback counters count):"
    )
    head = ("variant", "true stage", "lists", "shown", "clicks", "content", "CTR", "carts", "buys", "revenue")
    lines.append(
        "{:<16} {:<14} {:>8} {:>9} {:>8} {:>8} {:>7} {:>7} {:>6} {:>11} {:>7}".format(*head, "agreed")
    )
    for o in s.outcomes:
        ctr = o.clicks / o.impressions if o.impressions else 0.0
        agreed = o.served_at_stage / o.lists if o.lists else 0.0
        lines.append(
            f"{o.variant:<16} {o.stage:<14} {o.lists:>8,} {o.impressions:>9,} {o.clicks:>8,}"
            f" {o.content_clicks:>8,} {ctr:>7.2%} {o.carts:>7,} {o.purchases:>6,} {o.revenue:>11,.2f}"
            f" {agreed:>7.0%}"
        )
    return lines
