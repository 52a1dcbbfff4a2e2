"""``GET /v1/models`` and ``POST /v1/models/reload`` (admin): versions and hot reload of ``latest``."""

from __future__ import annotations

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from service.api.deps import Services
from service.auth import Scope, scopes
from service.schemas import ModelInfo, ModelsOut, ReloadOut


class ModelsController(Controller):
    path = "/models"
    tags = ["models"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get("/", opt=scopes(Scope.READ, Scope.ADMIN), summary="The live model and the published versions")
    async def list_models(self, svc: NamedDependency[Services]) -> ModelsOut:
        holder = svc.holder
        model = holder.current
        live = (
            ModelInfo(model.version, holder.loaded_at, msgspec.to_builtins(model.manifest))
            if model is not None
            else None
        )
        return ModelsOut(
            live=live,
            latest=holder.latest_name(),
            versions=holder.versions(),
            last_error=holder.last_error,
            last_refused=holder.last_refusal,
            catalog_version=holder.overlay.version,
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
        return ReloadOut(result.version, result.previous, result.changed)
