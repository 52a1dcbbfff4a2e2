"""Experiments on the request path: which variant a request gets, and what serves it.

``ExperimentRuntime`` holds this worker's copy of the running experiments, indexed by placement
(``install``, swapped whole). For a request at a placement, ``serve`` picks the first running experiment
(oldest start first) on that placement that assigns the person (``models.experiments.assign``): a
person in several experiments' traffic on one placement is in the oldest only, so experiments sharing a
placement never mix their effects in one list. A person in the service-wide holdout
(``Settings.experiments_holdout``, ``models.experiments.in_global_holdout``) is in no experiment at all.
The person is the stored ``VisitorState.person`` of the visitor asking (read with the visitor's state):
the visitor id, except after a first login, when the user's state keeps the anonymous visitor's person,
so the visitor keeps their variants logged in, asked as either id (``service.store.identity``). A request
whose visitor state cannot be read hashes the request's visitor id. Assignment is a pure function of
(salt, experiment, person), so every worker and a restarted one agree without storing anything.

What serves the variant (``Served``), built once per (experiment, variant, front) off the hot path:

- ``model_version`` / ``blend``: ``ModelHolder.variant`` (the live front, or a loaded one from its LRU);
- ``rules_version``: 0 serves no merchandising rules; another version is the rule set snapshot the
  experiment document keeps (``Experiment.rules``), compiled for the front's catalog;
- ``strategy``: ``popular`` is the front's non-personalised answer (``Recommender.fallback``),
  ``trending`` the same ranked by the trending score alone.

Per request this costs one blake2b digest per running experiment on the placement and a few dict
lookups; nothing loops over items.

``ExperimentFollower`` keeps the runtime following the store: every ``experiments_poll_seconds`` one
read of the store's version; when it moved, the documents; and every poll brings the fronts of running
variants up to date (a new live catalog, rule set or model), so requests rarely wait for one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass

import msgspec

from models.errors import ArtifactError, StoreUnavailableError
from models.experiments import Assigner, Experiment, Strategy, Variant, in_global_holdout
from models.recommender import Recommender
from models.request import Filters, Recommendations, RecommendedItem, VisitorContext
from models.rules import CompiledRules, RuleSet
from service.model_holder import STAGE_AWARE, ModelHolder
from service.store.experiments_base import ExperimentStore

log = logging.getLogger("journeyrec.service")

#: the placements experiments name to apply to the answers without a page placement: retargeting (one
#: visitor or the export), similar items and complements (with the asking visitor's ``visitor_id``)
RETARGETING, SIMILAR, COMPLEMENTS = "retargeting", "similar", "complements"


@dataclass(frozen=True)
class Served:
    """How one variant serves: ``model`` (the front), ``rules`` to pass to it (None: the front's
    installed ones), the strategy, and the names the answer carries."""

    model: Recommender
    rules: CompiledRules | None
    strategy: Strategy
    experiment: str
    variant: str


def build_served(experiment: Experiment, variant: Variant, front: Recommender) -> Served:
    """What serves ``variant`` on ``front`` (module docstring); CPU work: run it in a thread."""
    model, rules = front, None
    if variant.strategy == "trending":
        model = model.with_crowd_score(model.scorer.trending)
    if variant.rules_version == 0:
        model = copy.copy(model) if model is front else model
        model.merchandising = None  # on a copy: the front keeps its rules
    elif variant.rules_version is not None:
        rules = front.compile_rules(rules_snapshot(experiment, variant.rules_version))
    return Served(model, rules, variant.strategy, experiment.id, variant.name)


def rules_snapshot(experiment: Experiment, version: int) -> RuleSet:
    """The rule set of ``version`` the experiment keeps (``service.api.experiments`` stores it)."""
    for rs in experiment.rules:
        if rs.version == version:
            return rs
    raise ArtifactError(f"experiment {experiment.id!r} holds no snapshot of rules version {version}")


class ExperimentRuntime:
    """This worker's running experiments and the fronts serving their variants."""

    def __init__(self, holder: ModelHolder, holdout: float = 0.0) -> None:
        self.holder = holder
        self.holdout = holdout
        self.running: tuple[Experiment, ...] = ()
        self._by_placement: dict[str, tuple[Assigner, ...]] = {}
        # (experiment, variant) -> (the front it was built on, what serves it)
        self._served: dict[tuple[str, str], tuple[Recommender, Served]] = {}
        # (experiment, variant) that could not be served (``_try``): not tried again until ``install``
        self._broken: set[tuple[str, str]] = set()

    def install(self, experiments: list[Experiment]) -> None:
        """Serve the running ones of ``experiments`` from the next request on (one swap)."""
        running = tuple(
            sorted((e for e in experiments if e.state == "running"), key=lambda e: (e.started_at or 0, e.id))
        )
        by_placement: dict[str, list[Assigner]] = {}
        for e in running:
            assigner = Assigner(e)
            for p in e.placements:
                by_placement.setdefault(p, []).append(assigner)
        self.running = running
        self._by_placement = {p: tuple(es) for p, es in by_placement.items()}
        keep = {(e.id, v.name) for e in running for v in e.variants}
        self._served = {k: v for k, v in self._served.items() if k in keep}
        self._broken = set()

    def runs_on(self, placement: str) -> bool:
        """Whether an experiment runs on ``placement``."""
        return bool(self._by_placement.get(placement))

    def choose(self, placement: str, person: str) -> tuple[Experiment, Variant] | None:
        """The experiment and variant of a request at ``placement`` by ``person`` (``VisitorState.person``;
        None: no experiment applies)."""
        candidates = self._by_placement.get(placement)
        if not candidates:
            return None
        if in_global_holdout(person, self.holdout):
            return None
        for assigner in candidates:
            variant = assigner(person)
            if variant is not None:
                return assigner.experiment, variant
        return None

    async def serve(self, placement: str, person: str) -> Served | None:
        """What serves this request's variant (None: the default serves it, unstamped: no experiment
        applies, or its variant cannot be served here)."""
        picked = self.choose(placement, person)
        if picked is None:
            return None
        key = (picked[0].id, picked[1].name)
        cached = self._served.get(key)
        if cached is not None and cached[0] is self.holder.ready(picked[1].model_version, picked[1].blend):
            return cached[1]  # the common case: nothing to await
        if key in self._broken:
            return None
        return await self._try(*picked)

    async def served(self, experiment: Experiment, variant: Variant) -> Served:
        """What serves ``variant``; raises ArtifactError when its model version cannot be loaded."""
        front = await self.holder.variant(variant.model_version, variant.blend or STAGE_AWARE)
        key = (experiment.id, variant.name)
        cached = self._served.get(key)
        if cached is not None and cached[0] is front:
            return cached[1]
        out = await asyncio.to_thread(build_served, experiment, variant, front)
        self._served[key] = (front, out)
        return out

    async def _try(self, experiment: Experiment, variant: Variant) -> Served | None:
        """``served``, or None for a variant that cannot be served (checked when the experiment was
        written, so its version was removed or damaged since): logged once, its people get the default
        and are counted nowhere, until the experiments change (``install``)."""
        try:
            return await self.served(experiment, variant)
        except ArtifactError as e:
            key = (experiment.id, variant.name)
            if key not in self._broken:
                # the message says it all: no traceback
                log.error("experiment %s, variant %s cannot be served: %s", experiment.id, variant.name, e)  # noqa: TRY400
                self._broken.add(key)
            return None

    async def refresh(self) -> None:
        """Bring every running variant's front up to date (loaded, built) before a request needs it."""
        for e in self.running:
            for v in e.variants:
                if (e.id, v.name) not in self._broken:
                    await self._try(e, v)


class ExperimentFollower:
    """Keeps the runtime following the store (module docstring)."""

    def __init__(self, store: ExperimentStore, runtime: ExperimentRuntime) -> None:
        self.store = store
        self.runtime = runtime
        self._version: int | None = None
        self._down = False

    async def step(self) -> None:
        try:
            version = await self.store.version()
            if version != self._version:
                self.runtime.install(await self.store.list())
                self._version = version
        except StoreUnavailableError as e:
            if not self._down:
                log.warning(
                    "the experiments store does not answer (%s); the experiments held keep running", e
                )
                self._down = True
            return
        if self._down:
            log.warning("the experiments store answers again")
            self._down = False
        if self.runtime.holder.current is not None:
            await self.runtime.refresh()

    async def changed(self) -> None:
        """This worker changed the store: follow it at once."""
        self._version = None
        await self.step()


def recommend(
    served: Served | None,
    model: Recommender,
    ctx: VisitorContext,
    k: int,
    filters: Filters,
    n_content: int,
    *,
    personalized: bool,
) -> Recommendations:
    """The visitor's list: by the variant when one applies (``served``), else by ``model``; a visitor whose
    state is unavailable gets the non-personalised answer either way (flagged ``fallback``). A variant's
    ``popular``/``trending`` list is what it is meant to serve: not flagged."""
    if served is None:
        return (
            model.recommend(ctx, k, filters, n_content)
            if personalized
            else model.fallback(ctx, k, filters, n_content)
        )
    m = served.model
    if personalized and served.strategy == "model":
        return m.recommend(ctx, k, filters, n_content, rules=served.rules)
    rec = m.fallback(ctx, k, filters, n_content, rules=served.rules)
    return msgspec.structs.replace(rec, fallback=False) if personalized else rec


def retarget(
    served: Served | None,
    model: Recommender,
    ctx: VisitorContext,
    k: int,
    filters: Filters,
    sent: frozenset[str],
) -> list[RecommendedItem]:
    """Retargeting items: by the variant when one applies (a ``popular``/``trending`` variant sends the
    crowd's favourites, less what was sent), else by ``model``."""
    if served is None or served.strategy == "model":
        return (model if served is None else served.model).retargeting(ctx, k, filters, sent)
    products = served.model.fallback(ctx, k + len(sent), filters, 0, rules=served.rules).products
    return [p for p in products if p.item_id not in sent][:k]


def related(
    served: Served | None, model: Recommender, item_ids: list[str], k: int, filters: Filters, which: str
) -> list[RecommendedItem]:
    """Similar items (``which`` "similar") or complements of ``item_ids``, by the variant's model when one
    applies (a ``popular``/``trending`` strategy has no item-to-item form: the variant's model answers)."""
    m = model if served is None else served.model
    return m.similar(item_ids, k, filters) if which == "similar" else m.complements(item_ids, k, filters)


def names(served: Served | None) -> dict[str, str]:
    """The ``experiment`` and ``variant`` fields of an answer (none without an experiment)."""
    return {} if served is None else {"experiment": served.experiment, "variant": served.variant}
