"""Request and response bodies of the requests API."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.catalog import ConditionType, CountryCode, IsoCountryCode
from shared.contracts.requests import RequestStatus
from shared.messaging_models import UtcDatetime


class RequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    commitment_id: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9-]+$")
    title: str = Field(min_length=3, max_length=200)
    description: str = Field(min_length=1, max_length=10_000)
    reference: str | None = Field(default=None, max_length=100, description="The agency's own reference")


class RequestRead(BaseModel):
    id: str
    commitment_id: str
    country: CountryCode
    agency_id: str
    title: str
    description: str
    reference: str | None
    status: RequestStatus
    created_at: UtcDatetime
    updated_at: UtcDatetime
    links: dict[str, str]


class RequestDetail(RequestRead):
    allowed_transitions: list[RequestStatus] = Field(
        description="The statuses the caller may move this request to now, by the lifecycle's rules "
                    "(POST .../transitions); empty when it may make none")


class RequestPage(BaseModel):
    items: list[RequestRead]
    total: int
    limit: int
    offset: int


class RequestSummary(BaseModel):
    """Counts of the requests the caller may see: what an overview shows,
    in one call instead of one list call per figure."""

    total: int
    by_status: dict[RequestStatus, int] = Field(description="Every status, zero included")
    by_country: dict[CountryCode, int] = Field(description="The countries that have requests")
    stale: int = Field(description="Waiting on someone for the staleness period, as `GET /v1/requests?stale=true`")


class HistoryEntry(BaseModel):
    at: UtcDatetime
    actor_role: str
    actor_key_id: str
    actor_agency_id: str | None
    from_status: RequestStatus | None
    to_status: RequestStatus
    note: str | None


class HistoryRead(BaseModel):
    request_id: str
    items: list[HistoryEntry]


class TransitionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    to: RequestStatus
    note: str | None = Field(default=None, max_length=5_000)


class AgreementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reference: str = Field(min_length=3, max_length=500, description="Where the agreement is written down")
    # The countries concerned, as the plan's text has them: states outside the Dialogue too.
    parties: list[IsoCountryCode] = Field(min_length=1, max_length=249, description="ISO 3166-1 alpha-2 codes")
    note: str | None = Field(default=None, max_length=5_000)


class EvidenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reference: str = Field(min_length=3, max_length=500, description="e.g. an evaluation report's title or address")
    note: str | None = Field(default=None, max_length=5_000)


class ConditionRecordRead(BaseModel):
    id: str
    commitment_id: str
    kind: Literal["agreement", "evidence"]
    reference: str
    parties: list[IsoCountryCode]
    note: str | None
    recorded_at: UtcDatetime


CountryState = Literal["dormant", "requested", "activated"]


class OfferRead(BaseModel):
    commitment_id: str
    plan_id: str
    section: str
    text: str
    condition_type: ConditionType
    condition_text: str | None
    activated: bool
    activated_at: UtcDatetime | None
    countries: dict[str, CountryState]
    records: list[ConditionRecordRead]


class OfferList(BaseModel):
    items: list[OfferRead]
