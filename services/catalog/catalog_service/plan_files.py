"""Plan files: a plan's source text and its commitments as YAML.

A plan file is checked before anything is stored: the source document's hash,
each entry's text against its offsets, and every reference between entries.
A file that fails any check is refused whole, with the reason.
"""

import hashlib
import re
from datetime import date
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts.catalog import (
    CommitmentDocument,
    CommitmentKind,
    Condition,
    CountryCode,
    Figure,
    IsoCountryCode,
    Pillar,
    ResponsibleAgency,
    SourceSpan,
    Status,
    WholeSentence,
    is_dialogue_country,
    requestable_by,
)

BUNDLED_PLANS_DIR = Path(__file__).parent / "plans"
# The plan file is 120 KB of YAML: PyYAML's pure-Python loader was most of a
# catalog's start (9 s against libyaml's 1.4 s, measured on a loaded
# 2-core machine). libyaml's loader reads the same safe subset.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_PLAN_FILES = (BUNDLED_PLANS_DIR / "action-plan-2006.yaml",)
_SECTION_CODE = re.compile(r"^(\d(?:\(\d+\))?)\s")


class PlanFileError(ValueError):
    """A plan file that cannot be loaded, with the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanHeader(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    title: str
    adopted: date
    place: str | None = None
    source_document: str
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    pillars: dict[int, str]


class AgencyEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    name: str
    country: CountryCode | None
    kind: str
    aliases: list[str] = []


class SpanEntry(_Strict):
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class AgencyRef(_Strict):
    id: str
    inferred: bool
    reason: str | None = None


class ConditionEntry(_Strict):
    type: str
    eligible_countries: list[CountryCode]
    # The parties to a regional agreement may be states outside the Dialogue.
    required_countries: list[IsoCountryCode]
    text: str | None
    note: str | None = None


class CommitmentEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    pillar: int
    section: str
    text: str
    source: SpanEntry
    # Set when the entry is one part of a sentence that bundles pledges to be
    # tracked apart: the whole sentence's span, which holds the part's.
    part_of: SpanEntry | None = None
    actors: list[CountryCode]
    beneficiaries: list[CountryCode]
    kind: CommitmentKind
    condition: ConditionEntry
    responsible_agencies: list[AgencyRef]
    figures: list[dict]
    sectors: list[str]
    status: Status


class ExcludedSentence(_Strict):
    source: SpanEntry
    text: str
    reason: str


class PlanFile(_Strict):
    plan: PlanHeader
    agencies: list[AgencyEntry]
    commitments: list[CommitmentEntry]
    excluded_sentences: list[ExcludedSentence] = []


class LoadedPlan(BaseModel):
    """A checked plan, ready to store: its header, source text, agencies and
    commitments in their published form."""

    header: PlanHeader
    source_text: str
    agencies: list[AgencyEntry]
    commitments: list[CommitmentDocument]


def load_plan_file(path: Path) -> LoadedPlan:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        plan_file = PlanFile.model_validate(raw)
    except FileNotFoundError as error:
        raise PlanFileError(f"{path}: no such file") from error
    except (yaml.YAMLError, ValidationError) as error:
        raise PlanFileError(f"{path}: not a valid plan file: {error}") from error

    header = plan_file.plan
    source_path = path.parent / header.source_document
    try:
        source_bytes = source_path.read_bytes()
    except FileNotFoundError as error:
        raise PlanFileError(f"{path}: source document {source_path} is missing") from error
    if hashlib.sha256(source_bytes).hexdigest() != header.source_sha256:
        raise PlanFileError(f"{path}: {header.source_document} does not match source_sha256")
    source_text = source_bytes.decode("utf-8")

    agencies = {agency.id: agency for agency in plan_file.agencies}
    if len(agencies) != len(plan_file.agencies):
        raise PlanFileError(f"{path}: duplicate agency ids")
    seen: set[str] = set()
    documents = []
    for entry in plan_file.commitments:
        if entry.id in seen:
            raise PlanFileError(f"{path}: duplicate commitment id {entry.id}")
        seen.add(entry.id)
        documents.append(_to_document(entry, header, source_text, agencies, path))
    return LoadedPlan(header=header, source_text=source_text, agencies=plan_file.agencies, commitments=documents)


def _to_document(
    entry: CommitmentEntry, header: PlanHeader, source_text: str, agencies: dict[str, AgencyEntry], path: Path
) -> CommitmentDocument:
    where = f"{path}: commitment {entry.id}"
    if source_text[entry.source.start : entry.source.end] != entry.text:
        raise PlanFileError(f"{where}: text is not the source's text at {entry.source.start}-{entry.source.end}")
    sentence = entry.part_of
    if sentence is not None and not (
        sentence.start <= entry.source.start and entry.source.end <= sentence.end <= len(source_text)
    ):
        raise PlanFileError(f"{where}: its text is not inside the sentence {sentence.start}-{sentence.end}")
    if entry.pillar not in header.pillars:
        raise PlanFileError(f"{where}: pillar {entry.pillar} is not one of the plan's pillars")
    section_code = _SECTION_CODE.match(entry.section)
    if not section_code or not section_code.group(1).startswith(str(entry.pillar)):
        raise PlanFileError(f"{where}: section {entry.section!r} does not start with its pillar's number")
    condition_text = entry.condition.text
    if condition_text is not None and condition_text not in entry.text:
        raise PlanFileError(f"{where}: condition text is not part of the entry's text")
    outsiders = [code for code in entry.condition.required_countries if not is_dialogue_country(code)]
    if outsiders and entry.condition.type != "regional_agreement":
        # Interest is shown by request, which only the Dialogue's countries make.
        raise PlanFileError(f"{where}: {', '.join(outsiders)} outside the Dialogue can only be parties to an agreement")
    try:
        condition = Condition.model_validate(entry.condition.model_dump())
    except ValidationError as error:
        raise PlanFileError(f"{where}: {error}") from error
    responsible = []
    for reference in entry.responsible_agencies:
        agency = agencies.get(reference.id)
        if agency is None:
            raise PlanFileError(f"{where}: unknown agency {reference.id}")
        responsible.append(
            ResponsibleAgency(
                id=agency.id, name=agency.name, country=agency.country, kind=agency.kind,
                inferred=reference.inferred, reason=reference.reason,
            )
        )
    return CommitmentDocument(
        id=entry.id,
        plan_id=header.id,
        pillar=Pillar(number=entry.pillar, name=header.pillars[entry.pillar]),
        section=entry.section,
        section_code=section_code.group(1),
        text=entry.text,
        source=SourceSpan(
            document=header.source_document, start=entry.source.start, end=entry.source.end,
            sha256=header.source_sha256,
        ),
        part_of=WholeSentence(text=source_text[sentence.start : sentence.end], start=sentence.start,
                              end=sentence.end) if sentence is not None else None,
        actors=entry.actors,
        beneficiaries=entry.beneficiaries,
        kind=entry.kind,
        condition=condition,
        requestable_by=requestable_by(condition),
        responsible_agencies=responsible,
        figures=[Figure.model_validate(figure) for figure in entry.figures],
        sectors=entry.sectors,
        status=entry.status,
    )
