"""The offer board, plan, commitment, review report, inbox and webhook pages
in a real browser (Chromium) against the real stack, in English and Russian."""

import csv
import io
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from tests.console.conftest import (
    LIVE_TIMEOUT_MS,
    BrowserPage,
    check_accessibility,
    new_browser_page,
    open_live,
    sign_in,
    was_not_reloaded,
)
from tests.notifications.receiver import Receiver, Reply

PLAN = "caj-2006"


def api(stack, service: str, key_name: str) -> httpx.Client:
    return httpx.Client(base_url=stack.service_urls[service], timeout=30,
                        headers={"Authorization": f"Bearer {stack.keys[key_name]}"})


def reload_until(opened: BrowserPage, path: str, holds: Callable[[], bool], timeout: float = 30) -> None:
    """Reopen a page until what it shows holds (events reach the services through Kafka)."""
    deadline = time.monotonic() + timeout
    while True:
        opened.open(path)
        if holds():
            return
        assert time.monotonic() < deadline, f"{path} never showed what was expected"
        time.sleep(0.3)


def cell(opened: BrowserPage, commitment_id: str, country: str):
    return opened.page.locator(f'#offer-{commitment_id} td[data-country="{country}"]')


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as running:
        yield running


# -- offer board ---------------------------------------------------------------------
def test_an_offer_board_cell_turns_activated_after_a_request(coordinator_page, console_stack):
    with api(console_stack, "requests", "coordinator") as requests_api:
        offers = requests_api.get("/v1/offers").json()["items"]
    offer = next(o for o in offers if o["condition_type"] == "on_request" and o["countries"].get("UZ") == "dormant")
    joint = next(o for o in offers if o["condition_type"] == "joint_interest")

    open_live(coordinator_page, "/offers")
    page = coordinator_page.page
    assert page.get_by_role("heading", level=1).inner_text() == "Offer board"
    assert cell(coordinator_page, offer["commitment_id"], "UZ").inner_text() == "Dormant"
    shown = sum(1 for state in joint["countries"].values() if state != "dormant")
    assert page.locator(f"#offer-{joint['commitment_id']} td.tally").inner_text() == \
        f"{shown} of {len(joint['countries'])}"
    check_accessibility(coordinator_page)

    uz_key = console_stack.make_key("partner", country="UZ", agency="uz-mfa-board")
    deadline = time.monotonic() + 30
    while True:  # the new key reaches the requests service through Kafka
        submitted = httpx.post(console_stack.service_urls["requests"] + "/v1/requests", timeout=30,
                               headers={"Authorization": f"Bearer {uz_key}"},
                               json={"commitment_id": offer["commitment_id"], "title": "Asked for by Uzbekistan",
                                     "description": "As the plan offers."})
        if submitted.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert submitted.status_code == 201, submitted.text
    # The open board changes in place as the activation comes through Kafka.
    expect(cell(coordinator_page, offer["commitment_id"], "UZ")).to_have_text("Activated", timeout=LIVE_TIMEOUT_MS)
    assert was_not_reloaded(coordinator_page)


def test_a_coordinator_records_an_agreement_on_the_board_and_a_refusal_is_said_in_words(
        coordinator_page, console_stack, browser):
    with api(console_stack, "requests", "coordinator") as requests_api:
        offers = requests_api.get("/v1/offers").json()["items"]
    offer = next(o for o in offers if o["condition_type"] == "regional_agreement" and not o["records"])
    commitment_id = offer["commitment_id"]
    page = coordinator_page.page
    coordinator_page.open("/offers")
    form = page.locator(f"#record-{commitment_id}")
    form.get_by_label("Reference (where it is written down)").fill("Joint statement, Tashkent, 2024")
    form.get_by_label("Parties (country codes, comma-separated)").fill("K1")  # not a country code
    form.get_by_role("button", name="Record the agreement").click()
    page.wait_for_load_state()
    alert = page.locator(f"#record-{commitment_id}").get_by_role("alert")
    assert alert.is_visible() and not alert.inner_text().lstrip().startswith("{"), "in words, not JSON"
    with api(console_stack, "requests", "coordinator") as requests_api:
        assert requests_api.get(f"/v1/offers/{commitment_id}").json()["records"] == [], "a refusal changes nothing"

    form = page.locator(f"#record-{commitment_id}")
    assert form.get_by_label("Reference (where it is written down)").input_value() == \
        "Joint statement, Tashkent, 2024", "what was typed is kept"
    form.get_by_label("Parties (country codes, comma-separated)").fill(", ".join(offer["countries"]))
    form.get_by_role("button", name="Record the agreement").click()
    page.wait_for_url(f"**/offers#record-{commitment_id}")
    assert "Joint statement, Tashkent, 2024" in page.locator(f"#record-{commitment_id} .records").inner_text()
    with api(console_stack, "requests", "coordinator") as requests_api:
        recorded = requests_api.get(f"/v1/offers/{commitment_id}").json()
    assert [r["reference"] for r in recorded["records"]] == ["Joint statement, Tashkent, 2024"]
    assert sorted(recorded["records"][0]["parties"]) == sorted(offer["countries"])
    check_accessibility(coordinator_page)

    partner = new_browser_page(browser, console_stack.console_url)
    try:
        sign_in(partner, console_stack.keys["tj"])
        partner.open("/offers")
        assert partner.page.get_by_text("Coordinators record agreements and evidence.").is_visible()
        assert partner.page.get_by_role("button", name="Record the agreement").count() == 0
        # Forged anyway: the API's rule (coordinators only) answers, in words.
        token = partner.page.locator('input[name="csrf_token"]').first.get_attribute("value")
        forged = partner.context.request.post(
            console_stack.console_url + f"/offers/{commitment_id}/records",
            form={"csrf_token": token, "kind": "agreements", "reference": "Forged record", "parties": "TJ"})
        assert forged.status == 403
    finally:
        partner.context.close()


# -- plan and commitment ------------------------------------------------------------
def test_the_plan_page_groups_by_pillar_and_filters(coordinator_page, console_stack):
    page = coordinator_page.page
    coordinator_page.open("/plans")
    assert page.url.startswith(console_stack.console_url + f"/plans/{PLAN}")
    with api(console_stack, "catalog", "coordinator") as catalog:
        everything = catalog.get("/v1/commitments", params={"plan_id": PLAN, "limit": 1}).json()["total"]
        on_request = catalog.get("/v1/commitments", params={"plan_id": PLAN, "condition": "on_request",
                                                            "limit": 1}).json()["total"]
    assert page.locator("#commitment-count").inner_text() == f"{everything} commitments shown"
    assert page.locator("section.pillar").count() == 5
    check_accessibility(coordinator_page)

    page.get_by_label("Condition").select_option("on_request")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**condition=on_request*")
    assert page.locator("#commitment-count").inner_text() == f"{on_request} commitments shown"
    conditions = page.locator("table.commitments tbody tr td:nth-child(2)").all_inner_texts()
    assert len(conditions) == on_request and set(conditions) == {"If requested"}


def test_the_commitment_page_shows_the_text_in_its_paragraph_and_takes_a_progress_report(
        coordinator_page, console_stack, browser):
    commitment_id = "caj-2006-2-1-04"
    with api(console_stack, "catalog", "coordinator") as catalog:
        commitment = catalog.get(f"/v1/commitments/{commitment_id}").json()
        source = catalog.get(f"/v1/plans/{PLAN}/source").text
    page = coordinator_page.page
    coordinator_page.open(f"/commitments/{commitment_id}")
    assert page.locator("mark#verbatim").inner_text() == commitment["text"]
    paragraph = page.locator("p.paragraph").inner_text()
    assert paragraph in source and len(paragraph) >= len(commitment["text"])
    for agency in commitment["responsible_agencies"]:
        assert agency["name"] in page.locator("#agencies + ul").inner_text()
    check_accessibility(coordinator_page)

    # Refused by the API (a date in the future): said next to the form, nothing recorded.
    page.get_by_label("Status", exact=True).select_option("implementation")
    page.get_by_label("As of (date)").fill("2999-01-01")
    page.get_by_label("What has been done").fill("Three border posts equipped.")
    page.get_by_role("button", name="Report progress").click()
    page.wait_for_load_state()
    assert page.get_by_role("alert").is_visible()
    assert page.get_by_label("What has been done").input_value() == "Three border posts equipped.", "kept"
    with api(console_stack, "catalog", "coordinator") as catalog:
        assert catalog.get(f"/v1/commitments/{commitment_id}/progress").json()["total"] == 0

    page.get_by_label("As of (date)").fill("2024-05-01")
    page.get_by_role("button", name="Report progress").click()
    page.wait_for_url(f"**/commitments/{commitment_id}#progress")
    assert page.locator("#current-status").inner_text() == "Implementation"
    assert "Three border posts equipped." in page.locator("table.reports").inner_text()
    with api(console_stack, "catalog", "coordinator") as catalog:
        reports = catalog.get(f"/v1/commitments/{commitment_id}/progress").json()["items"]
    assert [(r["status"], r["as_of"], r["summary"]) for r in reports] == [
        ("implementation", "2024-05-01", "Three border posts equipped.")]

    partner = new_browser_page(browser, console_stack.console_url)
    try:  # not responsible for it: no form
        sign_in(partner, console_stack.keys["kz"])
        partner.open(f"/commitments/{commitment_id}")
        assert partner.page.get_by_role("button", name="Report progress").count() == 0
    finally:
        partner.context.close()


# -- review report ----------------------------------------------------------------------
def test_the_review_report_draws_its_chart_on_the_server_and_downloads_as_csv(coordinator_page, console_stack):
    with api(console_stack, "catalog", "coordinator") as catalog:
        review = catalog.get(f"/v1/plans/{PLAN}/reviews").json()["items"][-1]
        report = catalog.get(f"/v1/plans/{PLAN}/reviews/{review['id']}/report").json()
    page = coordinator_page.page
    coordinator_page.open(f"/reviews/{review['id']}")
    assert page.get_by_role("heading", level=1).inner_text() == review["title"]
    chart = page.get_by_role("img", name="Status by pillar")
    bars = chart.locator("g.bar").all()
    assert len(bars) == len(report["pillars"])
    for bar, pillar in zip(bars, report["pillars"], strict=True):
        drawn = {rect.get_attribute("data-status"): int(rect.get_attribute("data-count") or 0)
                 for rect in bar.locator("rect").all()}
        assert drawn == {status: count for status, count in pillar["counts"].items() if count}, pillar["number"]
    assert page.locator("script[src*='chart']").count() == 0
    check_accessibility(coordinator_page)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download as CSV").click()
    rows = list(csv.DictReader(io.StringIO(download_info.value.path().read_text(encoding="utf-8"))))
    assert rows and {row["review_id"] for row in rows} == {review["id"]}
    assert len(rows) == sum(len(p["commitments"]) for p in report["pillars"])

    page.emulate_media(media="print")
    assert not page.locator("nav.main-nav").is_visible(), "no navigation on paper"
    assert chart.is_visible()


# -- inbox and webhook ----------------------------------------------------------------
def test_an_agency_acknowledges_its_notifications_in_the_inbox(page, console_stack):
    agency = "kg-inbox-agency"
    key = console_stack.make_key("partner", country="KG", agency=agency)
    deadline = time.monotonic() + 30
    while True:
        submitted = httpx.post(console_stack.service_urls["requests"] + "/v1/requests", timeout=30,
                               headers={"Authorization": f"Bearer {key}"},
                               json={"commitment_id": "caj-2006-2-1-05", "title": "Customs posts for Kyrgyzstan",
                                     "description": "Training."})
        if submitted.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert submitted.status_code == 201, submitted.text
    with api(console_stack, "requests", "coordinator") as requests_api:
        moved = requests_api.post(f"/v1/requests/{submitted.json()['id']}/transitions", json={"to": "under_review"})
        assert moved.status_code == 200, moved.text

    sign_in(page, key)
    reload_until(page, "/inbox", lambda: page.page.locator("table.inbox tbody tr").count() >= 1)
    row = page.page.locator("table.inbox tbody tr", has_text="Request status changed")
    assert submitted.json()["id"] in row.inner_text() and "Submitted → Under review" in row.inner_text()
    check_accessibility(page)
    waiting = page.page.locator("table.inbox tbody tr").count()
    row.get_by_role("button", name="Acknowledge").click()
    page.page.wait_for_url("**/inbox")
    assert page.page.locator("table.inbox tbody tr", has_text="Request status changed").count() == 0
    assert page.page.locator("table.inbox tbody tr").count() == waiting - 1
    inbox = httpx.get(console_stack.service_urls["notifications"] + "/v1/inbox", timeout=30,
                      headers={"Authorization": f"Bearer {key}"}).json()
    assert all(item["event_type"].split(".")[-2] != "status-changed" for item in inbox["items"])


def test_a_delivery_log_and_a_delivery_page_change_in_place_as_attempts_are_made(page, console_stack, receiver,
                                                                                 browser):
    agency, neighbour = "tj-hook-live", "tj-hook-neighbour"
    key, neighbour_key = (console_stack.make_key("partner", country="TJ", agency=name) for name in (agency, neighbour))
    path = f"/{agency}"
    notifications = console_stack.service_urls["notifications"]
    deadline = time.monotonic() + 30
    while True:  # the new key reaches the notifications service through Kafka
        saved = httpx.put(f"{notifications}/v1/agencies/{agency}/webhook", timeout=30,
                          headers={"Authorization": f"Bearer {key}"}, json={"url": receiver.script(path, Reply(503))})
        if saved.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert saved.status_code in (200, 201), saved.text

    sign_in(page, key)
    open_live(page, "/webhook")
    assert page.page.locator("table.deliveries tbody tr").count() == 0
    other = new_browser_page(browser, console_stack.console_url)
    try:
        sign_in(other, neighbour_key)  # same country, another agency: not its delivery
        open_live(other, "/webhook")

        sent = httpx.post(f"{notifications}/v1/agencies/{agency}/webhook/test", timeout=30,
                          headers={"Authorization": f"Bearer {key}"})
        assert sent.status_code in (200, 201, 202), sent.text
        receiver.wait_for(path, 1)
        # The first attempt failed (503): the open log shows the delivery, waiting, without a reload.
        row = page.page.locator("table.deliveries tbody tr")
        expect(row).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
        expect(row.locator("td.delivery-state")).to_have_text("Waiting for a retry", timeout=LIVE_TIMEOUT_MS)
        assert was_not_reloaded(page)

        # Its own page, opened before the retry (8 s later), follows it as the receiver takes it.
        row.locator("a").click()
        page.page.wait_for_load_state()
        assert page.page.locator("#delivery-state").inner_text() == "Waiting for a retry"
        expect(page.page.locator("html")).to_have_attribute("data-live", "connected", timeout=LIVE_TIMEOUT_MS)
        page.page.evaluate("() => { window.notReloaded = true; }")
        expect(page.page.locator("#delivery-state")).to_have_text("Delivered", timeout=LIVE_TIMEOUT_MS)
        expect(page.page.locator("table.attempts tbody tr")).to_have_count(2)
        assert was_not_reloaded(page)
        check_accessibility(page)

        assert other.page.locator("table.deliveries tbody tr").count() == 0
        assert other.page.locator("#live-region").get_attribute("data-live-version") is None, \
            "another agency's page is not told of this delivery"
    finally:
        other.context.close()


def test_an_agency_sets_its_webhook_rotates_the_secret_and_sends_a_test_event(page, console_stack, receiver,
                                                                              browser):
    agency = "tj-hook-console"
    key = console_stack.make_key("partner", country="TJ", agency=agency)
    sign_in(page, key)
    reload_until(page, "/webhook", lambda: page.page.get_by_label(
        "URL that receives the notifications (https)").is_visible())
    check_accessibility(page)

    # Refused by the API (not an http(s) URL): said next to the form, and nothing saved.
    page.page.get_by_label("URL that receives the notifications (https)").fill("ftp://example.org/hook")
    page.page.get_by_role("button", name="Save the webhook").click()
    page.page.wait_for_load_state()
    assert page.page.get_by_role("alert").is_visible()
    assert httpx.get(console_stack.service_urls["notifications"] + f"/v1/agencies/{agency}/webhook", timeout=30,
                     headers={"Authorization": f"Bearer {key}"}).status_code == 404

    path = f"/{agency}"
    page.page.get_by_label("URL that receives the notifications (https)").fill(receiver.script(path, Reply(410)))
    page.page.get_by_label("Request status changed").check()
    page.page.get_by_role("button", name="Save the webhook").click()
    page.page.wait_for_load_state()
    first_secret = page.page.get_by_label("Signing secret").input_value()
    assert first_secret.startswith("whsec_")
    page.open("/webhook")
    assert page.page.get_by_label("Signing secret").count() == 0, "the secret is shown once"
    assert page.page.get_by_label("Request status changed").is_checked()

    page.page.get_by_role("button", name="Rotate the secret").click()
    page.page.wait_for_load_state()
    second_secret = page.page.get_by_label("Signing secret").input_value()
    assert second_secret.startswith("whsec_") and second_secret != first_secret

    # The receiver answers 410 to the first test event: the delivery is dead, the endpoint disabled.
    page.page.get_by_role("button", name="Send a test event").click()
    page.page.wait_for_load_state()
    assert page.page.locator("#notice").inner_text().startswith("A test event is on its way")
    receiver.wait_for(path, 1)
    reload_until(page, "/webhook?state=dead", lambda: page.page.locator("table.deliveries tbody tr").count() == 1)
    page.page.locator("table.deliveries tbody tr a").first.click()
    page.page.wait_for_load_state()
    assert page.page.locator("#delivery-state").inner_text() == "Dead"
    attempts = page.page.locator("table.attempts tbody tr")
    assert attempts.count() == 1 and "410" in attempts.inner_text()
    assert page.page.get_by_role("button", name="Retry this delivery").count() == 0, "agencies do not retry"
    delivery_path = page.page.url.removeprefix(console_stack.console_url)
    check_accessibility(page)

    coordinator = new_browser_page(browser, console_stack.console_url)
    try:
        sign_in(coordinator, console_stack.keys["coordinator"])
        coordinator.open(delivery_path)
        coordinator.page.get_by_role("button", name="Retry this delivery").click()
        coordinator.page.wait_for_load_state()
        assert "disabled" in coordinator.page.get_by_role("alert").inner_text(), "the API's 409, in words"

        # The agency saves its webhook again (which enables it); now the retry goes through.
        page.open("/webhook")
        page.page.get_by_role("button", name="Save the webhook").click()
        page.page.wait_for_load_state()
        coordinator.open(delivery_path)
        coordinator.page.get_by_role("button", name="Retry this delivery").click()
        coordinator.page.wait_for_url("**" + delivery_path)
        reload_until(coordinator, delivery_path,
                     lambda: coordinator.page.locator("#delivery-state").inner_text() == "Delivered")
        assert coordinator.page.locator("table.attempts tbody tr").count() == 2
        assert len(receiver.received(path)) == 2
        check_accessibility(coordinator)
    finally:
        coordinator.context.close()


# -- in Russian ---------------------------------------------------------------------------
@pytest.mark.parametrize("path, heading", [
    ("/offers", "Доска предложений"), ("/inbox", "Входящие"), ("/webhook", "Вебхук"),
])
def test_the_pages_in_russian(page, console_stack, path, heading):
    sign_in(page, console_stack.keys["tj"])
    page.open(path + "?lang=ru")
    assert page.page.locator("html").get_attribute("lang") == "ru"
    assert page.page.get_by_role("heading", level=1).inner_text() == heading
    check_accessibility(page)


def test_the_plan_commitment_and_review_pages_in_russian(page, console_stack):
    sign_in(page, console_stack.keys["coordinator"])
    page.open(f"/plans/{PLAN}?lang=ru")
    assert page.page.get_by_label("Условие").is_visible()
    assert "обязательств" in page.page.locator("#commitment-count").inner_text()
    check_accessibility(page)
    page.open("/commitments/caj-2006-2-1-04")
    assert page.page.get_by_role("heading", name="В плане").is_visible()
    assert page.page.locator("mark#verbatim").get_attribute("lang") is None  # inside the English paragraph
    assert page.page.locator("p.paragraph").get_attribute("lang") == "en", "plan texts stay in English"
    check_accessibility(page)
    with api(console_stack, "catalog", "coordinator") as catalog:
        review = catalog.get(f"/v1/plans/{PLAN}/reviews").json()["items"][0]
    page.open(f"/reviews/{review['id']}")
    assert page.page.get_by_role("img", name="Статусы по направлениям").is_visible()
    assert page.page.get_by_role("link", name="Скачать в CSV").is_visible()
    check_accessibility(page)
