"""interaction delivery state: delivering an answer is its own, retried step (answered, not yet delivered)

Rows recorded before this migration keep ``delivery_state`` NULL ("not tracked"): they are neither counted as
undelivered nor re-delivered.

Revision ID: 0003_delivery
Revises: 0002_admin
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0003_delivery'
down_revision = '0002_admin'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivery_state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('delivery_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('delivery_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('delivery_next_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_interaction_delivery_state'), ['delivery_state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_interaction_delivery_state'))
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('delivery_next_at')
        batch_op.drop_column('delivery_error')
        batch_op.drop_column('delivery_attempts')
        batch_op.drop_column('delivery_state')
