"""The schema tuneloop had before migrations: numbered model versions.

Databases created by that code have exactly this table and no alembic_version; they are stamped at
this revision and upgraded from here.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("base_model", sa.String(length=500), nullable=False),
        sa.Column("method", sa.String(length=50), nullable=False),
        sa.Column("data_hash", sa.String(length=64), nullable=True),
        sa.Column("train_config", sa.JSON(), nullable=False),
        sa.Column("eval_results", sa.JSON(), nullable=False),
        sa.Column("task", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_model_versions_name", "model_versions", ["name"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_name", table_name="model_versions")
    op.drop_table("model_versions")
