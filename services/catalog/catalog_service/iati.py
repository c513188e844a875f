"""A plan as IATI 2.03 activities: one activity per commitment.

IATI `conditions` are obligations on the recipient. Where a plan's condition
is of that nature (a regional agreement: policy; shown effectiveness:
performance) it is also given as an IATI condition. Every activation trigger,
including "if requested" and "if all ... show their interests", which IATI has
no element for, is in our namespaced extension, as IATI allows.

Progress reports make the activity current: its status is the one that holds
now, its last update the latest report, its actual start and end dates those
of the reports that moved it into implementation and closed it, and each
counted report's evidence URLs are document links.
"""

import mimetypes
from datetime import UTC, datetime
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from catalog_service.progress import EvidenceLink
from catalog_service.snapshot import CommitmentView, PlanRead
from shared.contracts.catalog import PROGRESS_STATUSES

EXTENSION_NS = "https://caj-tracker.org/ns/iati-extension/1"
ET.register_namespace("caj", EXTENSION_NS)

JAPAN_ORG_REF = "XM-DAC-701"  # Japan in the DAC donor list
# IATI OrganisationType by our agency kinds.
ORGANISATION_TYPES = {
    "government": "10",
    "implementing_agency": "10",
    "centre": "10",
    "fund": "40",
    "international_organisation": "40",
    "university": "80",
    "association": "22",
}
# IATI ConditionType: 1 Policy, 2 Performance, 3 Fiduciary.
IATI_CONDITION_TYPES = {"regional_agreement": "1", "evidence": "2"}
COUNTRY_NAMES = {"JP": "Japan", "KZ": "Kazakhstan", "KG": "Kyrgyzstan", "TJ": "Tajikistan", "UZ": "Uzbekistan",
                 "AF": "Afghanistan"}
# IATI DocumentCategory A07: review of project performance and evaluation.
PROGRESS_DOCUMENT_CATEGORY = "A07"
# IATI FileFormat (IANA media types): a web page unless the address names a file.
DEFAULT_DOCUMENT_FORMAT = "text/html"


def _narrative(parent: ET.Element, text: str) -> ET.Element:
    narrative = ET.SubElement(parent, "narrative")
    narrative.text = text
    return narrative


def _ext(tag: str) -> str:
    return f"{{{EXTENSION_NS}}}{tag}"


def plan_to_iati_xml(plan: PlanRead, views: list[CommitmentView], *, base_url: str) -> bytes:
    generated = max((view.read.updated_at for view in views), default=datetime.now(UTC))
    root = ET.Element("iati-activities", {"version": "2.03", "generated-datetime": _iso(generated)})
    source_url = f"{base_url}/v1/plans/{plan.id}/source"
    for view in views:
        root.append(_activity(plan, view, base_url=base_url, source_url=source_url))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def document_format(url: str) -> str:
    guessed, _ = mimetypes.guess_type(urlsplit(url).path, strict=False)
    return guessed or DEFAULT_DOCUMENT_FORMAT


def _evidence_link(activity: ET.Element, link: EvidenceLink) -> None:
    document = ET.SubElement(activity, "document-link", {"url": link.url, "format": document_format(link.url)})
    _narrative(ET.SubElement(document, "title"), link.title)
    _narrative(ET.SubElement(document, "description"),
               f"Evidence of a progress report: {link.status} as of {link.as_of.isoformat()}.")
    ET.SubElement(document, "category", {"code": PROGRESS_DOCUMENT_CATEGORY})


def _activity(plan: PlanRead, view: CommitmentView, *, base_url: str, source_url: str) -> ET.Element:
    commitment, trail = view.read, view.trail
    activity = ET.Element("iati-activity", {
        "last-updated-datetime": _iso(trail.last_reported_at or commitment.updated_at),
        "{http://www.w3.org/XML/1998/namespace}lang": "en",
        "hierarchy": "2",
    })
    ET.SubElement(activity, "iati-identifier").text = f"{JAPAN_ORG_REF}-{commitment.id}"
    # The plan's actions are reported on behalf of its signatories: a secondary reporter.
    reporting = ET.SubElement(
        activity, "reporting-org", {"ref": JAPAN_ORG_REF, "type": "10", "secondary-reporter": "1"}
    )
    _narrative(reporting, f'{plan.title} (caj-tracker)')

    _narrative(ET.SubElement(activity, "title"),
               f"{commitment.section}: {commitment.kind.replace('_', ' ')} {commitment.id}")
    _narrative(ET.SubElement(activity, "description", {"type": "1"}), commitment.text)
    if commitment.condition.text:
        _narrative(ET.SubElement(activity, "description", {"type": "2"}), f"Condition: {commitment.condition.text}")

    for country in commitment.actors:
        funding = ET.SubElement(activity, "participating-org", {"role": "1", "type": "10"})
        if country == "JP":
            funding.set("ref", JAPAN_ORG_REF)
        _narrative(funding, f"Government of {COUNTRY_NAMES[country]}")
    for agency in commitment.responsible_agencies:
        implementing = ET.SubElement(activity, "participating-org", {
            "role": "4", "type": ORGANISATION_TYPES.get(agency.kind, "90"),
        })
        _narrative(implementing, agency.name)

    ET.SubElement(activity, "other-identifier", {"ref": commitment.id, "type": "A1"})
    ET.SubElement(activity, "activity-status", {"code": str(PROGRESS_STATUSES[commitment.progress.status])})
    adopted = ET.SubElement(activity, "activity-date", {"type": "1", "iso-date": plan.adopted.isoformat()})
    _narrative(adopted, f"Adopted in the action plan, {plan.place or ''} {plan.adopted.isoformat()}".replace("  ", " "))
    if trail.started_on is not None:
        started = ET.SubElement(activity, "activity-date", {"type": "2", "iso-date": trail.started_on.isoformat()})
        _narrative(started, "Reported in implementation from this date")
    if trail.ended_on is not None:
        ended = ET.SubElement(activity, "activity-date", {"type": "4", "iso-date": trail.ended_on.isoformat()})
        _narrative(ended, "Reported closed from this date")
    ET.SubElement(activity, "activity-scope", {"code": "2" if len(commitment.beneficiaries) > 1 else "4"})
    for country in commitment.beneficiaries:
        recipient = ET.SubElement(activity, "recipient-country", {"code": country})
        _narrative(recipient, COUNTRY_NAMES[country])
    for code in commitment.sectors:
        ET.SubElement(activity, "sector", {"vocabulary": "1", "code": code})

    document = ET.SubElement(activity, "document-link", {"url": source_url, "format": "text/plain"})
    _narrative(ET.SubElement(document, "title"), f"{plan.title}, {plan.source_document}")
    _narrative(
        ET.SubElement(document, "description"),
        f"The commitment's text is characters {commitment.source.start}-{commitment.source.end} "
        f"of this document (sha256 {commitment.source.sha256}).",
    )
    ET.SubElement(document, "category", {"code": "A09"})  # memorandum of understanding
    ET.SubElement(document, "language", {"code": "en"})
    ET.SubElement(document, "document-date", {"iso-date": plan.adopted.isoformat()})
    for link in trail.documents:
        _evidence_link(activity, link)

    iati_condition = IATI_CONDITION_TYPES.get(commitment.condition.type)
    conditions = ET.SubElement(activity, "conditions", {"attached": "1" if iati_condition else "0"})
    if iati_condition:
        _narrative(ET.SubElement(conditions, "condition", {"type": iati_condition}), commitment.condition.text or "")

    trigger = ET.SubElement(activity, _ext("activation-trigger"), {"type": commitment.condition.type})
    if commitment.condition.text:
        ET.SubElement(trigger, _ext("wording")).text = commitment.condition.text
    for country in commitment.condition.eligible_countries:
        ET.SubElement(trigger, _ext("eligible-country"), {"code": country})
    for party in commitment.condition.required_countries:
        ET.SubElement(trigger, _ext("required-country"), {"code": party})
    ET.SubElement(trigger, _ext("commitment"), {"href": f"{base_url}/v1/commitments/{commitment.id}"})
    evidence = ET.SubElement(activity, _ext("evidence"), {
        "document": commitment.source.document, "start": str(commitment.source.start),
        "end": str(commitment.source.end), "sha256": commitment.source.sha256,
    })
    evidence.text = commitment.text
    return activity
