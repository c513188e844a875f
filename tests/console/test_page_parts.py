"""Unit tests of what the console's pages compute themselves: the chart's
geometry, the paragraph around a commitment, the offer board's columns and
tally, and the event types the webhook form offers."""

from console_service import labels
from console_service.charts import STATUS_COLOURS, stacked_bars
from console_service.labels import ROUTED_EVENT_TYPES
from console_service.pages.offers import board_columns, interest_tally
from console_service.pages.plans import paragraph_around
from notifications_service import webhooks
from notifications_service.routing import load_rules


def test_stacked_bars_share_one_scale_and_stack_in_status_order():
    chart = stacked_bars([("1. Political dialogue", {"closed": 2, "implementation": 3}),
                          ("2. Intra-regional cooperation", {"implementation": 10}),
                          ("3. Empty", {})], width=500, label_width=100)
    first, second, empty = chart.bars
    assert [s.status for s in first.segments] == ["implementation", "closed"], "the legend's order"
    assert first.segments[0].x == 100 and first.segments[1].x == 100 + first.segments[0].width
    assert second.segments[0].width == 500 - 100 - 40, "the longest bar fills the width"
    assert first.segments[0].width * 10 / 3 == second.segments[0].width, "one scale for every bar"
    assert (first.total, second.total, empty.total, empty.segments) == (5, 10, 0, [])
    assert second.y > first.y and {s.colour for s in first.segments} <= set(STATUS_COLOURS.values())


def test_the_paragraph_around_a_span_is_its_line_cut_in_three():
    source = "Title\nFirst sentence. Japan will help, if requested. Last one.\nNext paragraph."
    start = source.index("Japan")
    end = source.index(" Last")
    before, span, after = paragraph_around(source, start, end)
    assert (before, span, after) == ("First sentence. ", "Japan will help, if requested.", " Last one.")
    assert paragraph_around("only line", 0, 4) == ("", "only", " line")


def test_the_board_puts_the_dialogue_countries_first_and_counts_interest():
    offers = [{"countries": {"UZ": "dormant", "KZ": "activated"}},
              {"countries": {"CN": "requested", "KG": "requested", "TJ": "dormant", "RU": "dormant"}}]
    assert board_columns(offers) == ["KZ", "KG", "TJ", "UZ", "CN", "RU"]
    assert interest_tally(offers[1]) == (2, 4)
    assert interest_tally({"countries": {"KZ": "activated", "KG": "activated"}}) == (2, 2)


def test_the_webhook_form_offers_exactly_the_event_types_routed_to_agencies():
    assert sorted(ROUTED_EVENT_TYPES) == sorted(load_rules().rules)
    assert labels.WEBHOOK_TEST == webhooks.WEBHOOK_TEST
