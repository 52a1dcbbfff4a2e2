"""``/v1/experiments``: A/B experiments on what lists are made from (admin writes, read or admin reads).

An experiment is one document in the experiments store (``service.store.experiments_base``: create,
replace while a draft, start, stop, delete a draft or a stopped one); every worker follows a change within
``experiments_poll_seconds`` (``service.experiment_runtime``), the worker that made it at once. The
document and the assignment are ``models.experiments``; what a variant overrides is checked when it is
stored: a ``model_version`` must be a published version this service loads and verifies (a refused one is
a 400 naming the variant and the reason), a ``rules_version`` 0 (no rules) or the stored rule set's
version, which the experiment then keeps. The service-wide holdout is a setting
(``JOURNEYREC_EXPERIMENTS_HOLDOUT``), each experiment's own holdout a field of it. Deleting one that ran
drops its results and retires its id in the feedback store (``FeedbackStore.retire_experiment``) for as
long as events can still credit the lists it served: a new experiment of that id would otherwise count
them, so putting one is a 409 until then.

``GET /v1/experiments/{id}/results``: per variant and stage, from the feedback counters
(``service.experiments_results``; the statistics are documented in ``models.experiments``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK

from models.errors import ArtifactError, InvalidInputError
from models.experiments import (
    ID_PATTERN,
    Experiment,
    ExperimentResults,
    Placement,
    SafeId,
    Share,
    Variant,
)
from models.rules import RuleSet
from service.api.deps import Services
from service.auth import Scope, scopes
from service.errors import ConflictError
from service.experiments_results import experiment_results
from service.model_holder import STAGE_AWARE
from service.schemas import iso_utc
from service.store.experiments_base import check_deletable

ExperimentId = Annotated[str, Parameter(pattern=ID_PATTERN, description="experiment id")]


class ExperimentIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An experiment as a client writes it (its id is the path's); ``models.experiments.Experiment``."""

    placements: Annotated[list[Placement], msgspec.Meta(min_length=1, max_length=32)]
    variants: Annotated[list[Variant], msgspec.Meta(min_length=2, max_length=16)]
    traffic: Share = 1.0
    holdout: Share = 0.0
    salt: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "s1"


class ExperimentsOut(msgspec.Struct, frozen=True):
    """Every experiment, by id; ``holdout``: the service-wide holdout share (a setting)."""

    experiments: list[Experiment]
    holdout: float


class DeletedOut(msgspec.Struct, frozen=True):
    """``id_free_at``: when the id can name a new experiment (POSIX seconds; None: at once, for one that
    never ran)."""

    id: SafeId
    deleted: bool
    id_free_at: float | None = None


async def _checked(svc: Services, experiment: Experiment) -> Experiment:
    """``experiment`` with its variants' overrides checked and the rule sets they name kept."""
    snapshots: list[RuleSet] = []
    for i, v in enumerate(experiment.variants):
        where = f"body field 'variants[{i}]' ({v.name!r})"
        if v.model_version is not None or (v.blend or STAGE_AWARE) != STAGE_AWARE:
            try:
                await svc.holder.variant(v.model_version, v.blend or STAGE_AWARE)
            except ArtifactError as e:
                raise InvalidInputError(
                    f"{where}: model version {v.model_version!r} is refused: {e}"
                ) from None
        if v.rules_version:
            current = await svc.rules.store.current()
            if current.version != v.rules_version:
                raise InvalidInputError(
                    f"{where}: rules_version {v.rules_version} is not the stored rule set (version "
                    f"{current.version}); an experiment keeps the version stored when it is written"
                )
            snapshots.append(current)
    return msgspec.structs.replace(experiment, rules=list({r.version: r for r in snapshots}.values()))


async def _followed(svc: Services, change: Awaitable[Experiment]) -> Experiment:
    """The stored experiment ``change`` answers, once this worker follows it (the others within a poll)."""
    out = await change
    await svc.experiments.changed()
    return out


class ExperimentsController(Controller):
    path = "/experiments"
    tags = ["experiments"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get("/", opt=scopes(Scope.READ, Scope.ADMIN), summary="Every experiment and the global holdout")
    async def list_experiments(self, svc: NamedDependency[Services]) -> ExperimentsOut:
        return ExperimentsOut(await svc.experiments.store.list(), svc.settings.experiments_holdout)

    @get("/{experiment_id:str}", opt=scopes(Scope.READ, Scope.ADMIN), summary="One experiment")
    async def get_experiment(self, svc: NamedDependency[Services], experiment_id: ExperimentId) -> Experiment:
        return await svc.experiments.store.get(experiment_id)

    @put(
        "/{experiment_id:str}",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Create an experiment, or replace a draft",
        description=(
            'Body {"placements", "variants": [{"name", "weight", "control", "model_version", "blend", '
            '"rules_version", "strategy"}], "traffic", "holdout", "salt"}. Stored as a draft; exactly one '
            "variant is the control. A running or stopped experiment is not replaced (409). A variant's "
            "model version must load and verify (400 naming the variant otherwise)."
        ),
    )
    async def put_experiment(
        self, svc: NamedDependency[Services], experiment_id: ExperimentId, data: JSONBody[ExperimentIn]
    ) -> Experiment:
        try:
            experiment = msgspec.convert(
                {"id": experiment_id, **msgspec.to_builtins(data)}, Experiment, from_attributes=False
            )
        except msgspec.ValidationError as e:
            raise InvalidInputError(f"body: {e}") from None
        until = await svc.feedback.store.retired_until(experiment_id)
        if until is not None:
            raise ConflictError(
                f"experiment {experiment_id!r} was deleted after it ran; events crediting the lists it "
                f"served may arrive until {iso_utc(until)}, so its id names no new experiment before then: "
                "choose another id"
            )
        return await _followed(svc, svc.experiments.store.put(await _checked(svc, experiment)))

    @post(
        "/{experiment_id:str}/start",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Start a draft experiment",
        description=(
            "Every worker assigns and serves its variants within JOURNEYREC_EXPERIMENTS_POLL_SECONDS."
        ),
    )
    async def start(self, svc: NamedDependency[Services], experiment_id: ExperimentId) -> Experiment:
        return await _followed(svc, svc.experiments.store.start(experiment_id))

    @post(
        "/{experiment_id:str}/stop",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Stop a running experiment (its results stay readable)",
    )
    async def stop(self, svc: NamedDependency[Services], experiment_id: ExperimentId) -> Experiment:
        return await _followed(svc, svc.experiments.store.stop(experiment_id))

    @delete(
        "/{experiment_id:str}",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Delete a draft or stopped experiment",
        description=(
            "Its results go with it. The id of an experiment that ran names no new experiment for "
            "JOURNEYREC_ATTRIBUTION_CLICK_WINDOW_SECONDS (or the impression window, if longer): events "
            "crediting the lists it served may arrive until then, and count nowhere (id_free_at says when)."
        ),
    )
    async def delete_experiment(
        self, svc: NamedDependency[Services], experiment_id: ExperimentId
    ) -> DeletedOut:
        experiment = await svc.experiments.store.get(experiment_id)
        check_deletable(experiment)  # before its results go: the store checks again as it deletes
        free_at = None
        if experiment.started_at is not None:  # it served lists: retire its counters first
            free_at = await svc.feedback.store.retire_experiment(experiment_id)
        await svc.experiments.store.delete(experiment_id)
        await svc.experiments.changed()
        return DeletedOut(experiment_id, deleted=True, id_free_at=free_at)

    @get(
        "/{experiment_id:str}/results",
        opt=scopes(Scope.READ, Scope.ADMIN),
        summary="Results per variant and journey stage, with 95 % intervals against the control",
        description=(
            "Per variant and stage: visitors, lists, impressions, clicks, CTR, add-to-cart rate, conversion "
            "rate, revenue per visitor, each with its standard error and, against the control, the "
            "difference with a 95 % interval (per visitor; delta method for CTR); a sample-ratio-mismatch "
            "check (chi-square, flagged at p < 0.001); and a daily series."
        ),
    )
    async def results(self, svc: NamedDependency[Services], experiment_id: ExperimentId) -> ExperimentResults:
        experiment = await svc.experiments.store.get(experiment_id)
        return await experiment_results(experiment, svc.stats)
