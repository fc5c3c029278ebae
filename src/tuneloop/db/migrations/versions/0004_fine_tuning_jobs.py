"""Files and fine-tuning jobs (the OpenAI-compatible jobs API): jobs, their events and checkpoints.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("filename", sa.String(500), nullable=False),
        sa.Column("purpose", sa.String(50), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_details", sa.Text(), nullable=True),
    )
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64), nullable=True),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("method", sa.JSON(), nullable=False),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("fine_tuned_model", sa.String(500), nullable=True),
        sa.Column("registry_ref", sa.String(300), nullable=True),
        sa.Column("trained_tokens", sa.Integer(), nullable=True),
        sa.Column("estimated_finish", sa.Integer(), nullable=True),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
    )
    op.create_index("ix_fine_tuning_jobs_status", "fine_tuning_jobs", ["status"])
    op.create_table(
        "fine_tuning_job_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
    )
    op.create_index("ix_fine_tuning_job_events_job", "fine_tuning_job_events", ["job_id"])
    op.create_table(
        "fine_tuning_job_checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(500), nullable=False),
    )
    op.create_index("ix_fine_tuning_job_checkpoints_job", "fine_tuning_job_checkpoints", ["job_id"])


def downgrade() -> None:
    for table in ("fine_tuning_job_checkpoints", "fine_tuning_job_events", "fine_tuning_jobs", "files"):
        op.drop_table(table)
