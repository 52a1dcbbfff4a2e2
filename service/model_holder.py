"""Holds the live model and swaps it without downtime.

Request handlers read ``holder.current`` once per request and use that object for the whole request, so a
reload that lands mid-request changes nothing for it. A reload loads and verifies the new ``latest`` in a
worker thread beside the live model (the event loop keeps serving), then replaces the reference in one
assignment; if the new artifact is bad the old model keeps serving and the error is reported. Reloads are
serialized with an ``asyncio.Lock`` so two concurrent reloads cannot race each other.

Every worker process has its own holder: ``POST /v1/models/reload`` reaches one of them. The others follow
through ``reload_if_changed``, which the app calls every ``model_poll_seconds`` (a stat of the ``latest``
link); a refused artifact is not tried again until ``latest`` points somewhere else or the refused
directory's files change (an artifact repaired in place is picked up by the next poll).

The holder also keeps the merchandising rule set this worker serves (``rules``, which
``service.rules_follower`` follows): a new model installs it before it serves.

And it serves the live catalog (``models.overlay``, which ``service.catalog_follower`` follows):
``apply_overlay`` builds ``Recommender.with_overlay`` of the served front in a worker thread (from the model
as loaded, keeping the front's rules) and swaps the result in the same way; a reload applies the held
overlay to the new model before it serves, so a new model never serves an older catalog than the last one.

Experiments serve other versions and blends beside the live model (``variant``): a small LRU
(``VARIANT_CAP``) of fronts loaded and verified like a reload, each kept serving the held live catalog and
rules (brought up to date by the first request after either moved; ``service.experiment_runtime`` also
refreshes them every poll).

``activate`` rolls back (or forward) to a published version: it loads and verifies it as a reload does,
then repoints ``latest`` at it atomically (a temporary symlink renamed over ``latest``, as publishing does)
and serves it; the other workers follow ``latest`` within ``model_poll_seconds``.

Any failure while reading a version is a refusal (``ArtifactError``), whatever the loader raised: it is
logged, counted (``journeyrec_model_reloads_total{outcome="refused"}``, here and nowhere else) and kept
as ``last_refusal`` for ``GET /v1/models`` and the readiness detail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import msgspec

from models.artifact import LATEST, MANIFEST, list_versions, point_latest, resolve_latest
from models.blend import stage_agnostic_weights
from models.errors import ArtifactError, InvalidInputError, NotFoundError
from models.overlay import EMPTY_OVERLAY, CatalogOverlay
from models.recommender import Recommender
from models.rules import RuleSet
from models.serving_rules import Exploration
from service import metrics
from service.errors import NotReadyError
from service.rules_follower import install_rules, served_version
from service.schemas import Refusal

log = logging.getLogger("journeyrec.service")

Loader = Callable[[Path], Recommender]
#: fronts of other model versions and blends kept loaded for experiments (each holds a whole model)
VARIANT_CAP = 4
#: the blend a variant front serves: the model's per-stage blend, or one blend for every stage
STAGE_AWARE, STAGE_AGNOSTIC = "stage_aware", "stage_agnostic"
#: (name, size, mtime_ns) of each file of a version directory: what a refused artifact looked like
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(directory: Path) -> Fingerprint:
    """The files of ``directory`` by name, size and modification time (empty if it cannot be listed)."""
    try:
        return tuple(
            sorted((p.name, st.st_size, st.st_mtime_ns) for p in directory.iterdir() for st in (p.stat(),))
        )
    except OSError:
        return ()


class ReloadResult(msgspec.Struct, frozen=True):
    version: str
    previous: str | None
    changed: bool
    directory: str


class ModelHolder:
    """The live ``Recommender`` of one process (``None`` until the first successful load)."""

    def __init__(
        self,
        models_dir: Path | None,
        *,
        loader: Loader = Recommender.load,
        exploration: Exploration | None = None,
    ) -> None:
        self.models_dir = models_dir
        #: the share of product slots kept for the live catalog's new items (None: off)
        self.exploration = exploration
        self._loader = loader
        self._current: Recommender | None = None
        self._current_dir: Path | None = None
        self._lock = asyncio.Lock()
        self.loaded_at: float | None = None
        self.last_error: str | None = None
        self.last_refusal: Refusal | None = None
        # a bad artifact ``reload_if_changed`` will not retry while its files stay as they were
        self._refused: tuple[Path, Fingerprint] | None = None
        #: the merchandising rule set this worker serves (None: not read from the store yet)
        self.rules: RuleSet | None = None
        #: the live catalog the served model follows (version 0: nothing told yet)
        self.overlay: CatalogOverlay = EMPTY_OVERLAY
        #: the last catalog version that could not be applied (not tried again)
        self.overlay_failed: int | None = None
        # (version, blend) -> (the front as loaded, the front serving the held overlay and rules), LRU order
        self._variants: OrderedDict[tuple[str, str], tuple[Recommender, Recommender]] = OrderedDict()
        self._variant_lock = asyncio.Lock()

    @classmethod
    def with_model(cls, recommender: Recommender, models_dir: Path | None = None) -> ModelHolder:
        """A holder already serving ``recommender`` (tests, embedding)."""
        holder = cls(models_dir)
        holder._current = recommender
        holder._current_dir = recommender.bundle.directory.resolve()
        holder.loaded_at = time.time()
        return holder

    @property
    def current(self) -> Recommender | None:
        return self._current

    @property
    def base(self) -> Recommender | None:
        """The live model as loaded (``current`` without the live catalog)."""
        model = self._current
        return None if model is None else model.base

    def knows(self, item_id: str) -> bool:
        """Whether the item is in the loaded model or the live catalog (retired items included)."""
        base = self.base
        return item_id in self.overlay.items or (base is not None and base.has_item(item_id))

    async def apply_overlay(self, overlay: CatalogOverlay) -> bool:
        """Serve ``overlay``: the live model with it is built in a worker thread (requests keep being served
        by the current one), then swapped in. False when there was nothing to do; raises what
        ``with_overlay`` raised (the current model keeps serving, and this version is not tried again:
        ``overlay_failed``)."""
        async with self._lock:
            if overlay.version == self.overlay.version:
                return False
            front = self._current
            if front is not None:
                try:
                    served = await asyncio.to_thread(front.with_overlay, overlay, self.exploration)
                except Exception:
                    self.overlay_failed = overlay.version
                    raise
                self._current = served
            self.overlay = overlay
            metrics.CATALOG_VERSION.set(overlay.version)
            return True

    def require(self) -> Recommender:
        """The live model, or NotReadyError (503) while none is loaded."""
        model = self._current
        if model is None:
            reason = f": {self.last_error}" if self.last_error else ""
            raise NotReadyError(f"no model loaded yet{reason}")
        return model

    def versions(self) -> list[str]:
        return list_versions(self.models_dir) if self.models_dir is not None else []

    def latest_name(self) -> str | None:
        if self.models_dir is None:
            return None
        try:
            return resolve_latest(self.models_dir).name
        except ArtifactError:
            return None

    async def reload(self) -> ReloadResult:
        """Load ``latest``, verify it, swap it in. Raises ArtifactError (old model kept) if it is bad."""
        if self.models_dir is None:
            raise ArtifactError("no models directory configured (--models / JOURNEYREC_MODELS)")
        models_dir = self.models_dir
        async with self._lock:
            previous = self._current
            target: Path | None = None
            seen: Fingerprint = ()
            try:
                target = (await asyncio.to_thread(resolve_latest, models_dir)).resolve()
                if previous is not None and target == self._current_dir:
                    metrics.count_reload(False, None)
                    return ReloadResult(previous.version, previous.version, False, str(target))
                # taken before loading: a repair that lands during the load is then still seen as a change
                seen = await asyncio.to_thread(fingerprint, target)
                model = await self._prepare(target)
            except Exception as e:  # noqa: BLE001 (any failure while reading a version refuses it)
                reason = _reason(e)
                self._refuse(target, seen, reason, unexpected=not isinstance(e, ArtifactError))
                kept = f"; still serving {previous.version}" if previous is not None else ""
                raise ArtifactError(f"reload refused: {reason}{kept}") from None
            self._swap(model, target)
            old = previous.version if previous is not None else None
            log.info("model %s loaded from %s (previous: %s)", model.version, target, old)
            metrics.count_reload(model.version != old, self.loaded_at)
            return ReloadResult(model.version, old, model.version != old, str(target))

    async def activate(self, version: str) -> ReloadResult:
        """Serve the published ``version`` and point ``latest`` at it, so every worker follows.

        The version is loaded and verified first (in a worker thread, beside the live model); only then is
        ``latest`` repointed (atomically) and the version swapped in. Raises NotFoundError when ``version``
        is not a published version, InvalidInputError naming it when it fails verification (``latest``
        and the live model are then left as they were), ArtifactError when no models directory is set."""
        if self.models_dir is None:
            raise ArtifactError("no models directory configured (--models / JOURNEYREC_MODELS)")
        models_dir = self.models_dir
        if (models_dir / MANIFEST).is_file():
            raise InvalidInputError(
                f"{models_dir} is a single model version, not a directory of versions with a '{LATEST}' link"
            )
        if version not in await asyncio.to_thread(list_versions, models_dir):
            raise NotFoundError(f"model version {version!r} is not published (GET /v1/models)")
        async with self._lock:
            previous = self._current
            target = (models_dir / version).resolve()
            if previous is not None and target == self._current_dir:
                model = previous
            else:
                try:
                    model = await self._prepare(target)
                except Exception as e:  # noqa: BLE001 (any failure while reading a version refuses it)
                    reason = _reason(e)
                    raise InvalidInputError(
                        f"model version {version!r} failed verification and was not activated: {reason}"
                    ) from None
            await asyncio.to_thread(point_latest, models_dir, version)
            if model is not previous:
                self._swap(model, target)
            old = previous.version if previous is not None else None
            log.info("model %s activated: %s now points at it (previous: %s)", model.version, LATEST, old)
            metrics.count_reload(model.version != old, self.loaded_at)
            return ReloadResult(model.version, old, model.version != old, str(target))

    async def adopt(self, version: str) -> ReloadResult:
        """Serve the published ``version`` without moving ``latest`` (a worker that starts while ``latest``
        is refused joins the version the rest of the fleet serves; it still follows ``latest`` when that
        is repaired). Raises NotFoundError when ``version`` is not published, ArtifactError when it does
        not load or no models directory is set."""
        if self.models_dir is None:
            raise ArtifactError("no models directory configured (--models / JOURNEYREC_MODELS)")
        models_dir = self.models_dir
        if version not in await asyncio.to_thread(list_versions, models_dir):
            raise NotFoundError(f"model version {version!r} is not published")
        async with self._lock:
            previous = self._current
            target = (models_dir / version).resolve()
            try:
                model = await self._prepare(target)
            except Exception as e:  # noqa: BLE001 (any failure while reading a version refuses it)
                reason = _reason(e)
                raise ArtifactError(f"model version {version!r} failed verification: {reason}") from None
            self._swap(model, target)
            old = previous.version if previous is not None else None
            log.info(
                "model %s loaded from %s, as the other workers serve it (latest refused)", version, target
            )
            metrics.count_reload(model.version != old, self.loaded_at)
            return ReloadResult(model.version, old, model.version != old, str(target))

    async def _prepare(self, target: Path) -> Recommender:
        """The version in ``target`` loaded and verified, with the live catalog and the rules applied. Hashing
        and loading arrays is CPU and disk work: off the event loop, beside the live model."""
        loaded = await asyncio.to_thread(self._loader, target)
        model = await asyncio.to_thread(loaded.with_overlay, self.overlay, self.exploration)
        await asyncio.to_thread(install_rules, model, self.rules)
        return model

    def _swap(self, model: Recommender, target: Path) -> None:
        """Serve ``model`` (loaded from ``target``); called under the lock."""
        rules = self.rules
        if rules is not None and served_version(model) != rules.version:
            install_rules(model, rules)  # the rules moved while it loaded
        # one reference assignment: requests already running keep the object they read
        self._current = model
        metrics.RULES_VERSION.set(served_version(model))
        self._current_dir = target
        self.loaded_at = time.time()
        self.last_error = None

    def _refuse(self, target: Path | None, seen: Fingerprint, reason: str, *, unexpected: bool) -> None:
        """Record, log and count a refused version (the live model, if any, keeps serving)."""
        self.last_error = reason
        if target is not None:
            self._refused = (target, seen)
            self.last_refusal = Refusal(target.name, reason, time.time())
        metrics.count_reload(None, None)
        live = self._current
        kept = f"; still serving {live.version}" if live is not None else ""
        if unexpected:
            log.error("model reload refused: %s%s", reason, kept, exc_info=True)
        else:
            log.error("model reload refused: %s%s", reason, kept)

    def _fresh(self, front: Recommender) -> bool:
        """Whether ``front`` serves the held live catalog and rule set."""
        held = self.rules.version if self.rules is not None else 0
        return front.overlay is self.overlay and served_version(front) == held

    def ready(self, version: str | None, blend: str | None = None) -> Recommender | None:
        """What ``variant`` would answer when it has it ready (nothing to load or build), else None."""
        live = self._current
        if live is None:
            return None
        if (version is None or version == live.version) and (blend is None or blend == STAGE_AWARE):
            return live
        entry = self._variants.get((live.version if version is None else version, blend or STAGE_AWARE))
        return entry[1] if entry is not None and self._fresh(entry[1]) else None

    async def variant(self, version: str | None, blend: str = STAGE_AWARE) -> Recommender:
        """A front serving model ``version`` (None: the live one) with ``blend`` (``STAGE_AWARE``, or
        ``STAGE_AGNOSTIC``: ``blend.stage_agnostic_weights``), the held live catalog and rules. The live
        front itself when that is what is asked. Another version is loaded and verified as a reload is
        (in a worker thread); raises ArtifactError when it is refused or not published, NotReadyError
        while no model is loaded. At most ``VARIANT_CAP`` are kept, least recently used dropped first."""
        live = self.require()
        name = live.version if version is None else version
        if name == live.version and blend == STAGE_AWARE:
            return live
        key = (name, blend)
        entry = self._variants.get(key)
        if entry is not None and self._fresh(entry[1]):
            self._variants.move_to_end(key)
            return entry[1]
        async with self._variant_lock:
            entry = self._variants.get(key)
            if entry is not None and self._fresh(entry[1]):
                return entry[1]
            loaded = (
                entry[0] if entry is not None else await asyncio.to_thread(self._load_variant, name, blend)
            )
            front = await asyncio.to_thread(loaded.with_overlay, self.overlay, self.exploration)
            await asyncio.to_thread(install_rules, front, self.rules)
            self._variants[key] = (loaded, front)
            self._variants.move_to_end(key)
            while len(self._variants) > VARIANT_CAP:
                self._variants.popitem(last=False)
            return front

    def _load_variant(self, version: str, blend: str) -> Recommender:
        """Model ``version`` as loaded (the live one's arrays when it is the live version), with ``blend``."""
        live = self.require().base
        if version == live.version:
            model = live
        else:
            if self.models_dir is None or version not in list_versions(self.models_dir):
                raise ArtifactError(f"model version {version!r} is not published (GET /v1/models)")
            try:
                model = self._loader(self.models_dir / version)
            except Exception as e:  # noqa: BLE001 (any failure while reading a version refuses it)
                reason = _reason(e)
                raise ArtifactError(f"model version {version!r}: {reason}") from None
        if blend == STAGE_AWARE:
            return model
        weights = stage_agnostic_weights(model.manifest.blend)
        bundle = dataclasses.replace(model.bundle, blend_weights=weights)
        return Recommender(bundle, model.candidate_settings)

    def refusal_pending(self) -> Refusal | None:
        """The last refusal if it came after the live model was loaded (this worker is behind), else None."""
        refusal = self.last_refusal
        if refusal is None or (self.loaded_at is not None and refusal.at < self.loaded_at):
            return None
        return refusal

    async def reload_if_changed(self) -> ReloadResult | None:
        """Reload when ``latest`` names another version than the live one (and not one already refused, unless
        its files changed since); None when there is nothing to do. Raises ArtifactError, as ``reload``
        does, when the new artifact is refused; that version is then skipped until ``latest`` moves again
        or its files change."""
        if self.models_dir is None:
            return None
        try:
            target = (await asyncio.to_thread(resolve_latest, self.models_dir)).resolve()
        except ArtifactError:
            return None  # nothing published (yet): the live model, if any, keeps serving
        if target == self._current_dir:
            return None
        refused = self._refused
        if (
            refused is not None
            and target == refused[0]
            and await asyncio.to_thread(fingerprint, target) == refused[1]
        ):
            return None  # still the artifact that was refused
        return await self.reload()


def _reason(e: Exception) -> str:
    """Why a version was refused: an ArtifactError's message, else the unexpected error's type and text."""
    return str(e) if isinstance(e, ArtifactError) else f"{type(e).__name__}: {e}"
