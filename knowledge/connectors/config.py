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

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from knowledge.connectors.schedule import Schedule

#: Keys that would put a credential's value into the file: refused with a pointer to *_env / *_file.
_SECRET_KEYS = {"token", "password", "secret", "api_key", "apikey", "api_token", "client_secret", "private_key"}


class SourcesConfigError(ValueError):
    """The sources file (or one source in it) is not usable; the message names the source and the key."""


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    knowledge_set: str | None = None
    visibility: Literal["public", "restricted"] = "public"
    schedule: str = "manual"
    #: The knowledge base (index) it feeds; None = DESKMATE_KB_NAME.
    kb: str | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        Schedule.parse(value)
        return value

    @property
    def parsed_schedule(self) -> Schedule:
        return Schedule.parse(self.schedule)

    def public_settings(self) -> dict[str, Any]:
        """The source's settings as shown to operators: credentials appear only as the variable or file that
        holds them."""
        return self.model_dump(mode="json", exclude_none=True)


class FolderSource(_Source):
    kind: Literal["folder"]
    path: Path
    #: Base URL that makes a document's path citable (else DESKMATE_DOC_BASE_URL, else the path).
    base_url: str | None = None


class GitSource(_Source):
    kind: Literal["git"]
    #: A clone URL (https://, ssh://, git@host:…) or a local path of a repository.
    repository: str
    #: Default: the repository's default branch (HEAD).
    branch: str | None = None
    #: Only this folder of the repository ("" = all of it).
    path: str = ""
    #: Where a document is read in its own system: ``web_url`` + its path below ``path``.
    web_url: str | None = None
    #: The environment variable, or file, holding an HTTPS token (sent as basic auth with ``username``).
    token_env: str | None = None
    token_file: Path | None = None
    username: str = "x-access-token"
    timeout_s: float = Field(300.0, gt=0)

    @field_validator("repository")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        if urlparse(value).password:
            raise ValueError("the URL holds a password or token: put it in token_env or token_file instead")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        value = value.strip("/")
        if ".." in value.split("/"):
            raise ValueError("must be a folder inside the repository")
        return value


class WebsiteSource(_Source):
    kind: Literal["website"]
    #: Exactly one of: a sitemap (``<urlset>`` or ``<sitemapindex>``), or a page to crawl from (links followed
    #: within its host and below its folder).
    sitemap: str | None = None
    start_url: str | None = None
    user_agent: str = "DeskmateBot/1.0"
    max_pages: int = Field(1000, ge=1)
    timeout_s: float = Field(30.0, gt=0)
    #: 429 / 503 are retried after their Retry-After up to this many times; a longer Retry-After fails the page.
    max_retries: int = Field(3, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0)
    #: A bearer token for a site behind a login (environment variable or file).
    token_env: str | None = None
    token_file: Path | None = None

    @field_validator("sitemap", "start_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("must be an http(s):// URL")
            if parsed.password:
                raise ValueError("the URL holds a password or token: put it in token_env or token_file instead")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> WebsiteSource:
        if (self.sitemap is None) == (self.start_url is None):
            raise ValueError("give exactly one of 'sitemap' and 'start_url'")
        return self


SourceConfig = Annotated[FolderSource | GitSource | WebsiteSource, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
KINDS = ("folder", "git", "website")


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


def read_secret(source: str, key: str, env_name: str | None, file: Path | None,
                environ: Mapping[str, str] | None = None) -> str | None:
    """The credential named by ``<key>_env`` or ``<key>_file`` (None when neither is set). Raises
    :class:`SourcesConfigError` naming the source and the key — never the value — when it is missing."""
    environ = os.environ if environ is None else environ
    if env_name:
        value = environ.get(env_name, "").strip()
        if not value:
            raise SourcesConfigError(f"source '{source}': {key}_env names {env_name}, which is not set")
        return value
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SourcesConfigError(f"source '{source}': {key}_file {file} cannot be read "
                                     f"({exc.strerror or exc.__class__.__name__})") from exc
        if not value:
            raise SourcesConfigError(f"source '{source}': {key}_file {file} is empty")
        return value
    return None
