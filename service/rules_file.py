"""The rules file (``Settings.rules_file``): a rule set read at start-up, in the form PUT /v1/rules takes.

Read by the ``serve`` command, so that a bad file stops it with one line before any worker starts, and by
each worker, which stores it when the store holds no rule set yet (``service.rules_follower``). Imports
nothing that sets up metrics: the ``serve`` process must not import prometheus_client before its workers
start (``service.settings.export_for_workers``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from models.errors import InvalidInputError
from models.rules import Rule, RuleError, RuleSet
from service.errors import decode_error_detail
from service.schemas import RulesIn
from service.settings import ENV


def load_rules_file(path: str) -> tuple[Rule, ...]:
    """The rules of the rule-set file ``path`` (the body of PUT /v1/rules). Raises InvalidInputError, one
    line naming the variable, the file and what is wrong in it."""
    where = f"{ENV['rules_file']}: {path}"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidInputError(f"{where}: cannot be read ({e.strerror or e})") from None
    try:
        rules = msgspec.json.decode(data, type=RulesIn).rules
        RuleSet(version=0, rules=rules)  # distinct ids
    except msgspec.MsgspecError as e:
        raise InvalidInputError(f"{where}: {decode_error_detail(e, RulesIn, where='rule set')}") from None
    except RuleError as e:
        raise InvalidInputError(f"{where}: {e}") from None
    return rules
