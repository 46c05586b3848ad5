"""The ``git`` kind: a repository of Markdown (or any supported format), local or remote, through the ``git``
command line.

The repository is kept as a bare clone in the source's work folder; a sync fetches, and the cursor is the
commit last synced: the documents that changed since are ``git diff-tree`` between it and the new head (blob ids
are the versions), so a re-sync with no new commit reads nothing. A cursor git no longer knows (a force-push
rewrote history) falls back to listing the whole tree. An HTTPS token (``token_env`` / ``token_file``) reaches
git as an ``http.extraHeader`` through the environment, never on the command line or in a log.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator

from bot.core.log import get_logger
from knowledge.connectors.base import (
    BaseSource,
    Changes,
    Connector,
    DocumentRef,
    FetchError,
    SourceError,
    read_secret,
)
from knowledge.sources import SUPPORTED_SUFFIXES

log = get_logger(__name__)


class GitSource(BaseSource):
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

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        token = read_secret(self.name, "token", self.token_env, self.token_file, environ)
        return GitConnector(self, work_dir, token=token, max_bytes=max_bytes)


class GitConnector:
    def __init__(self, source: GitSource, work_dir: Path, *, token: str | None = None,
                 max_bytes: int = 5_000_000) -> None:
        self.source = source
        self.repo_dir = work_dir / "repo.git"
        self.max_bytes = max_bytes
        self._env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
        if token:
            basic = base64.b64encode(f"{source.username}:{token}".encode()).decode()
            self._env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                              "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        self._commit: str | None = None

    @property
    def local_root(self) -> Path | None:
        return None

    def _git(self, *args: str, cwd: Path | None = None) -> bytes:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, env=self._env, capture_output=True,
                                  timeout=self.source.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SourceError(f"git {args[0]} took longer than {self.source.timeout_s:g} s") from exc
        except OSError as exc:
            raise SourceError(f"git cannot be run ({exc.strerror or exc})") from exc
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SourceError(f"git {args[0]} failed: {detail[-1] if detail else f'exit {done.returncode}'}")
        return done.stdout

    def _update(self) -> str:
        if not (self.repo_dir / "HEAD").is_file():
            self.repo_dir.parent.mkdir(parents=True, exist_ok=True)
            self._git("clone", "--bare", "--quiet", "--", self.source.repository, str(self.repo_dir))
        else:
            self._git("fetch", "--quiet", "--prune", "--force", "origin", "+refs/heads/*:refs/heads/*",
                      cwd=self.repo_dir)
        ref = self.source.branch or "HEAD"
        return self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=self.repo_dir).decode().strip()

    def _inside(self, full_path: str) -> str | None:
        """The path below the source's folder of a readable file, or None."""
        prefix = self.source.path
        if prefix and not full_path.startswith(prefix + "/"):
            return None
        rel = full_path[len(prefix) + 1:] if prefix else full_path
        parts = PurePosixPath(rel).parts
        if any(p.startswith(".") for p in parts) or PurePosixPath(rel).suffix.lower() not in SUPPORTED_SUFFIXES:
            return None
        return rel

    def _ref(self, rel: str, blob: str) -> DocumentRef:
        location = f"{self.source.web_url.rstrip('/')}/{rel}" if self.source.web_url else None
        return DocumentRef(rel, blob, location)

    def changes(self, cursor: str | None) -> Changes:
        head = self._update()
        self._commit = head
        if cursor == head:
            return Changes(changed=[], deleted=[], cursor=head)
        known = cursor is not None and self._known(cursor)
        if not known:
            return self._full_listing(head)
        raw = self._git("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", cursor or "", head,
                        cwd=self.repo_dir)
        fields = raw.decode("utf-8", "surrogateescape").split("\0")
        changed: list[DocumentRef] = []
        deleted: list[str] = []
        for meta, path in zip(fields[0::2], fields[1::2]):
            # ":100644 100644 <old blob> <new blob> M"
            parts = meta.lstrip(":").split()
            if len(parts) < 5:
                continue
            rel = self._inside(path)
            if rel is None:
                continue
            if parts[4] == "D":
                deleted.append(rel)
            elif parts[1].startswith("100"):  # a regular file (not a submodule or symlink)
                changed.append(self._ref(rel, parts[3]))
        return Changes(changed=changed, deleted=deleted, cursor=head)

    def _known(self, commit: str) -> bool:
        try:
            self._git("cat-file", "-e", f"{commit}^{{commit}}", cwd=self.repo_dir)
        except SourceError:
            log.info("source.git.cursor_unknown", source=self.source.name)
            return False
        return True

    def _full_listing(self, head: str) -> Changes:
        args = ["ls-tree", "-r", "-z", "--full-tree", "-l", head]
        if self.source.path:
            args += ["--", self.source.path]
        refs: list[DocumentRef] = []
        skipped: dict[str, str] = {}
        for entry in self._git(*args, cwd=self.repo_dir).decode("utf-8", "surrogateescape").split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, kind, blob, size = meta.split()
            rel = self._inside(path)
            if rel is None or kind != "blob" or not mode.startswith("100"):
                continue
            if size.isdigit() and int(size) > self.max_bytes:
                skipped[rel] = f"too large ({int(size):,} bytes > limit {self.max_bytes:,})"
                continue
            refs.append(self._ref(rel, blob))
        return Changes(changed=refs, deleted=[], cursor=head, complete=True, skipped=skipped)

    def fetch(self, ref: DocumentRef) -> bytes:
        try:
            return self._git("cat-file", "blob", ref.version, cwd=self.repo_dir)
        except SourceError as exc:
            raise FetchError(str(exc)) from exc
