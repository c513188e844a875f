"""Routing rules (routing.yaml) and who receives an event under them."""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from notifications_service.models import COORDINATORS
from shared.contracts.registry import BY_TYPE

RULES_FILE = Path(__file__).parent / "routing.yaml"
RecipientKind = Literal[
    "responsible_agencies", "requesting_agency", "coordinators", "required_countries", "beneficiary_countries"
]
# Kinds that name countries, read from the data field of the same name: each
# country resolves to every agency known for it.
COUNTRY_KINDS = frozenset({"required_countries", "beneficiary_countries"})


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipients: list[RecipientKind]


class RoutingRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: dict[str, Rule]

    @field_validator("rules")
    @classmethod
    def _known_event_types(cls, rules: dict[str, Rule]) -> dict[str, Rule]:
        unknown = sorted(set(rules) - set(BY_TYPE))
        if unknown:
            raise ValueError(f"rules for event types nobody publishes: {', '.join(unknown)}")
        return rules


def load_rules(path: Path = RULES_FILE) -> RoutingRules:
    return RoutingRules.model_validate(yaml.safe_load(path.read_text()))


def recipients_for(
    rules: RoutingRules, event_type: str, data: dict, agencies_of_country: Callable[[str], Iterable[str]]
) -> list[str]:
    """Recipient ids (agency ids, or `coordinators`) for one event, without repeats."""
    rule = rules.rules.get(event_type)
    if rule is None or not isinstance(data, dict):
        return []
    recipients: list[str] = []
    for kind in rule.recipients:
        if kind == "responsible_agencies":
            recipients.extend(data.get("responsible_agencies", []))
        elif kind == "requesting_agency":
            agency = data.get("requesting_agency_id") or data.get("agency_id")
            if agency:
                recipients.append(agency)
        elif kind == "coordinators":
            recipients.append(COORDINATORS)
        elif kind in COUNTRY_KINDS:
            for country in data.get(kind, []):
                recipients.extend(sorted(agencies_of_country(country)))
    return list(dict.fromkeys(recipients))
