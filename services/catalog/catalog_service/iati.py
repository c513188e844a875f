"""A plan as IATI 2.03 activities: one activity per commitment.

IATI `conditions` are obligations on the recipient. Where a plan's condition
is of that nature (a regional agreement: policy; shown effectiveness:
performance) it is also given as an IATI condition. Every activation trigger,
including "if requested" and "if all ... show their interests", which IATI has
no element for, is in our namespaced extension, as IATI allows.
"""

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from catalog_service.snapshot import CommitmentRead, PlanRead

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


def _narrative(parent: ET.Element, text: str) -> ET.Element:
    narrative = ET.SubElement(parent, "narrative")
    narrative.text = text
    return narrative


def _ext(tag: str) -> str:
    return f"{{{EXTENSION_NS}}}{tag}"


def plan_to_iati_xml(plan: PlanRead, commitments: list[CommitmentRead], *, base_url: str) -> bytes:
    generated = max((c.updated_at for c in commitments), default=datetime.now(UTC))
    root = ET.Element("iati-activities", {"version": "2.03", "generated-datetime": _iso(generated)})
    source_url = f"{base_url}/v1/plans/{plan.id}/source"
    for commitment in commitments:
        root.append(_activity(plan, commitment, base_url=base_url, source_url=source_url))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _activity(plan: PlanRead, commitment: CommitmentRead, *, base_url: str, source_url: str) -> ET.Element:
    activity = ET.Element("iati-activity", {
        "last-updated-datetime": _iso(commitment.updated_at),
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
    ET.SubElement(activity, "activity-status", {"code": str(commitment.status.code)})
    adopted = ET.SubElement(activity, "activity-date", {"type": "1", "iso-date": plan.adopted.isoformat()})
    _narrative(adopted, f"Adopted in the action plan, {plan.place or ''} {plan.adopted.isoformat()}".replace("  ", " "))
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

    iati_condition = IATI_CONDITION_TYPES.get(commitment.condition.type)
    conditions = ET.SubElement(activity, "conditions", {"attached": "1" if iati_condition else "0"})
    if iati_condition:
        _narrative(ET.SubElement(conditions, "condition", {"type": iati_condition}), commitment.condition.text or "")

    trigger = ET.SubElement(activity, _ext("activation-trigger"), {"type": commitment.condition.type})
    if commitment.condition.text:
        ET.SubElement(trigger, _ext("wording")).text = commitment.condition.text
    for country in commitment.condition.eligible_countries:
        ET.SubElement(trigger, _ext("eligible-country"), {"code": country})
    for country in commitment.condition.required_countries:
        ET.SubElement(trigger, _ext("required-country"), {"code": country})
    ET.SubElement(trigger, _ext("commitment"), {"href": f"{base_url}/v1/commitments/{commitment.id}"})
    evidence = ET.SubElement(activity, _ext("evidence"), {
        "document": commitment.source.document, "start": str(commitment.source.start),
        "end": str(commitment.source.end), "sha256": commitment.source.sha256,
    })
    evidence.text = commitment.text
    return activity
