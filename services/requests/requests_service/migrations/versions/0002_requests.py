"""Requests tables: offers read model, requests, history, idempotency,
interests, activations, agreements and evidence.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "offers",
        sa.Column("commitment_id", sa.String(100), primary_key=True),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("section", sa.String(300), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("condition_type", sa.String(32), nullable=False),
        sa.Column("condition_text", sa.String(500), nullable=True),
        sa.Column("eligible_countries", sa.JSON(), nullable=False),
        sa.Column("required_countries", sa.JSON(), nullable=False),
        sa.Column("responsible_agencies", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.false()),
        _timestamp("updated_at"),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("commitment_id", sa.String(100), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(100), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_by_key", sa.String(16), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.create_index("ix_requests_commitment_id", "requests", ["commitment_id"])
    op.create_index("ix_requests_status", "requests", ["status"])
    op.create_index("ix_requests_country_status", "requests", ["country", "status"])
    op.create_table(
        "request_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        _timestamp("at"),
        sa.Column("actor_key_id", sa.String(16), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.Column("actor_agency_id", sa.String(64), nullable=True),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_request_history_request_id", "request_history", ["request_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.String(16), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        _timestamp("created_at"),
    )
    op.create_table(
        "offer_interests",
        sa.Column("commitment_id", sa.String(100), primary_key=True),
        sa.Column("country", sa.String(2), primary_key=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        _timestamp("registered_at"),
    )
    op.create_table(
        "offer_activations",
        sa.Column("commitment_id", sa.String(100), primary_key=True),
        sa.Column("country", sa.String(2), primary_key=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("trigger_id", sa.String(36), nullable=False),
        _timestamp("activated_at"),
    )
    op.create_table(
        "offer_records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("commitment_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(500), nullable=False),
        sa.Column("parties", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_by_key", sa.String(16), nullable=False),
        _timestamp("recorded_at"),
    )
    op.create_index("ix_offer_records_commitment_id", "offer_records", ["commitment_id"])


def downgrade() -> None:
    op.drop_index("ix_offer_records_commitment_id", table_name="offer_records")
    op.drop_table("offer_records")
    op.drop_table("offer_activations")
    op.drop_table("offer_interests")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_request_history_request_id", table_name="request_history")
    op.drop_table("request_history")
    op.drop_index("ix_requests_country_status", table_name="requests")
    op.drop_index("ix_requests_status", table_name="requests")
    op.drop_index("ix_requests_commitment_id", table_name="requests")
    op.drop_table("requests")
    op.drop_table("offers")
