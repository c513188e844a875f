"""The offers read model, built from catalog.commitments."""

import logging

from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError
from sqlmodel import Session

from requests_service.models import OfferRow
from shared.consumer import PoisonMessage
from shared.contracts.catalog import COMMITMENT_PUBLISHED, COMMITMENT_REMOVED, CommitmentPublished
from shared.messaging_models import utcnow

log = logging.getLogger(__name__)


def handle_catalog_event(session: Session, event: CloudEvent) -> str:
    commitment_id = event.get_subject() or event.get_extension("partitionkey")
    if event.get_type() == COMMITMENT_PUBLISHED:
        try:
            published = CommitmentPublished.model_validate(event.get_data())
        except ValidationError as error:
            raise PoisonMessage(f"not a valid commitment: {error.error_count()} errors") from error
        commitment = published.commitment
        row = session.get(OfferRow, commitment.id)
        if row is not None and row.revision > published.revision and not row.removed:
            return "ignored"  # an older state than the one we have
        row = row or OfferRow(commitment_id=commitment.id, plan_id="", section="", text="", condition_type="",
                              eligible_countries=[], required_countries=[], responsible_agencies=[], revision=0)
        row.plan_id = commitment.plan_id
        row.section = commitment.section
        row.text = commitment.text
        row.condition_type = commitment.condition.type
        row.condition_text = commitment.condition.text
        row.eligible_countries = list(commitment.condition.eligible_countries)
        row.required_countries = list(commitment.condition.required_countries)
        row.responsible_agencies = [agency.id for agency in commitment.responsible_agencies]
        row.revision = published.revision
        row.removed = False
        row.updated_at = utcnow()
        session.add(row)
        return "processed"
    if event.get_type() == COMMITMENT_REMOVED:
        row = session.get(OfferRow, commitment_id)
        if row is None:
            return "ignored"
        row.removed = True
        row.updated_at = utcnow()
        session.add(row)
        return "processed"
    return "ignored"  # consumers ignore types they do not know
