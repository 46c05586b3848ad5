"""``deskmate teams package``: the Teams app package (a zip to upload in Teams or the Teams admin center).

The zip holds, at its root, ``manifest.json`` — ``appPackage/manifest.json`` with its ``{{PLACEHOLDERS}}`` filled
in (bot app id, name, version, developer links) — and the two icons Teams requires, drawn by
:mod:`bot.teams.icons`: ``color.png`` (192×192) and ``outline.png`` (32×32, white on transparent).
"""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from bot.core.settings import get_settings
from bot.teams.icons import color_icon, outline_icon

APP_PACKAGE_DIR = Path(__file__).resolve().parent / "appPackage"
MANIFEST_TEMPLATE = APP_PACKAGE_DIR / "manifest.json"
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
VERSION_FORMAT = re.compile(r"^\d+\.\d+\.\d+$")
EXAMPLE_URL = "https://example.com/deskmate"
DEFAULT_OUTPUT = Path("dist/deskmate-teams.zip")

err = Console(stderr=True)


class PackageError(ValueError):
    pass


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise PackageError(f"manifest placeholder {{{{{match.group(1)}}}}} has no value")
            return values[match.group(1)]

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def _guid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise PackageError(f"{what} must be a GUID like 00000000-0000-0000-0000-000000000000, not {value!r}") from exc


def default_version() -> str:
    try:
        version = metadata.version("deskmate")
    except metadata.PackageNotFoundError:
        return "1.0.0"
    return version if VERSION_FORMAT.match(version) else "1.0.0"


def render_manifest(*, bot_id: str, teams_app_id: str | None = None, app_name: str = "Deskmate",
                    version: str | None = None, developer_name: str = "Deskmate", website_url: str = EXAMPLE_URL,
                    privacy_url: str = EXAMPLE_URL + "/privacy",
                    terms_url: str = EXAMPLE_URL + "/terms") -> dict[str, Any]:
    version = version or default_version()
    if not VERSION_FORMAT.match(version):
        raise PackageError(f"version must look like 1.0.0, not {version!r}")
    if not 0 < len(app_name) <= 30:
        raise PackageError("the app name must be 1–30 characters (Teams' limit for a short name)")
    for url in (website_url, privacy_url, terms_url):
        if not url.startswith("https://"):
            raise PackageError(f"Teams requires https URLs in the manifest, not {url!r}")
    bot_id = _guid(bot_id, "the bot app id")
    values = {"BOT_ID": bot_id, "TEAMS_APP_ID": _guid(teams_app_id, "the Teams app id") if teams_app_id else bot_id,
              "APP_NAME": app_name, "VERSION": version, "DEVELOPER_NAME": developer_name,
              "WEBSITE_URL": website_url, "PRIVACY_URL": privacy_url, "TERMS_URL": terms_url}
    return _fill(json.loads(MANIFEST_TEMPLATE.read_text(encoding="utf-8")), values)


def build_package(output: Path, **manifest_values: Any) -> Path:
    """Write the app package zip to ``output``; returns its path."""
    manifest = render_manifest(**manifest_values)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        archive.writestr(manifest["icons"]["color"], color_icon(192))
        archive.writestr(manifest["icons"]["outline"], outline_icon(32))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    return output


app = typer.Typer(help="Microsoft Teams: the app package.", no_args_is_help=True)


@app.command("package")
def package_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the zip.")] = DEFAULT_OUTPUT,
    app_id: Annotated[Optional[str], typer.Option(help="The Azure bot's app id (default: DESKMATE_TEAMS_APP_ID).")
                      ] = None,
    teams_app_id: Annotated[Optional[str], typer.Option(help="The Teams app's own id (default: the bot app id).")
                            ] = None,
    name: Annotated[Optional[str], typer.Option(help="Name shown in Teams (default: DESKMATE_TEAMS_APP_NAME).")] = None,
    version: Annotated[Optional[str], typer.Option(help="App version, e.g. 1.0.1 — raise it for every upload.")] = None,
    developer_name: Annotated[str, typer.Option(envvar="DESKMATE_TEAMS_DEVELOPER_NAME")] = "Deskmate",
    website_url: Annotated[str, typer.Option(envvar="DESKMATE_TEAMS_WEBSITE_URL")] = EXAMPLE_URL,
    privacy_url: Annotated[str, typer.Option(envvar="DESKMATE_TEAMS_PRIVACY_URL")] = EXAMPLE_URL + "/privacy",
    terms_url: Annotated[str, typer.Option(envvar="DESKMATE_TEAMS_TERMS_URL")] = EXAMPLE_URL + "/terms",
) -> None:
    """Build the Teams app zip (manifest + icons) to upload in Teams or the Teams admin center."""
    settings = get_settings()
    bot_id = app_id or settings.teams_app_id
    if not bot_id:
        err.print("[red]No bot app id:[/red] pass --app-id or set DESKMATE_TEAMS_APP_ID (Azure Bot → Configuration).")
        raise typer.Exit(2)
    try:
        path = build_package(output, bot_id=bot_id, teams_app_id=teams_app_id, app_name=name or settings.teams_app_name,
                             version=version, developer_name=developer_name, website_url=website_url,
                             privacy_url=privacy_url, terms_url=terms_url)
    except PackageError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if EXAMPLE_URL in (website_url, privacy_url, terms_url):
        err.print("[yellow]Using placeholder developer links; set --website-url, --privacy-url and --terms-url "
                  "(or DESKMATE_TEAMS_*_URL) to your own pages.[/yellow]")
    typer.echo(f"Wrote {path} — upload it in the Teams admin center (Teams apps → Manage apps → Upload new app) "
               "or in Teams (Apps → Manage your apps → Upload an app).")
