"""canary releases: the canary table, shadow answers, and each question's canary and arm

Revision ID: 0007_canary
Revises: 0006_sync_runs
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0007_canary'
down_revision = '0006_sync_runs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'canary',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('candidate', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('baseline', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('share', sa.Float(), nullable=False),
        sa.Column('excluded', sa.JSON(), nullable=False),
        sa.Column('min_answers', sa.Integer(), nullable=False),
        sa.Column('max_hours', sa.Float(), nullable=False),
        sa.Column('alpha', sa.Float(), nullable=False),
        sa.Column('margins', sa.JSON(), nullable=False),
        sa.Column('shadow_budget_usd', sa.Float(), nullable=False),
        sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('started_by', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('ended_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('ended_by', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('decision', sa.Text(), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('canary', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_canary_candidate'), ['candidate'], unique=False)
        batch_op.create_index(batch_op.f('ix_canary_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_canary_started_at'), ['started_at'], unique=False)
    op.create_table(
        'shadowanswer',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('canary_id', sa.Integer(), nullable=False),
        sa.Column('interaction_id', sa.Integer(), nullable=False),
        sa.Column('release', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('answer', sa.Text(), nullable=False),
        sa.Column('cited_doc_ids', sa.JSON(), nullable=False),
        sa.Column('fallback', sa.Boolean(), nullable=False),
        sa.Column('latency_ms', sa.Float(), nullable=False),
        sa.Column('cost_usd', sa.Float(), nullable=False),
        sa.Column('citation_precision', sa.Float(), nullable=True),
        sa.Column('overlap', sa.Float(), nullable=True),
        sa.Column('judge', sa.Float(), nullable=True),
        sa.Column('judge_reason', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('shadowanswer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shadowanswer_canary_id'), ['canary_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_shadowanswer_interaction_id'), ['interaction_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_shadowanswer_at'), ['at'], unique=False)
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('canary_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('arm', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_interaction_canary_id'), ['canary_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_interaction_canary_id'))
        batch_op.drop_column('arm')
        batch_op.drop_column('canary_id')
    with op.batch_alter_table('shadowanswer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shadowanswer_at'))
        batch_op.drop_index(batch_op.f('ix_shadowanswer_interaction_id'))
        batch_op.drop_index(batch_op.f('ix_shadowanswer_canary_id'))
    op.drop_table('shadowanswer')
    with op.batch_alter_table('canary', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_canary_started_at'))
        batch_op.drop_index(batch_op.f('ix_canary_state'))
        batch_op.drop_index(batch_op.f('ix_canary_candidate'))
    op.drop_table('canary')
