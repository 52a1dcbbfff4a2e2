"""Every worker serves the store's current merchandising rule set: ``RulesFollower``.

Each worker polls the rules store's version (``Settings.rules_poll_seconds``, one cheap read); when it
moved, it reads the rule set, keeps it as ``ModelHolder.rules`` and installs it on the live model
(``Recommender.install_rules``, compiled in a worker thread). A model the holder loads later installs
``holder.rules`` before it serves (``service.model_holder``), and every poll also checks that the live
model serves the held version, so a model swapped in by any other path follows within one poll.

The rules file (``Settings.rules_file``) seeds a store that holds no rule set yet (``seed``; a store that
holds one keeps it, so a restart never undoes a change made through the API). Every worker tries; the
version check of the store lets one of them store it.

A change made through this worker (``PUT /v1/rules``) is served by it at once (``serve``); a rule set
older than the one held is never installed over it. While the store does not answer, the held rule set
keeps serving; the outage is logged once, and its end once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from models.errors import StoreUnavailableError
from models.recommender import Recommender
from models.rules import CompiledRules, Rule, RuleSet
from service import metrics
from service.store.rules_base import RulesConflictError, RulesStore, UnreadableRulesError

if TYPE_CHECKING:
    from service.model_holder import ModelHolder

log = logging.getLogger("journeyrec.service")

#: who the audit list names for the rules file
SEED_WHO = "rules-file"


def served_version(model: Recommender) -> int:
    """The version of the rule set ``model`` serves (0: none)."""
    merch = model.merchandising
    return merch.version if merch is not None else 0


def install_rules(model: Recommender, ruleset: RuleSet | None) -> CompiledRules | None:
    """Serve ``ruleset`` on ``model`` (version 0 or None: no rules); pins it cannot place are logged."""
    serve = ruleset if ruleset is not None and ruleset.version > 0 else None
    compiled = model.install_rules(serve)
    if compiled is not None and compiled.unresolved:
        for rule_id, why in sorted(compiled.unresolved.items()):
            log.warning("rules version %d, rule %r: %s", compiled.version, rule_id, why)
    return compiled


class RulesFollower:
    """Keeps this worker's live model serving the store's current rule set (module docstring)."""

    def __init__(self, store: RulesStore, holder: ModelHolder) -> None:
        self.store = store
        self.holder = holder
        self._lock = asyncio.Lock()
        self._down = False
        self._unreadable: int | None = None  # the stored version last found unreadable (logged once)

    async def seed(self, rules: tuple[Rule, ...], source: str) -> None:
        """Store ``rules`` (from the rules file ``source``) when the store holds no rule set yet."""
        try:
            entry = await self.store.put(rules, SEED_WHO, expected=0)
        except RulesConflictError as e:
            log.info("the rules store holds version %d: the rules file %s is not applied", e.current, source)
        except StoreUnavailableError as e:
            log.warning("the rules file %s could not be stored: %s", source, e)
        else:
            log.info("rules file %s stored as rules version %d", source, entry.version)

    async def step(self) -> None:
        """One poll: the stored version; the rule set when it moved; the live model made to serve it."""
        try:
            version = await self.store.version()
            held = self.holder.rules
            if held is None or version != held.version:
                await self.serve(await self.store.current())
        except UnreadableRulesError as e:
            if self._unreadable != e.version:
                # the message says it all: no traceback
                log.error("rules version %d cannot be served: %s; the rules held keep serving", e.version, e)  # noqa: TRY400
                self._unreadable = e.version
            return
        except StoreUnavailableError as e:
            if not self._down:
                log.warning("the rules store does not answer (%s); the rules held keep serving", e)
                self._down = True
            return
        if self._down:
            log.warning("the rules store answers again")
            self._down = False
        await self.serve(None)

    async def serve(self, ruleset: RuleSet | None) -> None:
        """Hold ``ruleset`` (unless older than the one held; None: keep the held one) and make the live
        model serve the held one."""
        async with self._lock:
            held = self.holder.rules
            if ruleset is not None and (held is None or ruleset.version >= held.version):
                self.holder.rules = held = ruleset
            model = self.holder.current
            if held is None or model is None or served_version(model) == held.version:
                return
            compiled = await asyncio.to_thread(install_rules, model, held)
            metrics.RULES_VERSION.set(compiled.version if compiled is not None else 0)
            log.info("serving merchandising rules version %d on model %s", held.version, model.version)
