"""calibrated "not found": a release says how relevant the best passage must be, as a calibrated level

``release.not_found_level`` (0–1: the share of unrelated questions the best passage must be closer than;
:mod:`knowledge.calibration`). NULL on releases made before this migration: a release is immutable, so it keeps
deciding on the raw cosine ``min_score``, and rolling back to it restores exactly that. Releases made from the
settings afterwards carry ``DESKMATE_RETRIEVAL_NOT_FOUND_LEVEL``.

Revision ID: 0005_not_found_level
Revises: 0004_query_rewrite
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005_not_found_level'
down_revision = '0004_query_rewrite'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('release', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_found_level', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('release', schema=None) as batch_op:
        batch_op.drop_column('not_found_level')
