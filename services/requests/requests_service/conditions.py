"""The rules of the plan's conditions, free of I/O.

Which requests a commitment accepts, and what an accepted request, a recorded
agreement or a recorded piece of evidence does to an offer.
"""

from dataclasses import dataclass

REQUESTABLE = ("on_request", "joint_interest")
ALL_COUNTRIES = "*"  # an activation that names no country


@dataclass(frozen=True)
class OfferTerms:
    commitment_id: str
    condition_type: str
    eligible_countries: tuple[str, ...]
    required_countries: tuple[str, ...]
    removed: bool = False


@dataclass(frozen=True)
class Refusal:
    reason: str
    title: str
    detail: str


def refuse_request(offer: OfferTerms | None, commitment_id: str, country: str) -> Refusal | None:
    """Why a request from `country` cannot be accepted, or None if it can."""
    if offer is None or offer.removed:
        return Refusal("unknown_commitment", "Unknown commitment",
                       f"There is no commitment {commitment_id!r} in the catalog.")
    if offer.condition_type not in REQUESTABLE:
        how = {
            "none": "it is a standing commitment with no condition to meet",
            "regional_agreement": "its condition is an agreement among the countries, which a coordinator records",
            "evidence": "its condition is evidence of effectiveness, which a coordinator records",
        }.get(offer.condition_type, f"its condition is {offer.condition_type}")
        return Refusal("commitment_not_requestable", "This commitment cannot be requested",
                       f"{commitment_id} cannot be requested: {how}.")
    allowed = offer.eligible_countries if offer.condition_type == "on_request" else offer.required_countries
    if country not in allowed:
        return Refusal("country_not_eligible", "This country may not request this commitment",
                       f"{commitment_id} is offered to {', '.join(allowed)} only, by the plan's text; "
                       f"not to {country}.")
    return None


@dataclass(frozen=True)
class RequestOutcome:
    """What an accepted request does to its offer."""

    register_interest: bool  # joint_interest: this country's interest is new
    activate_countries: tuple[str, ...]  # countries for which the offer activates now


def accept_request(
    offer: OfferTerms, country: str, *, activated: set[str], interested: set[str]
) -> RequestOutcome:
    """`activated`: countries the offer is already active for; `interested`:
    countries that already showed interest (joint_interest)."""
    if offer.condition_type == "on_request":
        # The request is the condition: it activates at once, once per country.
        return RequestOutcome(False, () if country in activated else (country,))
    if offer.condition_type == "joint_interest":
        new_interest = country not in interested
        everyone = set(interested) | {country}
        complete = set(offer.required_countries) <= everyone
        if complete and not activated:
            return RequestOutcome(new_interest, tuple(offer.required_countries))
        return RequestOutcome(new_interest, ())
    raise ValueError(f"{offer.condition_type} offers are not activated by requests")


def activation_by_record(
    offer: OfferTerms, *, kind: str, recorded_parties: set[str], activated: set[str]
) -> tuple[str, ...]:
    """Countries activated now by a recorded agreement or evidence ("*" for all)."""
    if activated:
        return ()
    if kind == "evidence" and offer.condition_type == "evidence":
        return (ALL_COUNTRIES,)
    if kind == "agreement" and offer.condition_type == "regional_agreement":
        required = set(offer.required_countries)
        if required <= recorded_parties:
            return tuple(offer.required_countries) or (ALL_COUNTRIES,)
        return ()
    raise ValueError(f"a {kind} does not apply to a {offer.condition_type} offer")


# -- the request lifecycle ---------------------------------------------------
TERMINAL = ("fulfilled", "declined", "withdrawn")
COORDINATOR_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "submitted": ("under_review", "declined"),
    "under_review": ("approved", "info_requested", "declined"),
    "info_requested": ("under_review", "declined"),
    "approved": ("in_progress",),
    "in_progress": ("fulfilled",),
}
# The requesting agency may withdraw before approval, and answer a question.
AGENCY_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "submitted": ("withdrawn",),
    "under_review": ("withdrawn",),
    "info_requested": ("under_review", "withdrawn"),
}


def _transitions_of(role: str, is_requesting_agency: bool) -> dict[str, tuple[str, ...]]:
    if role == "coordinator":
        return COORDINATOR_TRANSITIONS
    if role == "partner" and is_requesting_agency:
        return AGENCY_TRANSITIONS
    return {}


def allowed_transitions(status: str, *, role: str, is_requesting_agency: bool) -> tuple[str, ...]:
    return _transitions_of(role, is_requesting_agency).get(status, ())


def ever_allowed(to_status: str, *, role: str, is_requesting_agency: bool) -> bool:
    """Whether the caller may move a request to `to_status` from any status at
    all: if not, the move is not theirs to make (403), whatever the request's
    state; if so but not now, the state is wrong (409)."""
    return any(to_status in targets for targets in _transitions_of(role, is_requesting_agency).values())


def who_moves_to(to_status: str) -> str:
    """Who may move a request to `to_status`, in words."""
    movers = [who for who, transitions in (("coordinators", COORDINATOR_TRANSITIONS),
                                            ("the requesting agency", AGENCY_TRANSITIONS))
              if any(to_status in targets for targets in transitions.values())]
    return " and ".join(movers) or "no one"


def transition_needs_note(to_status: str) -> bool:
    return to_status == "declined"  # a decline always says why
