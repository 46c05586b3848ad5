"""at most one running canary, held by the database: two admins starting a canary at the same instant both passed
the "is one running?" check before either was stored

Revision ID: 0009_one_running_canary
Revises: 0008_learned_answers
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0009_one_running_canary'
down_revision = '0008_learned_answers'
branch_labels = None
depends_on = None

RUNNING = sa.text("state = 'running'")


def upgrade() -> None:
    # a database that already holds two running canaries (the race this closes) keeps the newest running
    op.execute("UPDATE canary SET state = 'stopped', ended_by = 'migration 0009', "
               "decision = 'stopped: another canary was running at the same time' "
               "WHERE state = 'running' AND id < (SELECT MAX(id) FROM canary WHERE state = 'running')")
    op.create_index('uq_canary_one_running', 'canary', ['state'], unique=True, sqlite_where=RUNNING,
                    postgresql_where=RUNNING)


def downgrade() -> None:
    op.drop_index('uq_canary_one_running', table_name='canary')
