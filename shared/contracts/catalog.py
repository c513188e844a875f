"""What the catalog publishes on `catalog.commitments` and serves over HTTP."""

from datetime import date, datetime
from typing import Annotated, Literal, TypeGuard, get_args

from pydantic import BaseModel, ConfigDict, Field

CountryCode = Literal["JP", "KZ", "KG", "TJ", "UZ", "AF"]
DIALOGUE_COUNTRIES: frozenset[str] = frozenset(get_args(CountryCode))
# Any ISO 3166-1 alpha-2 code: the parties a regional agreement needs are the
# countries its text concerns, which may be states outside the Dialogue.
IsoCountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code")]
ConditionType = Literal["none", "on_request", "joint_interest", "regional_agreement", "evidence"]
CommitmentKind = Literal["offer", "pledge", "intention", "study", "joint_action", "achievement", "position"]

CENTRAL_ASIAN_COUNTRIES: tuple[CountryCode, ...] = ("KZ", "KG", "TJ", "UZ")
# A request can satisfy only these; the other conditions are recorded by coordinators.
REQUESTABLE_CONDITIONS: frozenset[str] = frozenset({"on_request", "joint_interest"})

COMMITMENT_PUBLISHED = "org.caj-tracker.catalog.commitment.published.v1"
COMMITMENT_REMOVED = "org.caj-tracker.catalog.commitment.removed.v1"
PROGRESS_REPORTED = "org.caj-tracker.catalog.progress.reported.v1"
COMMITMENT_STALE = "org.caj-tracker.catalog.commitment.stale.v1"

# IATI ActivityStatus, by code: what a progress report may say a commitment is.
PROGRESS_STATUSES: dict[str, int] = {
    "pipeline": 1, "implementation": 2, "finalisation": 3, "closed": 4, "cancelled": 5, "suspended": 6,
}
ProgressStatus = Literal["pipeline", "implementation", "finalisation", "closed", "cancelled", "suspended"]
CATALOG_SOURCE = "/caj-tracker/catalog"


class _Contract(BaseModel):
    # Readers ignore fields they do not know, so producers may add fields.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Pillar(_Contract):
    number: int = Field(ge=1, le=5)
    name: str


class SourceSpan(_Contract):
    document: str = Field(description="File name of the plan's source text")
    start: int = Field(ge=0, description="Character offset where the text starts")
    end: int = Field(ge=0, description="Character offset just past the text")
    sha256: str = Field(description="SHA-256 of the source document the offsets refer to")


class WholeSentence(_Contract):
    """The sentence of the plan a split part comes from, whole."""

    text: str = Field(description="The whole sentence, verbatim; it holds the part's own text")
    start: int = Field(ge=0, description="Character offset where the sentence starts")
    end: int = Field(ge=0, description="Character offset just past the sentence")


class Condition(_Contract):
    type: ConditionType
    eligible_countries: list[CountryCode] = Field(description="Who may ask (on_request)")
    required_countries: list[IsoCountryCode] = Field(
        description="Who must all show interest (joint_interest) or agree (regional_agreement); the parties to "
        "an agreement may be states outside the Dialogue"
    )
    text: str | None = Field(description="The condition's own words in the plan")
    note: str | None = None


class ResponsibleAgency(_Contract):
    id: str
    name: str
    country: CountryCode | None
    kind: str
    inferred: bool = Field(description="False when the plan's text names the agency")
    reason: str | None = None


class Figure(_Contract):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["money", "count", "year", "date", "duration"]
    text: str


class Status(_Contract):
    code: int = Field(ge=1, le=6, description="IATI ActivityStatus code")
    name: str


class CommitmentDocument(_Contract):
    """One commitment of a plan, as published."""

    id: str
    plan_id: str
    pillar: Pillar
    section: str
    section_code: str = Field(
        description='The section number, e.g. "2(2)"; the pillar number alone for pillar-level text'
    )
    text: str = Field(description="The plan's own words, verbatim")
    source: SourceSpan
    part_of: WholeSentence | None = Field(
        default=None,
        description="Set when the text is one part of a sentence that bundles pledges tracked apart (the part "
        "alone may read without a verb): the whole sentence, in the same source document",
    )
    actors: list[CountryCode]
    beneficiaries: list[CountryCode]
    kind: CommitmentKind
    condition: Condition
    requestable_by: list[CountryCode] = Field(
        description="Countries whose request counts toward this commitment's condition"
    )
    responsible_agencies: list[ResponsibleAgency]
    figures: list[Figure]
    sectors: list[str] = Field(description="OECD DAC CRS 5-digit purpose codes")
    status: Status


class CurrentProgress(_Contract):
    """The status that holds now: from the latest report by `as_of` (ties go
    to the later report), or, when nobody has reported, as read from the
    plan's text (`source` "plan_text", no report)."""

    status: ProgressStatus
    source: Literal["report", "plan_text"]
    as_of: date | None = Field(description="The date the status holds from; the plan's adoption for plan_text")
    report_id: str | None = None
    reported_at: datetime | None = None


class CommitmentPublished(_Contract):
    """Data of `commitment.published.v1`: the full current state, keyed by id."""

    revision: int = Field(ge=1, description="Increases by one each time the commitment changes")
    updated_at: datetime
    commitment: CommitmentDocument
    # Optional so that records written before progress was tracked still read.
    progress: CurrentProgress | None = None


class EvidenceItem(_Contract):
    title: str
    url: str | None = Field(default=None, description="http(s) only")
    reference: str | None = Field(default=None, description="A document reference when there is no URL")


class Reporter(_Contract):
    key_id: str
    role: str
    agency_id: str | None


class ProgressReported(_Contract):
    """Data of `progress.reported.v1` on `catalog.progress` (key: commitment id):
    one append-only report, and the commitment's progress after it."""

    report_id: str
    commitment_id: str
    plan_id: str
    pillar: int
    status: ProgressStatus
    as_of: date
    summary: str
    evidence: list[EvidenceItem]
    figures: dict[str, float | int | str]
    supersedes: str | None
    reported_by: Reporter
    reported_at: datetime
    current: CurrentProgress
    responsible_agencies: list[str] = Field(description="Agency ids the catalog names as responsible")
    beneficiary_countries: list[CountryCode]


class CommitmentStale(_Contract):
    """Data of `commitment.stale.v1` on `catalog.progress` (key: commitment id):
    in implementation (or an activated offer) with no report for the staleness
    period; one event per period, `period` counting from 1."""

    commitment_id: str
    plan_id: str
    pillar: int
    status: ProgressStatus
    last_reported_at: datetime | None
    stale_since: datetime
    period: int = Field(ge=1)
    responsible_agencies: list[str]


def is_dialogue_country(code: str) -> TypeGuard[CountryCode]:
    return code in DIALOGUE_COUNTRIES


def requestable_by(condition: Condition) -> list[CountryCode]:
    if condition.type == "on_request":
        return list(condition.eligible_countries)
    if condition.type == "joint_interest":
        # Interest is shown by request, and only the Dialogue's countries make requests.
        return [code for code in condition.required_countries if is_dialogue_country(code)]
    return []
