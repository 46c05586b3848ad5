"""``deskmate teams package``: manifest with the app id filled in, and the two icons Teams requires."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.teams.icons import png_size
from bot.teams.package import PackageError, build_package

APP_ID = "6c2a3d6e-1b64-4c55-a0a5-3f9a1f0e2b77"


def test_package_has_manifest_and_icons(tmp_path: Path) -> None:
    path = build_package(tmp_path / "app.zip", bot_id=APP_ID, version="1.2.3", app_name="Helpdesk")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        assert png_size(archive.read("color.png")) == (192, 192)
        assert png_size(archive.read("outline.png")) == (32, 32)
    assert manifest["id"] == APP_ID and manifest["bots"][0]["botId"] == APP_ID
    assert manifest["version"] == "1.2.3" and manifest["name"]["short"] == "Helpdesk"
    assert set(manifest["bots"][0]["scopes"]) == {"personal", "team", "groupChat"}
    assert "{{" not in json.dumps(manifest)


def test_package_refuses_bad_values(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="GUID"):
        build_package(tmp_path / "a.zip", bot_id="not-a-guid")
    with pytest.raises(PackageError, match="version"):
        build_package(tmp_path / "a.zip", bot_id=APP_ID, version="1.0")
    with pytest.raises(PackageError, match="https"):
        build_package(tmp_path / "a.zip", bot_id=APP_ID, website_url="http://insecure.example.com")


def test_cli_builds_the_zip_from_the_configured_app_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.cli
    from bot.cli import app
    from bot.core.settings import get_settings

    # the CLI's callback would point logging at CliRunner's stream, which is closed afterwards
    monkeypatch.setattr(bot.cli, "configure_logging", lambda _settings: None)

    monkeypatch.setenv("DESKMATE_TEAMS_APP_ID", APP_ID)
    get_settings.cache_clear()
    try:
        out = tmp_path / "dist" / "deskmate.zip"
        result = CliRunner().invoke(app, ["teams", "package", "--output", str(out)])
        assert result.exit_code == 0, result.output
        with zipfile.ZipFile(out) as archive:
            assert json.loads(archive.read("manifest.json"))["bots"][0]["botId"] == APP_ID
        monkeypatch.delenv("DESKMATE_TEAMS_APP_ID")
        get_settings.cache_clear()
        missing = CliRunner().invoke(app, ["teams", "package", "--output", str(out)])
        assert missing.exit_code == 2 and "DESKMATE_TEAMS_APP_ID" in missing.output
    finally:
        get_settings.cache_clear()
