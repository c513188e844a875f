"""The real stack for the console's browser tests, and a real browser.

- `console_stack` (session): Kafka (the session's broker), the catalog,
  requests and notifications services and the console, each a uvicorn
  process on a free port on 127.0.0.1. The services' databases are SQLite
  files, or fresh PostgreSQL databases when TEST_POSTGRES_URL is set. The
  keys the tests sign in with are made (as `caj keys create` makes them)
  before the console starts, so its /readyz means it knows them.
- `browser` (session): Debian's Chromium, headless, driven by Playwright;
  no browser is downloaded.
- `page` / `signed_in`: a fresh browser context per test, at 1366x768.
- `check_accessibility(page)`: axe-core from tests/console/node_modules
  (pinned in package.json; `make install` runs npm ci), no serious or
  critical violations allowed.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from caj.keys import create_key
from tests.databases import POSTGRES_URL, empty_database
from tests.service_process import ServiceProcess

CHROMIUM = "/usr/bin/chromium"
AXE_SCRIPT = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORT = {"width": 1366, "height": 768}
SERVICE_PACKAGES = ("catalog_service", "requests_service", "notifications_service")
# The webhook pages' tests receive deliveries on 127.0.0.1.
# Retries 8 s apart: long enough for a page to be opened between two attempts.
SERVICE_SETTINGS = {"notifications_service": {"webhook_allow_private_addresses": "true",
                                              "delivery_poll_interval_seconds": "0.2",
                                              "webhook_retry_schedule_seconds": "[8, 8, 8]"}}


@dataclass
class ConsoleStack:
    console_url: str
    service_urls: dict[str, str]
    kafka_bootstrap: str
    keys: dict[str, str] = field(default_factory=dict)

    def make_key(self, role: str, *, country: str | None = None, agency: str | None = None) -> str:
        _record, key, _registered = run_async(
            lambda: create_key(self.kafka_bootstrap, role=role, agency_id=agency, country=country)
        )
        return key


def run_async(make_coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Runs a coroutine to its end from a test. In a thread of its own: Playwright's
    sync API keeps an event loop running in the test's thread."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(lambda: asyncio.run(make_coroutine())).result(timeout=120)


# Package scope: the stack and the browser stop after the last console test.
# Playwright's sync API keeps an event loop running in the test thread while
# it is open, which would break every later test that calls asyncio.run().
@pytest.fixture(scope="package")
def console_stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    directory = tmp_path_factory.mktemp("console-stack")
    backend = "postgresql" if POSTGRES_URL else "sqlite"
    stack = ConsoleStack(console_url="", service_urls={}, kafka_bootstrap=kafka_bootstrap)
    stack.keys = {
        "coordinator": stack.make_key("coordinator"),
        "operator": stack.make_key("operator"),
        "tj": stack.make_key("partner", country="TJ", agency="tj-border-service"),
        "kz": stack.make_key("partner", country="KZ", agency="kz-mfa"),
    }
    processes: list[ServiceProcess] = []
    with contextlib.ExitStack() as cleanup:
        for package in SERVICE_PACKAGES:
            service_dir = directory / package
            service_dir.mkdir()
            database_url = cleanup.enter_context(empty_database(backend, service_dir))
            process = ServiceProcess(package, database_url=database_url, kafka_bootstrap=kafka_bootstrap,
                                     log_path=directory / f"{package}.log", rate_limit_per_second="1000",
                                     rate_limit_burst="1000", **SERVICE_SETTINGS.get(package, {}))
            processes.append(process.start())
            cleanup.callback(process.stop)
        for process in processes:
            process.wait_status("/readyz", 200, timeout=180)
        stack.service_urls = {process.package.removesuffix("_service"): process.base_url for process in processes}
        console = ServiceProcess(
            "console_service", database_url="sqlite://", kafka_bootstrap=kafka_bootstrap,
            log_path=directory / "console.log",
            **{f"{name}_url": url for name, url in stack.service_urls.items()},
        )
        console.start(migrate=False)
        cleanup.callback(console.stop)
        console.wait_status("/readyz", 200, timeout=120)
        stack.console_url = console.base_url
        _wait_for_offer_board(stack)
        yield stack


def _wait_for_offer_board(stack: ConsoleStack, timeout: float = 90) -> None:
    """The requests service learns the offers from the catalog's topic."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {stack.keys['coordinator']}"}
    while True:
        response = httpx.get(stack.service_urls["requests"] + "/v1/offers", headers=headers, timeout=10)
        if response.status_code == 200 and len(response.json()["items"]) >= 12:
            return
        assert time.monotonic() < deadline, f"the offer board never filled: {response.text[:300]}"
        time.sleep(0.3)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class BrowserPage:
    """A page and what the browser reported on it: any Content-Security-Policy
    violation (an inline script or style) is a failure of the page."""

    page: Page
    context: BrowserContext
    base_url: str
    console_errors: list[str] = field(default_factory=list)

    def open(self, path: str):
        response = self.page.goto(self.base_url + path)
        assert response is not None
        return response

    def csp_violations(self) -> list[str]:
        return [message for message in self.console_errors if "Content Security Policy" in message]


def new_browser_page(browser: Browser, base_url: str, *, locale: str = "en-GB") -> BrowserPage:
    context = browser.new_context(viewport=VIEWPORT, locale=locale)
    page = context.new_page()
    opened = BrowserPage(page=page, context=context, base_url=base_url)
    page.on("console", lambda message: message.type == "error" and opened.console_errors.append(message.text))
    return opened


@pytest.fixture
def page(browser, console_stack) -> Iterator[BrowserPage]:
    opened = new_browser_page(browser, console_stack.console_url)
    try:
        yield opened
    finally:
        opened.context.close()


def sign_in(opened: BrowserPage, key: str) -> None:
    opened.open("/sign-in")
    opened.page.get_by_label("API key").fill(key)
    opened.page.get_by_role("button", name="Sign in").click()
    opened.page.wait_for_url(opened.base_url + "/")


@pytest.fixture
def coordinator_page(page, console_stack) -> BrowserPage:
    sign_in(page, console_stack.keys["coordinator"])
    return page


def check_accessibility(opened: BrowserPage) -> None:
    """axe-core on the page as it is: no serious or critical violation.
    Evaluated through the DevTools protocol, which the page's CSP (scripts
    from the console only) does not govern."""
    assert AXE_SCRIPT.exists(), f"{AXE_SCRIPT} is missing: run `make install` (npm ci in tests/console)"
    # Wrapped in a function: Playwright would take the bare file for one (it contains "=>").
    opened.page.evaluate("() => {\n" + AXE_SCRIPT.read_text() + "\n}")
    violations = opened.page.evaluate("""async () => {
        const results = await axe.run(document, {resultTypes: ["violations"]});
        return results.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                               nodes: v.nodes.map(n => n.target.join(" "))}));
    }""")
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"axe on {opened.page.url}:\n" + json.dumps(serious, indent=2, ensure_ascii=False)
    assert not opened.csp_violations(), opened.csp_violations()


# -- live pages --------------------------------------------------------------------
LIVE_TIMEOUT_MS = 60_000


def open_live(opened: BrowserPage, path: str) -> None:
    """Opens a page and waits until its event stream is connected; marks the
    document so that a test can tell an update in place from a reload."""
    opened.open(path)
    expect(opened.page.locator("html")).to_have_attribute("data-live", "connected", timeout=LIVE_TIMEOUT_MS)
    opened.page.evaluate("() => { window.notReloaded = true; }")


def was_not_reloaded(opened: BrowserPage) -> bool:
    return opened.page.evaluate("() => window.notReloaded === true")
