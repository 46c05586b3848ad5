"""sync runs: one row per sync of a knowledge source (added, updated, unchanged, deleted, skipped, errors)

Revision ID: 0006_sync_runs
Revises: 0005_not_found_level
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0006_sync_runs'
down_revision = '0005_not_found_level'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'syncrun',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('kb', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('added', sa.Integer(), nullable=False),
        sa.Column('updated', sa.Integer(), nullable=False),
        sa.Column('unchanged', sa.Integer(), nullable=False),
        sa.Column('deleted', sa.Integer(), nullable=False),
        sa.Column('index_version', sa.Integer(), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.Column('skipped', sa.JSON(), nullable=False),
        sa.Column('errors', sa.JSON(), nullable=False),
        sa.Column('trigger', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('syncrun', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_syncrun_source'), ['source'], unique=False)
        batch_op.create_index(batch_op.f('ix_syncrun_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_syncrun_started_at'), ['started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('syncrun', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_syncrun_started_at'))
        batch_op.drop_index(batch_op.f('ix_syncrun_status'))
        batch_op.drop_index(batch_op.f('ix_syncrun_source'))
    op.drop_table('syncrun')
