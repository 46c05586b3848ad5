"""A statement that fails raises an error an operator can read — which statement, what went wrong — without the
values it carried: those are users' questions and answers, and the error is logged with its traceback (by the
worker, by arq, by bolt's error handler), where message text must never go."""

from __future__ import annotations

import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bot.core.types import Platform, Question
from feedback.db import Database
from feedback.interactions import InteractionStore

PRIVATE = "my manager said my salary of 123456 is confidential"


def printed(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


async def test_a_failed_write_names_the_statement_not_the_question(db: Database) -> None:
    with db.engine.begin() as connection:  # the table gone from under the process (a bad migration, a restore)
        connection.execute(text("ALTER TABLE interaction RENAME TO interaction_elsewhere"))
    question = Question(idempotency_key="slack:Ev1", platform=Platform.SLACK, channel="C1", user="U1", text=PRIVATE)

    with pytest.raises(OperationalError) as caught:
        await InteractionStore(db, user_salt="salt").record_pending(question)
    assert "no such table: interaction" in str(caught.value) and "INSERT INTO interaction" in str(caught.value)
    assert "123456" not in printed(caught.value)


def test_a_failed_read_does_not_print_its_values_either(db: Database) -> None:
    with pytest.raises(OperationalError) as caught, db.session() as session:
        session.execute(text("SELECT * FROM no_such_table WHERE question = :q"), {"q": PRIVATE})
    assert "123456" not in printed(caught.value)
