"""The console's pages, one router module per page group.

Adding a page group (say, the offer board):
1. `pages/offers.py` with `router = APIRouter()` and its routes. A page takes
   `session: SignedIn` (a redirect to /sign-in when nobody is) and
   `api: Api`, calls the services with `session.api_key`, and returns
   `render(request, "offers.html", {...})`. A POST route also takes
   `Depends(check_csrf)`, and its form includes `{% include "_csrf.html" %}`.
   An `ApiProblem` a page does not catch becomes the 403, 404 or 502 page;
   one it catches is shown next to its form (`{% include "_problem.html" %}`).
2. `templates/offers.html`, extending `base.html`, every text in `{% trans %}`
   or `_()`, every control with a label; add the link in `_nav.html`.
3. Add the router to ROUTERS below.
4. `make translations`, then fill in the new Russian entries in
   `translations/ru/LC_MESSAGES/messages.po` (tests/console fails on any left empty).
5. A browser test in tests/console/ that signs in, opens the page and runs
   the axe check on it.
"""

from fastapi import APIRouter

from console_service.pages import (
    agency,
    live,
    offers,
    overview,
    partner,
    plans,
    request_detail,
    requests_list,
    reviews,
    sign_in,
)

ROUTERS: tuple[APIRouter, ...] = (
    sign_in.router, overview.router, requests_list.router, request_detail.router, partner.router, live.router,
    offers.router, plans.router, reviews.router, agency.router,
)
