"""Words for the codes the APIs answer with (statuses, countries, roles),
translated when a page is rendered."""

from console_service.i18n import gettext as _


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
