"""HTML pieces the dashboard's sections share."""

from __future__ import annotations

from html import escape


def table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    """A table of already-escaped cells, or ``empty`` (escaped here) when there is no row."""
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
