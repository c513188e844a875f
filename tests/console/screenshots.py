"""`make screenshots`: the console's main pages in English and Russian, saved
to docs/screenshots/ at 1366x768, from the real stack (the browser tests'
fixtures: Kafka, the three services, the console, Debian's Chromium) with
some data put in through the APIs first.

Run by `make screenshots`, not by the test suite (its name is not test_*)."""

import time
from pathlib import Path

import httpx

from tests.console.conftest import new_browser_page, sign_in

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PLAN = "caj-2006"


def _put_in_some_data(stack) -> str:
    """A few requests, a status change and a progress report; returns a review id."""
    def call(method: str, service: str, key: str, path: str, **kwargs) -> httpx.Response:
        deadline = time.monotonic() + 30
        while True:  # a new key reaches the services through Kafka
            response = httpx.request(method, stack.service_urls[service] + path, timeout=30,
                                     headers={"Authorization": f"Bearer {stack.keys[key]}"}, **kwargs)
            if response.status_code != 401 or time.monotonic() > deadline:
                assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
                return response
            time.sleep(0.2)

    for key, commitment, title in (("tj", "caj-2006-2-1-04", "Border posts on the Pyanj"),
                                   ("kz", "caj-2006-2-1-05", "Customs training in Almaty"),
                                   ("tj", "caj-2006-2-1-04", "Radio equipment for border posts")):
        created = call("POST", "requests", key, "/v1/requests",
                       json={"commitment_id": commitment, "title": title, "description": "As the plan offers."})
    call("POST", "requests", "coordinator", f"/v1/requests/{created.json()['id']}/transitions",
         json={"to": "under_review"})
    call("POST", "catalog", "coordinator", "/v1/commitments/caj-2006-2-1-04/progress",
         json={"status": "implementation", "as_of": "2024-05-01", "summary": "Three border posts equipped."})
    reviews = call("GET", "catalog", "coordinator", f"/v1/plans/{PLAN}/reviews").json()["items"]
    return reviews[-1]["id"]


def test_save_screenshots(browser, console_stack):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    review_id = _put_in_some_data(console_stack)
    pages = {
        "coordinator": [("overview", "/"), ("requests", "/requests"), ("offers", "/offers"),
                        ("plan", f"/plans/{PLAN}?pillar=2"), ("commitment", "/commitments/caj-2006-2-1-04"),
                        ("review", f"/reviews/{review_id}")],
        "tj": [("inbox", "/inbox"), ("webhook", "/webhook")],
    }
    saved = []
    for language in ("en", "ru"):
        for who, listed in pages.items():
            opened = new_browser_page(browser, console_stack.console_url)  # signs in in English; ?lang= switches
            try:
                sign_in(opened, console_stack.keys[who])
                for name, path in listed:
                    separator = "&" if "?" in path else "?"
                    opened.open(f"{path}{separator}lang={language}")
                    target = SCREENSHOTS / f"{name}-{language}.png"
                    opened.page.screenshot(path=str(target))
                    saved.append(target)
            finally:
                opened.context.close()
    assert all(path.stat().st_size > 10_000 for path in saved), "a screenshot came out (nearly) empty"
    print("\n".join(str(path) for path in saved))
