"""``/v1/rules`` (admin): the merchandising rule set, its audit list, and a preview of a proposed set.

A rule set is one versioned document in the rules store (``service.store.rules_base``); every worker
serves the stored version within ``rules_poll_seconds`` (``service.rules_follower``), the worker that
stored it at once. Rules are validated as ``models.rules`` defines them: a bad rule is a 400 naming the
rule and the field.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_409_CONFLICT

from models.errors import InvalidInputError
from models.recommender import Recommender
from models.request import Filters
from models.rules import CompiledRules, RuleSet
from service.api.deps import Services, check_k, context_of
from service.auth import Scope, scopes
from service.rules_follower import served_version
from service.schemas import (
    AuditOut,
    PreviewIn,
    PreviewOut,
    RulesChangeOut,
    RulesIn,
    RulesOut,
    VisitorPreviewOut,
)
from service.store.base import VisitorState
from service.store.rules_base import AUDIT_CAP, RulesConflictError

#: most visitors one preview compares (given or sampled)
MAX_PREVIEW_VISITORS = 500
#: stream entries a sampled preview reads at most to find its recent visitors
PREVIEW_SCAN_FACTOR = 20
#: who a change is recorded as when API keys are off
NO_AUTH_NAME = "no-auth"


def caller(request: Request[Any, Any, Any]) -> str:
    """The name of the request's API key (never the key), as the guard recorded it."""
    return str(getattr(request.state, "api_key", NO_AUTH_NAME))


def _ruleset(rules: RulesIn | PreviewIn, version: int) -> RuleSet:
    """The rules as a ``RuleSet`` (which checks the ids are distinct); a RuleError (400) otherwise."""
    return RuleSet(version=version, rules=rules.rules)


def _warnings(compiled: CompiledRules | None) -> list[str]:
    if compiled is None:
        return []
    return [f"rule {rule_id!r}: {why}" for rule_id, why in sorted(compiled.unresolved.items())]


class RulesController(Controller):
    path = "/rules"
    tags = ["rules"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get("/", opt=scopes(Scope.ADMIN), summary="The merchandising rule set and its version")
    async def get_rules(self, svc: NamedDependency[Services]) -> RulesOut:
        current = await svc.rules.store.current()
        model = svc.holder.current
        served = served_version(model) if model is not None else None
        return RulesOut(current.version, current.rules, served)

    @put(
        "/",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Replace the merchandising rule set",
        description=(
            'Body {"rules": [...], "version"}: the whole rule set. It is stored as the next version, '
            "recorded in the audit list under the API key's name, and served by every worker within "
            "JOURNEYREC_RULES_POLL_SECONDS. With `version` (the version the edit started from) the answer "
            "is 409 when another change came first. A bad rule is a 400 naming the rule and the field."
        ),
    )
    async def put_rules(
        self, request: Request[Any, Any, Any], svc: NamedDependency[Services], data: JSONBody[RulesIn]
    ) -> RulesChangeOut:
        _ruleset(data, 0)  # distinct ids, before anything is stored
        try:
            entry = await svc.rules.store.put(data.rules, caller(request), expected=data.version)
        except RulesConflictError as e:
            raise HTTPException(status_code=HTTP_409_CONFLICT, detail=str(e)) from None
        await svc.rules.serve(_ruleset(data, entry.version))
        model = svc.holder.current
        merch = model.merchandising if model is not None else None
        return RulesChangeOut(entry, _warnings(merch) if merch and merch.version == entry.version else [])

    @get("/audit", opt=scopes(Scope.ADMIN), summary="Changes of the rule set, newest first")
    async def audit(
        self,
        svc: NamedDependency[Services],
        limit: Annotated[int, Parameter(ge=1, le=AUDIT_CAP, description="entries, newest first")] = 50,
    ) -> AuditOut:
        return AuditOut(await svc.rules.store.audit(limit))

    @post(
        "/preview",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="How a proposed rule set would change visitors' lists (nothing is stored)",
        description=(
            'Body {"rules": [...], "visitor_ids": [...] or "sample": N, "k", "placement"}. For each '
            "visitor (given, or the N most recent distinct visitors of the event stream), the top-k "
            "products at their own stage under the current and the proposed rule set: items in and out, "
            f"empty lists; overall the share of lists changed. At most {MAX_PREVIEW_VISITORS} visitors."
        ),
    )
    async def preview(self, svc: NamedDependency[Services], data: JSONBody[PreviewIn]) -> PreviewOut:
        check_k(data.k, svc.settings, "body field 'k'")
        if data.visitor_ids is not None and len(data.visitor_ids) > MAX_PREVIEW_VISITORS:
            raise InvalidInputError(
                f"body field 'visitor_ids': {len(data.visitor_ids)} visitors; at most {MAX_PREVIEW_VISITORS}"
            )
        if data.sample > MAX_PREVIEW_VISITORS:
            raise InvalidInputError(f"body field 'sample': {data.sample}; at most {MAX_PREVIEW_VISITORS}")
        current = await svc.rules.store.current()
        proposed = _ruleset(data, current.version + 1)
        model = svc.holder.require()  # one model for the whole preview
        if data.visitor_ids is not None:
            visitors = list(dict.fromkeys(data.visitor_ids))
        else:
            visitors = await svc.store.recent_visitors(data.sample, data.sample * PREVIEW_SCAN_FACTOR)
        states = [await svc.store.visitor(v) for v in visitors]  # one connection at a time
        # scoring every visitor twice is CPU work: off the event loop
        return await asyncio.to_thread(_preview, model, current, proposed, states, data)


def _preview(
    model: Recommender, current: RuleSet, proposed: RuleSet, states: list[VisitorState], data: PreviewIn
) -> PreviewOut:
    merch = model.merchandising  # the stored set is most often the one this worker serves, compiled
    before_rules = (
        merch if merch is not None and merch.version == current.version else model.compile_rules(current)
    )
    after_rules = model.compile_rules(proposed)
    now = time.time()
    lists: list[VisitorPreviewOut] = []
    for state in states:
        # both lists of a visitor, and every visitor, at the same time
        ctx = msgspec.structs.replace(context_of(state, placement=data.placement), now=now)
        before = model.recommend(ctx, data.k, Filters(), 0, rules=before_rules)
        after = model.recommend(ctx, data.k, Filters(), 0, rules=after_rules)
        b = [p.item_id for p in before.products]
        a = [p.item_id for p in after.products]
        in_before, in_after = set(b), set(a)
        lists.append(
            VisitorPreviewOut(
                visitor_id=state.visitor_id,
                stage=after.stage.stage.value,
                before=b,
                after=a,
                entered=[i for i in a if i not in in_before],
                left=[i for i in b if i not in in_after],
                changed=a != b,
                empty=not a,
                rules_fallback=after.rules_fallback,
            )
        )
    n_changed = sum(v.changed for v in lists)
    return PreviewOut(
        current_version=current.version,
        model_version=model.version,
        visitors=len(lists),
        changed=n_changed,
        share_changed=round(n_changed / len(lists), 4) if lists else 0.0,
        empty=sum(v.empty for v in lists),
        rules_fallback=sum(v.rules_fallback for v in lists),
        lists=lists,
        warnings=_warnings(after_rules),
    )
