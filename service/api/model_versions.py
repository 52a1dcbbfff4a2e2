"""``GET /v1/models``, ``POST /v1/models/reload`` and ``POST /v1/models/activate`` (admin): the published
versions and the version each worker serves (``service.heartbeat``), hot reload of ``latest``, and a roll
back (or forward) to a published version."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from models.artifact import read_manifest
from models.errors import ArtifactError, StoreUnavailableError
from service.api.deps import Services
from service.auth import Scope, scopes
from service.heartbeat import Heartbeat
from service.schemas import ActivateIn, ModelInfo, ModelsOut, ReloadOut, VersionOut, WorkerOut


def published(models_dir: Path | None, versions: list[str]) -> list[VersionOut]:
    """Each version's manifest figures (its files are not hashed: that is what loading it does)."""
    if models_dir is None:
        return []
    out: list[VersionOut] = []
    for version in versions:
        try:
            m = read_manifest(models_dir / version)
        except (ArtifactError, OSError) as e:
            out.append(VersionOut(version, error=str(e)))
            continue
        out.append(VersionOut(version, m.created_at, m.trained_until, m.n_items, m.n_visitors, m.metrics))
    return out


class ModelsController(Controller):
    path = "/models"
    tags = ["models"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get(
        "/",
        opt=scopes(Scope.READ, Scope.ADMIN),
        summary="The live model, the published versions and the version each worker serves",
        description=(
            "`live` and the reload state are the answering worker's (`worker`, host:pid); `workers` lists "
            "every worker heard from within three heartbeats (JOURNEYREC_HEARTBEAT_SECONDS) with the "
            "version it serves, when it started and when it was last seen (`workers_error` says why the "
            "list is empty when the store could not be read)."
        ),
    )
    async def list_models(self, svc: NamedDependency[Services]) -> ModelsOut:
        holder = svc.holder
        model = holder.current
        live = (
            ModelInfo(model.version, holder.loaded_at, msgspec.to_builtins(model.manifest))
            if model is not None
            else None
        )
        versions = holder.versions()
        workers, workers_error = await _workers(svc.heartbeat)
        return ModelsOut(
            live=live,
            latest=holder.latest_name(),
            versions=versions,
            last_error=holder.last_error,
            last_refused=holder.last_refusal,
            catalog_version=holder.overlay.version,
            published=await asyncio.to_thread(published, holder.models_dir, versions),
            worker=svc.heartbeat.worker,
            workers=workers,
            workers_error=workers_error,
        )

    @post(
        "/reload",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Load and verify the `latest` artifact, then swap it in",
        description="A bad artifact is refused (422) and the live model keeps serving.",
    )
    async def reload(self, svc: NamedDependency[Services]) -> ReloadOut:
        result = await svc.holder.reload()  # refused: ArtifactError (422), counted by the holder
        if result.changed:
            await svc.heartbeat.beat()  # the fleet sees this worker's new version at once
        return ReloadOut(result.version, result.previous, result.changed)

    @post(
        "/activate",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Serve a published version and point `latest` at it (roll back)",
        description=(
            'Body {"version"}: a version of `GET /v1/models`. It is loaded and verified, then `latest` is '
            "repointed at it atomically and this worker serves it; every other worker follows `latest` "
            "within JOURNEYREC_MODEL_POLL_SECONDS. 404 naming the version when it is not published; 400 "
            "naming it when it fails verification (`latest` and the live model are left as they were)."
        ),
    )
    async def activate(self, svc: NamedDependency[Services], data: JSONBody[ActivateIn]) -> ReloadOut:
        result = await svc.holder.activate(data.version)
        if result.changed:
            await svc.heartbeat.beat()
        return ReloadOut(result.version, result.previous, result.changed)


async def _workers(heartbeat: Heartbeat) -> tuple[list[WorkerOut], str | None]:
    """The workers heard from lately, or none and why (the rest of the answer does not need the store)."""
    try:
        beats = await heartbeat.fleet.workers()
    except StoreUnavailableError as e:
        return [], str(e)
    now = time.time()
    return [WorkerOut.of(b, now) for b in beats], None
