"""Fine-tuning jobs as OpenAI's current API has them: `metadata` (filterable in the list), `integrations`
(W&B, mapped to the run's tracking), `result_files` (the per-step metrics CSV), and pause/resume
(the statuses `pausing` and `paused` need no schema change).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as table:
        table.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
        table.add_column(sa.Column("integrations", sa.JSON(), nullable=True))
        table.add_column(sa.Column("result_files", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as table:
        table.drop_column("result_files")
        table.drop_column("integrations")
        table.drop_column("metadata")
