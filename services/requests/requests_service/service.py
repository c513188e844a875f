"""What the requests service does, free of HTTP: submit requests, move them
through their lifecycle, record agreements and evidence, activate offers.

Every function here runs inside one transaction (the group-commit writer's),
and stages its events in the outbox of that same transaction.
"""

import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from requests_service.conditions import (
    ALL_COUNTRIES,
    OfferTerms,
    accept_request,
    activation_by_record,
    allowed_transitions,
    ever_allowed,
    refuse_request,
    transition_needs_note,
    who_moves_to,
)
from requests_service.models import (
    OfferActivationRow,
    OfferInterestRow,
    OfferRecordRow,
    OfferRow,
    RequestHistoryRow,
    RequestRow,
)
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    OFFER_INTEREST_REGISTERED,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
    REQUESTS_SOURCE,
    OfferActivated,
    OfferInterestRegistered,
    RequestStatusChanged,
    RequestSubmitted,
)
from shared.db import table_of
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.group_commit import call_after_commit
from shared.identity import Principal
from shared.messaging_models import utcnow
from shared.outbox import NewEvent, stage_events
from shared.topics import REQUESTS_EVENTS


def _stage(session: Session, *, event_type: str, key: str, data) -> None:
    stage_events(session, [NewEvent(topic=REQUESTS_EVENTS.name, key=key, type=event_type, source=REQUESTS_SOURCE,
                                    subject=key, data=data.model_dump(mode="json"))])


def terms_of(offer) -> OfferTerms:
    return OfferTerms(
        commitment_id=offer.commitment_id, condition_type=offer.condition_type,
        eligible_countries=tuple(offer.eligible_countries), required_countries=tuple(offer.required_countries),
        removed=offer.removed,
    )


# Built once: these run on every submission, and building statements (and
# ORM objects) costs more than running them on SQLite.
_OFFERS = table_of(OfferRow)
_SELECT_OFFER = core_select(_OFFERS).where(_OFFERS.c.commitment_id == bindparam("id"))
_SELECT_OFFER_FOR_UPDATE = _SELECT_OFFER.with_for_update()
_INSERT_REQUEST = insert(table_of(RequestRow))


def _lock_offer(session: Session, commitment_id: str):
    """The offer (a row with OfferRow's columns as attributes), locked on
    PostgreSQL so that replicas activate it in turn; on SQLite the write
    transaction already holds the database's lock."""
    connection = session.connection()
    statement = _SELECT_OFFER if connection.dialect.name == "sqlite" else _SELECT_OFFER_FOR_UPDATE
    return connection.execute(statement, {"id": commitment_id}).first()


_ACTIVATED_COUNTRIES = select(OfferActivationRow.country).where(OfferActivationRow.commitment_id == bindparam("id"))
_INTERESTED_COUNTRIES = select(OfferInterestRow.country).where(OfferInterestRow.commitment_id == bindparam("id"))
_INSERT_HISTORY = insert(table_of(RequestHistoryRow))


def _activated_countries(session: Session, commitment_id: str) -> set[str]:
    return set(session.scalars(_ACTIVATED_COUNTRIES, {"id": commitment_id}).all())


# Activations are never undone, so "this offer is active for this country",
# once committed, stays true: each process remembers such facts per database
# and skips the query for them. (Only committed facts are remembered.)
_known_activations: "weakref.WeakKeyDictionary[Engine, set[tuple[str, str]]]" = weakref.WeakKeyDictionary()


def _is_known_active(session: Session, commitment_id: str, country: str) -> bool:
    return (commitment_id, country) in _known_activations.get(session.get_bind().engine, ())


def _remember_active_after_commit(session: Session, commitment_id: str, countries) -> None:
    known = _known_activations.setdefault(session.get_bind().engine, set())
    facts = [(commitment_id, country) for country in countries]
    call_after_commit(session, lambda: known.update(facts))


def _record_history(session: Session, *, request_id: str, at, principal: Principal, from_status: str | None,
                    to_status: str, note: str | None = None) -> None:
    session.connection().execute(_INSERT_HISTORY, {
        "request_id": request_id, "at": at, "actor_key_id": principal.key_id, "actor_role": principal.role,
        "actor_agency_id": principal.agency_id, "from_status": from_status, "to_status": to_status, "note": note,
    })


@dataclass(frozen=True)
class NewRequest:
    commitment_id: str
    title: str
    description: str
    reference: str | None = None


@dataclass(frozen=True)
class SubmittedRequest:
    """A new request's stored values (RequestRow's columns)."""

    id: str
    commitment_id: str
    country: str
    agency_id: str
    title: str
    description: str
    reference: str | None
    status: str
    created_by_key: str
    created_at: datetime
    updated_at: datetime
    status_since: datetime


def submit_request(session: Session, *, principal: Principal, new: NewRequest,
                   now: datetime | None = None) -> SubmittedRequest:
    """`now`: the time by the service's clock (the wall clock by default)."""
    offer = _lock_offer(session, new.commitment_id)
    country = principal.country or ""
    refusal = refuse_request(terms_of(offer) if offer is not None else None, new.commitment_id, country)
    if refusal is not None:
        extensions = {}
        if refusal.reason == "country_not_eligible" and offer is not None:
            extensions["eligible_countries"] = (
                offer.eligible_countries if offer.condition_type == "on_request" else offer.required_countries
            )
        raise Invalid(refusal.reason, refusal.title, refusal.detail, **extensions)
    assert offer is not None
    now = now or utcnow()
    request = SubmittedRequest(
        id=str(uuid.uuid4()), commitment_id=offer.commitment_id, country=country, agency_id=principal.agency_id or "",
        title=new.title, description=new.description, reference=new.reference, status="submitted",
        created_by_key=principal.key_id, created_at=now, updated_at=now, status_since=now,
    )
    session.connection().execute(_INSERT_REQUEST, vars(request))  # asdict() deep-copies
    _record_history(session, request_id=request.id, at=now, principal=principal, from_status=None,
                    to_status="submitted")
    _stage(session, event_type=REQUEST_SUBMITTED, key=request.id, data=RequestSubmitted(
        request_id=request.id, commitment_id=offer.commitment_id, condition_type=offer.condition_type, country=country,
        agency_id=request.agency_id, title=request.title, submitted_at=now,
        responsible_agencies=list(offer.responsible_agencies),
    ))

    terms = terms_of(offer)
    if offer.condition_type == "on_request" and _is_known_active(session, offer.commitment_id, country):
        return request  # already active for this country: nothing more to do
    interested = (
        set(session.scalars(_INTERESTED_COUNTRIES, {"id": offer.commitment_id}).all())
        if offer.condition_type == "joint_interest" else set()
    )
    activated = _activated_countries(session, offer.commitment_id)
    outcome = accept_request(terms, country, activated=activated, interested=interested)
    if offer.condition_type == "on_request":
        _remember_active_after_commit(session, offer.commitment_id, activated | set(outcome.activate_countries))
    if outcome.register_interest:
        session.add(OfferInterestRow(commitment_id=offer.commitment_id, country=country, request_id=request.id,
                                     registered_at=now))
        _stage(session, event_type=OFFER_INTEREST_REGISTERED, key=offer.commitment_id, data=OfferInterestRegistered(
            commitment_id=offer.commitment_id, country=country, request_id=request.id,
            registered_countries=sorted(interested | {country}, key=list(offer.required_countries).index),
            required_countries=list(offer.required_countries), registered_at=now,
        ))
    if outcome.activate_countries:
        _activate(session, offer, countries=outcome.activate_countries,
                  trigger="request" if offer.condition_type == "on_request" else "joint_interest",
                  trigger_id=request.id, requesting_agency_id=request.agency_id)
    return request


def _activate(session: Session, offer, *, countries: tuple[str, ...], trigger: str, trigger_id: str,
              requesting_agency_id: str | None) -> None:
    now = utcnow()
    for country in countries:
        session.add(OfferActivationRow(commitment_id=offer.commitment_id, country=country, trigger=trigger,
                                       trigger_id=trigger_id, activated_at=now))
    _stage(session, event_type=OFFER_ACTIVATED, key=offer.commitment_id, data=OfferActivated(
        commitment_id=offer.commitment_id, condition_type=offer.condition_type,
        countries=[c for c in countries if c != ALL_COUNTRIES], trigger=trigger, trigger_id=trigger_id,
        requesting_agency_id=requesting_agency_id, responsible_agencies=list(offer.responsible_agencies),
        activated_at=now,
    ))


def transition_request(
    session: Session, *, principal: Principal, request_id: str, to_status: str, note: str | None,
    now: datetime | None = None,
) -> RequestRow:
    request = session.get(RequestRow, request_id)
    if request is None or not can_see(session, principal, request):
        raise NotFound("request_not_found", "No such request", f"There is no request {request_id!r}.")
    is_requesting_agency = principal.role == "partner" and principal.agency_id == request.agency_id
    allowed = allowed_transitions(request.status, role=principal.role, is_requesting_agency=is_requesting_agency)
    if principal.role not in ("coordinator", "partner") or (principal.role == "partner" and not is_requesting_agency):
        raise Forbidden("forbidden", "Not allowed to change this request",
                        "Only coordinators, and the requesting agency (to withdraw or answer), change requests.")
    if not ever_allowed(to_status, role=principal.role, is_requesting_agency=is_requesting_agency):
        movers = who_moves_to(to_status)
        raise Forbidden("forbidden", "Not a transition this role makes",
                        f"{movers[0].upper()}{movers[1:]} may move a request to {to_status}; "
                        f"a {principal.role} never does, whatever the request's status.")
    if to_status not in allowed:
        raise Conflict("transition_not_allowed", "This transition is not allowed",
                       f"A {request.status} request cannot become {to_status} by a {principal.role}.",
                       current_status=request.status, allowed=list(allowed))
    if transition_needs_note(to_status) and not (note and note.strip()):
        raise Invalid("note_required", "A reason is required",
                      f"Moving a request to {to_status} needs a note saying why.")
    now = now or utcnow()
    from_status = request.status
    request.status = to_status
    request.updated_at = now
    # A new status: staleness counts again from now.
    request.status_since = now
    request.stale_period = 0
    session.add(request)
    _record_history(session, request_id=request.id, at=now, principal=principal, from_status=from_status,
                    to_status=to_status, note=note)
    offer = session.get(OfferRow, request.commitment_id)
    _stage(session, event_type=REQUEST_STATUS_CHANGED, key=request.id, data=RequestStatusChanged(
        request_id=request.id, commitment_id=request.commitment_id, country=request.country,
        agency_id=request.agency_id, from_status=from_status, to_status=to_status, note=note,
        changed_by_role=principal.role, changed_at=now,
        responsible_agencies=list(offer.responsible_agencies) if offer else [],
    ))
    return request


def record_condition(session: Session, *, principal: Principal, commitment_id: str, kind: str, reference: str,
                     parties: list[str], note: str | None) -> OfferRecordRow:
    """A coordinator records an agreement or evidence; it may activate the offer."""
    offer = _lock_offer(session, commitment_id)
    if offer is None or offer.removed:
        raise NotFound("offer_not_found", "No such offer", f"There is no commitment {commitment_id!r}.")
    expected = {"agreement": "regional_agreement", "evidence": "evidence"}[kind]
    if offer.condition_type != expected:
        raise Conflict("condition_mismatch", f"This offer does not take {kind}",
                       f"{commitment_id} has condition {offer.condition_type}; a {kind} applies to {expected} offers.")
    if kind == "agreement":
        unknown = sorted(set(parties) - set(offer.required_countries))
        if unknown:
            raise Invalid("not_a_party", "Not a party to this condition",
                          f"{', '.join(unknown)} is not among the countries concerned: "
                          f"{', '.join(offer.required_countries)}.")
    record = OfferRecordRow(id=str(uuid.uuid4()), commitment_id=commitment_id, kind=kind, reference=reference,
                            parties=sorted(set(parties)), note=note, recorded_by_key=principal.key_id,
                            recorded_at=utcnow())
    session.add(record)
    recorded_parties: set[str] = set(parties)
    for earlier in session.exec(select(OfferRecordRow.parties).where(
            OfferRecordRow.commitment_id == commitment_id, OfferRecordRow.kind == kind)).all():
        recorded_parties |= set(earlier)
    countries = activation_by_record(terms_of(offer), kind=kind, recorded_parties=recorded_parties,
                                     activated=_activated_countries(session, commitment_id))
    if countries:
        _activate(session, offer, countries=countries,
                  trigger="regional_agreement" if kind == "agreement" else "evidence",
                  trigger_id=record.id, requesting_agency_id=None)
    return record


# -- who sees what -------------------------------------------------------------
def can_see(session: Session, principal: Principal, request: RequestRow) -> bool:
    """Coordinators and operators see every request; a partner sees its own
    country's, and an agency the catalog names as responsible sees those
    made under its commitments."""
    if principal.role in ("coordinator", "operator"):
        return True
    if principal.country == request.country:
        return True
    offer = session.get(OfferRow, request.commitment_id)
    return bool(offer and principal.agency_id and principal.agency_id in offer.responsible_agencies)


def visible_requests_filter(session: Session, principal: Principal):
    """The same rule as `can_see`, as a query condition."""
    if principal.role in ("coordinator", "operator"):
        return None
    responsible_for = [
        offer.commitment_id for offer in session.exec(select(OfferRow)).all()
        if principal.agency_id and principal.agency_id in offer.responsible_agencies
    ]
    return (col(RequestRow.country) == principal.country) | col(RequestRow.commitment_id).in_(responsible_for)

