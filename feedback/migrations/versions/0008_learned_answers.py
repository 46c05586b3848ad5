"""learned answers: escalations ("Ask a human" → a support thread) and the drafts and reviewed answers made of them

Revision ID: 0008_learned_answers
Revises: 0007_canary
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0008_learned_answers'
down_revision = '0007_canary'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'escalation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('interaction_id', sa.Integer(), nullable=False),
        sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('support_channel', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('support_thread', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('thread_url', sa.Text(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['interaction_id'], ['interaction.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_escalation_interaction_id'), ['interaction_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_escalation_support_thread'), ['support_thread'], unique=False)
        batch_op.create_index(batch_op.f('ix_escalation_created_at'), ['created_at'], unique=False)
    op.create_table(
        'learnedanswer',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('escalation_id', sa.Integer(), nullable=True),
        sa.Column('interaction_id', sa.Integer(), nullable=True),
        sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('kb', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('knowledge_set', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('public', sa.Boolean(), nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('answer', sa.Text(), nullable=False),
        sa.Column('answered_by', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('answered_by_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('answered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('thread_url', sa.Text(), nullable=True),
        sa.Column('origin', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('source_message', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('edited', sa.Boolean(), nullable=False),
        sa.Column('reviewed_by', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('reviewed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('approved_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('review_by', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('doc_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column('indexed_version', sa.Integer(), nullable=True),
        sa.Column('review_message', sa.JSON(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['escalation_id'], ['escalation.id']),
        sa.ForeignKeyConstraint(['interaction_id'], ['interaction.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('learnedanswer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_learnedanswer_escalation_id'), ['escalation_id'], unique=True)
        batch_op.create_index(batch_op.f('ix_learnedanswer_interaction_id'), ['interaction_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_learnedanswer_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_learnedanswer_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('learnedanswer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_learnedanswer_created_at'))
        batch_op.drop_index(batch_op.f('ix_learnedanswer_status'))
        batch_op.drop_index(batch_op.f('ix_learnedanswer_interaction_id'))
        batch_op.drop_index(batch_op.f('ix_learnedanswer_escalation_id'))
    op.drop_table('learnedanswer')
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_escalation_created_at'))
        batch_op.drop_index(batch_op.f('ix_escalation_support_thread'))
        batch_op.drop_index(batch_op.f('ix_escalation_interaction_id'))
    op.drop_table('escalation')
