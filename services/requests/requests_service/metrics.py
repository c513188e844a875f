from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge
from sqlmodel import Session, col, func, select

from requests_service.models import OfferActivationRow, OfferRow, RequestRow
from requests_service.staleness import WAITING_STATUSES
from shared.contracts.catalog import CENTRAL_ASIAN_COUNTRIES

REQUESTS_SUBMITTED = Counter("caj_requests_submitted_total", "Requests accepted", ["country"])
REQUESTS_REFUSED = Counter("caj_requests_refused_total", "Requests refused, by reason", ["reason"])
REQUESTS_BY_STATUS = Gauge("caj_requests_by_status", "Requests in each lifecycle status", ["status"])
OFFERS_ACTIVATED = Gauge(
    "caj_offers_activated", "Conditional offers activated (for at least one country), by condition type",
    ["condition_type"],
)
OFFER_ACTIVATIONS = Gauge(
    "caj_offer_activations", "Offers activated for each country (\"*\" when the condition names none)", ["country"]
)
REQUESTS_STALE = Gauge(
    "caj_requests_stale", "Requests waiting on someone whose status has not changed for the staleness period",
    ["status"],
)
STATUSES = (
    "submitted", "under_review", "info_requested", "approved", "in_progress", "fulfilled", "declined", "withdrawn"
)


def refresh(session: Session) -> None:
    """Scrape-time gauges: the database is the truth, whichever replica wrote it."""
    by_status = dict(session.exec(select(RequestRow.status, func.count()).group_by(RequestRow.status)).all())
    for status in STATUSES:
        REQUESTS_BY_STATUS.labels(status).set(by_status.get(status, 0))
    activated = session.exec(
        select(OfferRow.condition_type, func.count(func.distinct(OfferActivationRow.commitment_id)))
        .join(OfferRow, col(OfferRow.commitment_id) == col(OfferActivationRow.commitment_id))
        .group_by(OfferRow.condition_type)
    ).all()
    counts = dict(activated)
    for condition_type in ("on_request", "joint_interest", "regional_agreement", "evidence"):
        OFFERS_ACTIVATED.labels(condition_type).set(counts.get(condition_type, 0))
    by_country = dict(session.exec(
        select(OfferActivationRow.country, func.count()).group_by(OfferActivationRow.country)
    ).all())
    # The Dialogue's countries always have a series, so a dashboard shows their zeros.
    for country in sorted({*CENTRAL_ASIAN_COUNTRIES, "AF"} | set(by_country)):
        OFFER_ACTIVATIONS.labels(country).set(by_country.get(country, 0))


def refresh_stale(session: Session, *, now: datetime, stale_after: timedelta) -> None:
    """Stale requests by status, at `now` by the service's clock."""
    stale_before = now.astimezone(UTC) - stale_after  # SQLite compares timestamps as UTC text
    by_status = dict(session.exec(
        select(RequestRow.status, func.count())
        .where(col(RequestRow.status).in_(WAITING_STATUSES), col(RequestRow.status_since) <= stale_before)
        .group_by(RequestRow.status)
    ).all())
    for status in WAITING_STATUSES:
        REQUESTS_STALE.labels(status).set(by_status.get(status, 0))
