"""query rewrite: a release says how the search query is made; an interaction records the query searched

``release.query_rewrite`` (auto | llm | offline | off) and ``release.rewrite_model``; releases made before this
migration get ``off`` — a release is immutable, so it keeps searching the message as written, and rolling back
to it restores exactly that. Releases made from the settings afterwards (``initial`` on a new database, or
``release create --query-rewrite …``) carry the new behaviour. ``interaction.search_query``: NULL on older rows.

Revision ID: 0004_query_rewrite
Revises: 0003_delivery
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0004_query_rewrite'
down_revision = '0003_delivery'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('release', schema=None) as batch_op:
        batch_op.add_column(sa.Column('query_rewrite', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      server_default='off', nullable=False))
        batch_op.add_column(sa.Column('rewrite_model', sqlmodel.sql.sqltypes.AutoString(length=128),
                                      server_default='claude-haiku-4-5', nullable=False))
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_query', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.drop_column('search_query')
    with op.batch_alter_table('release', schema=None) as batch_op:
        batch_op.drop_column('rewrite_model')
        batch_op.drop_column('query_rewrite')
