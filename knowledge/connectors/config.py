"""The sources file: which sources feed which knowledge base, validated with clear errors.

``DESKMATE_SOURCES_FILE`` (default ``sources.yaml``) holds a list of sources (or a mapping with a ``sources:``
list)::

    - name: handbook            # [a-z0-9_-], unique; prefixes the ids of its documents (handbook/travel/per-diem)
      kind: folder
      path: /srv/handbook
      knowledge_set: hr         # optional; default: the document's first folder (or its front matter)
      visibility: public        # public | restricted (a restricted document stays restricted either way)
      schedule: every 30m       # manual | every <n>m|h|d | @hourly | @daily | a five-field cron expression (UTC)
    - name: eng-docs
      kind: git
      repository: https://github.com/acme/handbook.git
      branch: main
      path: docs                # only this folder of the repository
      web_url: https://github.com/acme/handbook/blob/main/docs
      token_env: HANDBOOK_GIT_TOKEN

Credentials are never written in this file: a source names an environment variable (``token_env``) or a file
(``token_file``) that holds them, and they are read only when the source is synced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from knowledge.connectors.base import BaseSource, SourcesConfigError, read_secret
from knowledge.connectors.confluence import ConfluenceSource
from knowledge.connectors.folder import FolderSource
from knowledge.connectors.git import GitSource
from knowledge.connectors.google_drive import GoogleDriveSource
from knowledge.connectors.notion import NotionSource
from knowledge.connectors.sharepoint import SharePointSource
from knowledge.connectors.website import WebsiteSource

__all__ = ["KINDS", "BaseSource", "FolderSource", "GitSource", "SourceConfig", "SourcesConfigError",
           "WebsiteSource", "load_sources", "parse_sources", "read_secret"]

#: Keys that would put a credential's value into the file: refused with a pointer to *_env / *_file.
_SECRET_KEYS = {"token", "password", "secret", "api_key", "apikey", "api_token", "client_secret", "private_key"}

#: Every kind of source: one module of this package each (its settings class and its connector).
SourceConfig = Annotated[
    FolderSource
    | GitSource
    | WebsiteSource
    | ConfluenceSource
    | GoogleDriveSource
    | NotionSource
    | SharePointSource,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
KINDS: tuple[str, ...] = tuple(get_args(cls.model_fields["kind"].annotation)[0]
                               for cls in get_args(get_args(SourceConfig)[0]))


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()) if not str(p).endswith("Source") and p not in KINDS)
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        message = "is not a setting of this kind of source"
    elif error.get("type") == "union_tag_invalid":
        message = f"unknown kind; one of: {', '.join(KINDS)}"
    elif error.get("type") == "union_tag_not_found":
        return f"key 'kind' is missing (one of: {', '.join(KINDS)})"
    return f"key '{loc}' {message}" if loc else message


def parse_sources(data: Any, *, origin: str = "sources file") -> list[SourceConfig]:
    """Validate the loaded YAML. Raises :class:`SourcesConfigError` listing every problem, each naming the
    source (by name, else by position) and the key."""
    if isinstance(data, dict) and set(data) == {"sources"}:
        data = data["sources"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise SourcesConfigError(f"{origin}: expected a list of sources")
    sources: list[SourceConfig] = []
    problems: list[str] = []
    names: set[str] = set()
    for number, item in enumerate(data, start=1):
        label = f"source #{number}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label = f"source '{item['name']}'"
        if not isinstance(item, dict):
            problems.append(f"{label}: expected a mapping of settings")
            continue
        secret_keys = sorted(k for k in item if str(k).lower() in _SECRET_KEYS)
        if secret_keys:
            problems.extend(f"{label}: key '{k}' would put a credential in the file; name an environment variable "
                            f"({k}_env) or a file ({k}_file) instead" for k in secret_keys)
            continue
        try:
            source = _ADAPTER.validate_python(item)
        except ValidationError as exc:
            problems.extend(f"{label}: {_describe(e)}" for e in exc.errors())
            continue
        if source.name in names:
            problems.append(f"{label}: the name is used twice")
            continue
        names.add(source.name)
        sources.append(source)
    if problems:
        raise SourcesConfigError(f"{origin}: " + "; ".join(problems))
    return sources


def load_sources(path: Path) -> list[SourceConfig]:
    """The sources declared in ``path``; an absent file declares none. Relative folder paths are read from the
    file's folder."""
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SourcesConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    sources = parse_sources(data, origin=str(path))
    base = path.resolve().parent
    return [s.model_copy(update={"path": base / s.path}) if isinstance(s, FolderSource) and not s.path.is_absolute()
            else s for s in sources]
