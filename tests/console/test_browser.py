"""The console in a real browser (Chromium) against the real stack."""

import time

import httpx

from caj.keys import revoke_key
from console_service.sessions import SESSION_COOKIE
from tests.console.conftest import BrowserPage, check_accessibility, new_browser_page, run_async, sign_in

WRONG_KEY = "caj_0000000000000000_not-a-real-secret"


def session_cookie(opened: BrowserPage) -> dict | None:
    return next((cookie for cookie in opened.context.cookies() if cookie["name"] == SESSION_COOKIE), None)


def test_sign_in_opens_the_overview_with_a_session_cookie_only(page, console_stack):
    response = page.open("/")
    assert page.page.url.startswith(console_stack.console_url + "/sign-in"), "an anonymous visit is sent to sign in"
    assert response.status == 200
    check_accessibility(page)

    key = console_stack.keys["coordinator"]
    sign_in(page, key)
    assert page.page.get_by_role("heading", level=1).inner_text() == "Overview"
    assert page.page.get_by_role("heading", name="Requests by status").is_visible()
    assert page.page.get_by_role("button", name="Sign out").is_visible()
    check_accessibility(page)

    cookie = session_cookie(page)
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False, "Secure only over https; this stack is plain http on 127.0.0.1"
    # The browser holds a random id, never the key.
    assert key not in cookie["value"] and key not in page.page.content()
    assert all(key not in c["value"] for c in page.context.cookies())


def test_a_wrong_key_is_refused_with_a_message(page):
    page.open("/sign-in")
    page.page.get_by_label("API key").fill(WRONG_KEY)
    page.page.get_by_role("button", name="Sign in").click()
    alert = page.page.get_by_role("alert")
    assert alert.inner_text() == "This key is not valid, or it has been revoked."
    assert page.page.url.endswith("/sign-in")
    assert session_cookie(page) is None
    check_accessibility(page)


def test_the_overview_counts_what_the_api_holds(page, console_stack):
    """A request submitted through the API shows in the coordinator's counts,
    and in the partner's own country only for that partner."""
    response = httpx.post(
        console_stack.service_urls["requests"] + "/v1/requests",
        json={"commitment_id": "caj-2006-2-1-04", "title": "Border posts on the Pyanj",
              "description": "Equipment and training for three posts."},
        headers={"Authorization": f"Bearer {console_stack.keys['tj']}"}, timeout=30,
    )
    assert response.status_code == 201, response.text
    sign_in(page, console_stack.keys["coordinator"])
    by_country = page.page.get_by_role("table", name="Requests by country")
    tajikistan = by_country.get_by_role("row", name="Tajikistan")
    assert int(tajikistan.get_by_role("cell").inner_text()) >= 1
    submitted = page.page.get_by_role("table", name="Requests by status").get_by_role("row", name="Submitted")
    assert int(submitted.get_by_role("cell").inner_text()) >= 1
    # Nothing has waited 30 days in this run: the figures are there, and zero.
    assert page.page.locator("#stale-requests").inner_text() == "0 requests have waited too long for their next step"
    assert page.page.locator("#stale-commitments").inner_text().endswith("no progress report for too long")
    assert not page.page.locator(".unavailable").count(), page.page.locator(".unavailable").all_inner_texts()

    partner = new_browser_page(page.context.browser, console_stack.console_url)
    try:
        sign_in(partner, console_stack.keys["kz"])
        kz_by_country = partner.page.get_by_role("table", name="Requests by country")
        assert kz_by_country.get_by_role("row", name="Tajikistan").get_by_role("cell").inner_text() == "0"
        check_accessibility(partner)
    finally:
        partner.context.close()


def test_sign_out_ends_the_session(coordinator_page, console_stack):
    old_session = session_cookie(coordinator_page)
    assert old_session is not None
    coordinator_page.page.get_by_role("button", name="Sign out").click()
    coordinator_page.page.wait_for_url(console_stack.console_url + "/sign-in")
    assert session_cookie(coordinator_page) is None
    # The old id is worth nothing now, even if someone kept it.
    replay = httpx.get(console_stack.console_url + "/", cookies={SESSION_COOKIE: old_session["value"]},
                       follow_redirects=False, timeout=30)
    assert replay.status_code == 303 and replay.headers["location"].startswith("/sign-in")


def test_a_revoked_key_ends_its_sessions_within_seconds(page, console_stack):
    key = console_stack.make_key("partner", country="UZ", agency="uz-mfa")
    deadline = time.monotonic() + 30
    while True:  # a new key reaches the console through Kafka a moment after it is made
        page.open("/sign-in")
        page.page.get_by_label("API key").fill(key)
        page.page.get_by_role("button", name="Sign in").click()
        page.page.wait_for_load_state()
        if page.page.url == console_stack.console_url + "/":
            break
        assert time.monotonic() < deadline, "the new key never reached the console"
        time.sleep(0.2)

    key_id = key.split("_")[1]
    run_async(lambda: revoke_key(console_stack.kafka_bootstrap, key_id))
    deadline = time.monotonic() + 15
    while True:
        page.open("/")
        if page.page.url.startswith(console_stack.console_url + "/sign-in"):
            break
        assert time.monotonic() < deadline, "the session outlived its revoked key"
        time.sleep(0.2)
    page.page.get_by_label("API key").fill(key)
    page.page.get_by_role("button", name="Sign in").click()
    assert page.page.get_by_role("alert").inner_text() == "This key is not valid, or it has been revoked."


def test_a_form_post_without_or_with_a_wrong_csrf_token_is_refused(coordinator_page, console_stack):
    request = coordinator_page.context.request
    for form in ({}, {"csrf_token": "forged"}):
        response = request.post(console_stack.console_url + "/sign-out", form=form)
        assert response.status == 403
        assert "Not allowed" in response.text() and "resend the form" in response.text()
    # Refused means nothing happened: still signed in.
    assert coordinator_page.open("/").status == 200
    assert coordinator_page.page.url == console_stack.console_url + "/"

    # The sign-in form is protected as well (a login CSRF would sign the victim in as someone else).
    anonymous = httpx.post(console_stack.console_url + "/sign-in",
                           data={"key": console_stack.keys["coordinator"]}, timeout=30)
    assert anonymous.status_code == 403
    assert SESSION_COOKIE not in anonymous.cookies


def test_the_403_page_renders_when_a_form_is_refused(coordinator_page, console_stack):
    """The 403 page itself, in the browser: a cross-site form is refused."""
    html = (f'<form method="post" action="{console_stack.console_url}/sign-out"><button>go</button></form>')
    coordinator_page.page.set_content(html)
    coordinator_page.page.get_by_role("button", name="go").click()
    coordinator_page.page.wait_for_load_state()
    assert coordinator_page.page.get_by_role("heading", level=1).inner_text() == "Not allowed"
    check_accessibility(coordinator_page)


def test_an_unknown_page_is_the_404_page(coordinator_page):
    response = coordinator_page.open("/no-such-page")
    assert response.status == 404
    assert coordinator_page.page.get_by_role("heading", level=1).inner_text() == "Not found"
    check_accessibility(coordinator_page)


def test_russian_pages_by_switch_remembered_and_by_accept_language(page, console_stack, browser):
    page.open("/sign-in")
    page.page.get_by_role("link", name="Русский").click()
    page.page.wait_for_load_state()
    assert page.page.locator("html").get_attribute("lang") == "ru"
    assert page.page.get_by_role("heading", level=1).inner_text() == "Вход"
    check_accessibility(page)
    page.open("/sign-in")  # no ?lang: the switch is remembered
    assert page.page.get_by_role("heading", level=1).inner_text() == "Вход"
    page.page.get_by_label("API-ключ").fill(console_stack.keys["tj"])
    page.page.get_by_role("button", name="Вход").click()
    page.page.wait_for_url(console_stack.console_url + "/")
    assert page.page.get_by_role("heading", level=1).inner_text() == "Обзор"
    assert page.page.get_by_role("heading", name="Запросы по странам").is_visible()
    assert "Всё время указано в UTC." in page.page.content()
    check_accessibility(page)

    russian_browser = new_browser_page(browser, console_stack.console_url, locale="ru-RU")
    try:
        russian_browser.open("/sign-in")
        assert russian_browser.page.get_by_role("heading", level=1).inner_text() == "Вход"
        russian_browser.open("/sign-in?lang=en")
        assert russian_browser.page.get_by_role("heading", level=1).inner_text() == "Sign in"
    finally:
        russian_browser.context.close()


def test_security_headers_on_every_answer(console_stack):
    for path in ("/sign-in", "/", "/no-such-page", "/static/console.css"):
        response = httpx.get(console_stack.console_url + path, follow_redirects=False, timeout=30)
        policy = response.headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["script-src"] == "'self'" and "unsafe-inline" not in policy, policy
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-frame-options"] == "DENY"


def test_the_requests_list_filters_sorts_pages_and_counts(coordinator_page, console_stack):
    page = coordinator_page.page
    headers = {"Authorization": f"Bearer {console_stack.keys['kz']}"}
    titles = [f"Customs training {index:02d}" for index in range(52)]
    for title in titles:
        response = httpx.post(console_stack.service_urls["requests"] + "/v1/requests", headers=headers, timeout=30,
                              json={"commitment_id": "caj-2006-2-1-05", "title": title, "description": "Two courses."})
        assert response.status_code == 201, response.text
    total = httpx.get(console_stack.service_urls["requests"] + "/v1/requests", timeout=30,
                      headers={"Authorization": f"Bearer {console_stack.keys['coordinator']}"},
                      params={"country": "KZ", "limit": 1}).json()["total"]
    assert total >= 52

    coordinator_page.open("/requests")
    page.get_by_label("Country").select_option("KZ")
    page.get_by_label("Status").select_option("submitted")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/requests?*country=KZ*")
    assert page.get_by_role("status").inner_text() == f"Requests 1–50 of {total}"
    countries = page.locator("table.requests tbody tr td:nth-child(3)").all_inner_texts()
    assert len(countries) == 50 and set(countries) == {"Kazakhstan"}
    check_accessibility(coordinator_page)

    page.get_by_role("link", name="Next page").click()
    page.wait_for_url("**page=2*")
    assert page.get_by_role("status").inner_text() == f"Requests 51–{min(total, 100)} of {total}"
    assert page.get_by_label("Country").input_value() == "KZ", "the filters stay on the next page"

    # Oldest first, then newest first, by the column header.
    page.get_by_role("link", name="Submitted at").click()
    page.wait_for_url("**sort=created_at*")
    assert page.get_by_role("columnheader", name="Submitted at").get_attribute("aria-sort") == "ascending"
    oldest_first = page.locator("table.requests tbody tr td:first-child").all_inner_texts()
    assert oldest_first[0] == "Customs training 00" and oldest_first.index("Customs training 01") == 1
    page.get_by_role("link", name="Submitted at").click()
    page.wait_for_url("**sort=-created_at*")
    assert page.locator("table.requests tbody tr td:first-child").first.inner_text() == "Customs training 51"

    page.get_by_label("Waiting too long").select_option("true")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**stale=true*")
    assert page.get_by_role("status").inner_text() == "No request matches."

    partner = new_browser_page(coordinator_page.context.browser, console_stack.console_url)
    try:
        sign_in(partner, console_stack.keys["tj"])
        partner.open("/requests?country=KZ")
        assert partner.page.get_by_role("status").inner_text() == "No request matches.", "another country's"
        check_accessibility(partner)
    finally:
        partner.context.close()
