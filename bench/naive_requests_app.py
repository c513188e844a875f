"""Baseline for bench/requests_submit.py: the plain way to write the endpoint,
FastAPI + SQLModel, one insert and one commit per request, same database
settings (SQLite WAL, synchronous=FULL) as the requests service."""

import os
import uuid
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlmodel import Field, Session, SQLModel

from requests_service.schemas import RequestCreate
from shared.db import make_engine


class NaiveRequest(SQLModel, table=True):
    __tablename__ = "naive_requests"
    id: str = Field(primary_key=True)
    commitment_id: str
    title: str
    description: str
    created_at: datetime


engine = make_engine(os.environ["NAIVE_DATABASE_URL"])
SQLModel.metadata.create_all(engine, tables=[NaiveRequest.__table__])
app = FastAPI()


@app.post("/naive", status_code=201)
def create(body: RequestCreate) -> dict:
    row = NaiveRequest(id=str(uuid.uuid4()), commitment_id=body.commitment_id, title=body.title,
                       description=body.description, created_at=datetime.now(UTC))
    row_id = row.id
    with Session(engine) as session:
        session.add(row)
        session.commit()
    return {"id": row_id, "status": "submitted"}
