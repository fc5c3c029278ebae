"""Job leases: the worker running a job renews `heartbeat_at`, and records its trainer's process id, so a
restarted server can tell an abandoned job from a live one and stop an orphaned trainer before resuming.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as table:
        table.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("trainer_pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as table:
        table.drop_column("trainer_pid")
        table.drop_column("heartbeat_at")
