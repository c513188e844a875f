"""What the requests service publishes on `requests.events`."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.catalog import ConditionType, CountryCode, IsoCountryCode, _Contract

REQUESTS_SOURCE = "/caj-tracker/requests"
REQUEST_SUBMITTED = "org.caj-tracker.requests.request.submitted.v1"
REQUEST_STATUS_CHANGED = "org.caj-tracker.requests.request.status-changed.v1"
OFFER_INTEREST_REGISTERED = "org.caj-tracker.requests.offer.interest-registered.v1"
OFFER_ACTIVATED = "org.caj-tracker.requests.offer.activated.v1"
REQUEST_STALE = "org.caj-tracker.requests.request.stale.v1"

RequestStatus = Literal[
    "submitted", "under_review", "info_requested", "approved", "in_progress", "fulfilled", "declined", "withdrawn"
]
ActivationTrigger = Literal["request", "joint_interest", "regional_agreement", "evidence"]


class RequestSubmitted(_Contract):
    """A partner agency asked for assistance under a commitment (key: request id)."""

    request_id: str
    commitment_id: str
    condition_type: ConditionType
    country: CountryCode
    agency_id: str
    title: str
    submitted_at: datetime
    responsible_agencies: list[str] = Field(description="Agencies the catalog names as responsible")


class RequestStatusChanged(_Contract):
    """A request moved in its lifecycle (key: request id)."""

    request_id: str
    commitment_id: str
    country: CountryCode
    agency_id: str
    from_status: RequestStatus
    to_status: RequestStatus
    note: str | None
    changed_by_role: str
    changed_at: datetime
    responsible_agencies: list[str]


class OfferInterestRegistered(_Contract):
    """A country showed interest in a joint-interest offer (key: commitment id)."""

    commitment_id: str
    country: CountryCode
    request_id: str
    registered_countries: list[CountryCode]
    required_countries: list[CountryCode]
    registered_at: datetime


class OfferActivated(_Contract):
    """A conditional offer's condition is met (key: commitment id).

    For `on_request` offers it activates for one country (`countries` has one
    code); for the other conditions it activates once, for all concerned: for
    a regional agreement, its parties, which may be states outside the Dialogue."""

    commitment_id: str
    condition_type: ConditionType
    countries: list[IsoCountryCode]
    trigger: ActivationTrigger
    trigger_id: str = Field(description="The request, agreement or evidence record that met the condition")
    requesting_agency_id: str | None = None
    responsible_agencies: list[str]
    activated_at: datetime


class RequestStale(_Contract):
    """A request has not changed status for the staleness period while
    submitted, under review or waiting for information (key: request id);
    one event per period, `period` counting from 1."""

    request_id: str
    commitment_id: str
    country: CountryCode
    agency_id: str
    status: RequestStatus
    status_since: datetime
    stale_since: datetime
    period: int = Field(ge=1)
    responsible_agencies: list[str]
