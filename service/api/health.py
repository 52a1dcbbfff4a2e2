"""``/health/live`` (the process answers) and ``/health/ready`` (a model is loaded and the store answers)."""

from __future__ import annotations

import asyncio

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from service.api.deps import Services
from service.schemas import HealthOut

_PING_TIMEOUT_S = 1.0


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get("/live", summary="Liveness", cache=False)
    async def live(self) -> HealthOut:
        return HealthOut(status="ok")

    @get(
        "/ready",
        summary="Readiness: 503 until a model is loaded and the store answers",
        description="`detail` says what is missing, and names a newer version this worker refused.",
        cache=False,
    )
    async def ready(self, svc: NamedDependency[Services]) -> Response[HealthOut]:
        model = svc.holder.current
        try:
            store_ok = await asyncio.wait_for(svc.store.ping(), _PING_TIMEOUT_S)
        except Exception:  # noqa: BLE001 (whatever the store raises, the answer is "not ready")
            store_ok = False
        version = model.version if model is not None else None
        problems = [
            *(
                ["no model loaded" + (f": {svc.holder.last_error}" if svc.holder.last_error else "")]
                if model is None
                else []
            ),
            *([] if store_ok else ["store does not answer"]),
        ]
        notes = list(problems)
        refusal = svc.holder.refusal_pending()
        if refusal is not None and model is not None:
            # still ready (the live model serves) but behind `latest`: say why
            notes.append(f"version {refusal.version} refused: {refusal.reason}; serving {model.version}")
        body = HealthOut(
            status="ready" if not problems else "not_ready",
            model_version=version,
            store="ok" if store_ok else "unavailable",
            detail="; ".join(notes) or None,
        )
        return Response(body, status_code=HTTP_200_OK if not problems else HTTP_503_SERVICE_UNAVAILABLE)
