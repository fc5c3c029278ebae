"""Aliases with their audit log, version tombstones, and the serving request log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Deleted versions stay as tombstones so that their numbers are never handed out again.
    op.add_column("model_versions", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "alias", name="uq_aliases_name_alias"),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alias_events_name_alias", "alias_events", ["name", "alias"])
    op.create_table(
        "request_log",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("variant", sa.String(), nullable=True),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("user", sa.String(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_request_log_created_at", "request_log", ["created_at"])
    op.create_index("ix_request_log_model", "request_log", ["model"])


def downgrade() -> None:
    op.drop_index("ix_request_log_model", table_name="request_log")
    op.drop_index("ix_request_log_created_at", table_name="request_log")
    op.drop_table("request_log")
    op.drop_index("ix_alias_events_name_alias", table_name="alias_events")
    op.drop_table("alias_events")
    op.drop_table("aliases")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("deleted_at")
