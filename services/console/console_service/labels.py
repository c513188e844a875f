"""Words for the codes the APIs answer with (statuses, countries, roles),
translated when a page is rendered."""

from console_service.i18n import gettext as _
from shared.contracts.catalog import COMMITMENT_STALE, PROGRESS_REPORTED
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    OFFER_INTEREST_REGISTERED,
    REQUEST_STALE,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
)

# What a test delivery carries (notifications_service.webhooks; a test keeps them equal).
WEBHOOK_TEST = "org.caj-tracker.notifications.webhook.test.v1"
# The event types the notifications service routes to agencies (its routing.yaml; a test keeps them equal).
ROUTED_EVENT_TYPES = (REQUEST_SUBMITTED, REQUEST_STATUS_CHANGED, REQUEST_STALE, OFFER_INTEREST_REGISTERED,
                      OFFER_ACTIVATED, PROGRESS_REPORTED, COMMITMENT_STALE)


def status_label(status: str) -> str:
    labels = {
        "submitted": _("Submitted"),
        "under_review": _("Under review"),
        "info_requested": _("Information requested"),
        "approved": _("Approved"),
        "in_progress": _("In progress"),
        "fulfilled": _("Fulfilled"),
        "declined": _("Declined"),
        "withdrawn": _("Withdrawn"),
    }
    return labels.get(status, status)


def country_label(country: str) -> str:
    labels = {
        "JP": _("Japan"),
        "KZ": _("Kazakhstan"),
        "KG": _("Kyrgyzstan"),
        "TJ": _("Tajikistan"),
        "UZ": _("Uzbekistan"),
        "AF": _("Afghanistan"),
    }
    return labels.get(country, country)


def role_label(role: str) -> str:
    labels = {"partner": _("Partner agency"), "coordinator": _("Coordinator"), "operator": _("Operator")}
    return labels.get(role, role)


def delivery_state_label(state: str) -> str:
    labels = {"pending": _("Waiting for a retry"), "delivered": _("Delivered"), "dead": _("Dead")}
    return labels.get(state, state)


def condition_label(condition: str) -> str:
    labels = {
        "none": _("Standing commitment"),
        "on_request": _("If requested"),
        "joint_interest": _("If all concerned show interest"),
        "regional_agreement": _("On a regional agreement"),
        "evidence": _("On evidence of effectiveness"),
    }
    return labels.get(condition, condition)


def progress_label(status: str) -> str:
    labels = {
        "pipeline": _("Pipeline"),
        "implementation": _("Implementation"),
        "finalisation": _("Finalisation"),
        "closed": _("Closed"),
        "cancelled": _("Cancelled"),
        "suspended": _("Suspended"),
    }
    return labels.get(status, status)


def offer_state_label(state: str) -> str:
    labels = {"dormant": _("Dormant"), "requested": _("Requested"), "activated": _("Activated")}
    return labels.get(state, state)


def attempt_outcome_label(outcome: str) -> str:
    labels = {
        "delivered": _("Delivered"),
        "failed": _("Failed"),
        "endpoint_gone": _("Endpoint gone (410)"),
        "endpoint_disabled": _("Endpoint disabled"),
        "refused_address": _("Address refused"),
    }
    return labels.get(outcome, outcome)


def event_type_label(event_type: str) -> str:
    labels = {
        REQUEST_SUBMITTED: _("Request submitted"),
        REQUEST_STATUS_CHANGED: _("Request status changed"),
        REQUEST_STALE: _("Request waiting too long"),
        OFFER_INTEREST_REGISTERED: _("Interest in an offer registered"),
        OFFER_ACTIVATED: _("Offer activated"),
        PROGRESS_REPORTED: _("Progress reported"),
        COMMITMENT_STALE: _("No progress report for too long"),
        WEBHOOK_TEST: _("Test event"),
    }
    return labels.get(event_type, event_type)
