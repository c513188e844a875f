"""Baselines for bench/catalog_list.py: FastAPI endpoints with no catalog behind them.

- `/bare`: a tiny JSON object from an async handler, the fastest FastAPI serves JSON.
- `/bare-page`: the same 50 commitments the catalog returns, as plain dicts
  through FastAPI's default serialisation.
- `/bare-post`: parses and validates a request body and stores nothing
  (the ceiling for bench/requests_submit.py).
- `/bare-bytes`: the same page, rendered once at start and sent as bytes: the
  ceiling for a 70 KB response on this server, with no work per request.
"""

import json
import uuid

from fastapi import FastAPI
from fastapi.responses import Response

from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from requests_service.schemas import RequestCreate

app = FastAPI()
_PAGE = [c.model_dump(mode="json") for c in load_plan_file(DEFAULT_PLAN_FILES[0]).commitments[:50]]


@app.get("/bare")
async def bare() -> dict:
    return {"status": "ok"}


@app.get("/bare-page")
async def bare_page() -> dict:
    return {"items": _PAGE, "total": 106, "limit": 50, "offset": 0, "next": "/v1/commitments?offset=50"}


_PAGE_BYTES = json.dumps(
    {"items": _PAGE, "total": 106, "limit": 50, "offset": 0, "next": "/v1/commitments?offset=50"}
).encode()


@app.get("/bare-bytes")
async def bare_bytes() -> Response:
    return Response(_PAGE_BYTES, media_type="application/json")


@app.post("/bare-post", status_code=201)
async def bare_post(body: RequestCreate) -> dict:
    """The ceiling for bench/requests_submit.py: the same body parsed and
    validated, nothing stored, no middleware."""
    return {"id": str(uuid.uuid4()), "status": "submitted"}
