"""Print (or --write into README.md) the configuration table generated from bot.core.settings.Settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def default_text(field: object) -> str:
    default = getattr(field, "default", None)
    factory = getattr(field, "default_factory", None)
    if factory is not None:
        default = factory()
    if default is PydanticUndefined or default is None:
        return ""
    if default == SAMPLE_KNOWLEDGE_DIR:
        return "the bundled sample (`knowledge/sample`)"
    if isinstance(default, dict) and default and hasattr(next(iter(default.values())), "model_dump"):
        return "built-in price table (see `bot/core/settings.py`)"
    if isinstance(default, (list, dict)):
        return f"`{json.dumps(default)}`" if default else "empty"
    text = str(default)
    return f"`{text}`" if text else '""'


def table() -> str:
    rows = ["| Variable | Default | What it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `DESKMATE_{name.upper()}` | {default_text(field)} | {desc} |")
    return "\n".join(rows)


def main() -> None:
    text = table()
    if "--write" in sys.argv:
        readme = README.read_text()
        before, rest = readme.split(START, 1)
        _, after = rest.split(END, 1)
        README.write_text(f"{before}{START}\n{text}\n{END}{after}")
    else:
        print(text)


if __name__ == "__main__":
    main()
