"""Every event type the system publishes: its payload model, topic, key and
producer; and who consumes each topic. The AsyncAPI document is built from
this, services run exactly the consumers listed here (a service gives only
a handler per group id), and tests check published events against it."""

from dataclasses import dataclass

from pydantic import BaseModel

from shared.contracts.catalog import (
    COMMITMENT_PUBLISHED,
    COMMITMENT_REMOVED,
    COMMITMENT_STALE,
    PROGRESS_REPORTED,
    CommitmentPublished,
    CommitmentStale,
    ProgressReported,
)
from shared.contracts.identity import AGENCY_REGISTERED, API_KEY_CHANGED, AgencyRecord, ApiKeyRecord
from shared.contracts.notifications import DELIVERY_ATTEMPTED, DELIVERY_DEAD, DeliveryAttempted, DeliveryDead
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    OFFER_INTEREST_REGISTERED,
    REQUEST_STALE,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
    OfferActivated,
    OfferInterestRegistered,
    RequestStale,
    RequestStatusChanged,
    RequestSubmitted,
)
from shared.topics import (
    CATALOG_COMMITMENTS,
    CATALOG_PROGRESS,
    IDENTITY_KEYS,
    NOTIFICATIONS_DEAD_LETTER,
    NOTIFICATIONS_DELIVERIES,
    REQUESTS_EVENTS,
    TopicSpec,
)

# Named outside EventSpec, whose `type` field would shadow the builtin there.
EventModel = type[BaseModel]


@dataclass(frozen=True)
class EventSpec:
    type: str
    model: EventModel | None  # None: a tombstone, the record value is null
    topic: TopicSpec
    key: str
    producer: str
    summary: str


@dataclass(frozen=True)
class ConsumerSpec:
    service: str
    group_id: str | None  # None: every replica reads the whole topic
    topics: tuple[TopicSpec, ...]
    summary: str


EVENTS: tuple[EventSpec, ...] = (
    EventSpec(COMMITMENT_PUBLISHED, CommitmentPublished, CATALOG_COMMITMENTS, "commitment id", "catalog",
              "The full current state of a commitment, on start when it is new or changed."),
    EventSpec(COMMITMENT_REMOVED, None, CATALOG_COMMITMENTS, "commitment id", "catalog",
              "A commitment left the catalog: a tombstone (null value), with the CloudEvents headers."),
    EventSpec(PROGRESS_REPORTED, ProgressReported, CATALOG_PROGRESS, "commitment id", "catalog",
              "A progress report on a commitment (append-only; a correction supersedes an earlier one)."),
    EventSpec(COMMITMENT_STALE, CommitmentStale, CATALOG_PROGRESS, "commitment id", "catalog",
              "A commitment in implementation has had no report for the staleness period (once per period)."),
    EventSpec(REQUEST_SUBMITTED, RequestSubmitted, REQUESTS_EVENTS, "request id", "requests",
              "A partner agency's request was accepted."),
    EventSpec(REQUEST_STATUS_CHANGED, RequestStatusChanged, REQUESTS_EVENTS, "request id", "requests",
              "A request moved in its lifecycle."),
    EventSpec(OFFER_INTEREST_REGISTERED, OfferInterestRegistered, REQUESTS_EVENTS, "commitment id", "requests",
              "A country showed interest in a joint-interest offer."),
    EventSpec(OFFER_ACTIVATED, OfferActivated, REQUESTS_EVENTS, "commitment id", "requests",
              "A conditional offer's condition is met."),
    EventSpec(REQUEST_STALE, RequestStale, REQUESTS_EVENTS, "request id", "requests",
              "A request waiting on someone has not moved for the staleness period (once per period)."),
    EventSpec(DELIVERY_ATTEMPTED, DeliveryAttempted, NOTIFICATIONS_DELIVERIES, "delivery id", "notifications",
              "A webhook delivery attempt ended: delivered, failed (to be retried), or refused."),
    EventSpec(DELIVERY_DEAD, DeliveryDead, NOTIFICATIONS_DEAD_LETTER, "delivery id", "notifications",
              "A notification could not be delivered by webhook; it stays in the inbox and can be retried by hand."),
    EventSpec(API_KEY_CHANGED, ApiKeyRecord, IDENTITY_KEYS, "key:<key id>", "caj CLI",
              "An API key was created or revoked (the secret is never published, only its hash)."),
    EventSpec(AGENCY_REGISTERED, AgencyRecord, IDENTITY_KEYS, "agency:<agency id>", "caj CLI",
              "A partner agency became known, with its first key."),
)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec("requests", "requests.offers", (CATALOG_COMMITMENTS,), "Keeps the offers read model."),
    ConsumerSpec("notifications", "notifications.router", (REQUESTS_EVENTS, CATALOG_COMMITMENTS, CATALOG_PROGRESS),
                 "Alerts the agencies that must act."),
    ConsumerSpec("catalog", "catalog.activations", (REQUESTS_EVENTS,),
                 "Keeps the read model of requests and offer activations per commitment (review reports, staleness)."),
    ConsumerSpec("requests", None, (IDENTITY_KEYS,), "Current API keys, in memory, in every replica."),
    ConsumerSpec("notifications", None, (IDENTITY_KEYS,), "Current API keys and partner agencies."),
    ConsumerSpec("catalog", None, (IDENTITY_KEYS,), "Current API keys, for who may report progress."),
    ConsumerSpec("console", None, (IDENTITY_KEYS,),
                 "Current API keys: checks sign-in keys and ends the sessions of revoked ones."),
    ConsumerSpec("console", None, (REQUESTS_EVENTS, NOTIFICATIONS_DELIVERIES),
                 "Live updates: each open page is told of the changes its user may see, from the topics' end."),
)

BY_TYPE = {spec.type: spec for spec in EVENTS}
