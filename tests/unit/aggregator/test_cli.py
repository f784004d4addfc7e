"""``fedmedclip aggregator`` commands."""

from __future__ import annotations

from typer.testing import CliRunner

from services.aggregator.cli import app
from services.aggregator.db.migrate import current_revision, head_revision
from services.common.db import Database


def test_help_lists_serve_and_migrate() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output and "migrate" in result.output


def test_migrate_brings_the_embedded_database_to_head(tmp_path) -> None:
    env = {"FEDMEDCLIP_AGG_DATA_DIR": str(tmp_path), "FEDMEDCLIP_AGG_DATABASE_URL": ""}
    result = CliRunner().invoke(app, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert f"empty -> {head_revision()}" in result.output
    db = Database.connect(f"sqlite:///{tmp_path / 'aggregator.db'}")
    try:
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()
    again = CliRunner().invoke(app, ["migrate"], env=env)
    assert f"{head_revision()} -> {head_revision()}" in again.output


def test_serve_with_bad_certificate_files_explains_itself(tmp_path) -> None:
    """A missing or unusable certificate stops the start with one line, not a traceback."""
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate")
    env = {"FEDMEDCLIP_AGG_DATA_DIR": str(tmp_path), "FEDMEDCLIP_AGG_ADMIN_TOKEN": "a"}
    cases = [
        (
            ["--ssl-certfile", str(tmp_path / "missing.pem"), "--ssl-keyfile", str(garbage)],
            "not found",
        ),
        (["--ssl-certfile", str(garbage), "--ssl-keyfile", str(garbage)], "cannot use the TLS"),
        (["--ssl-certfile", str(garbage)], "both a certificate file and a key file"),
    ]
    for options, message in cases:
        result = CliRunner().invoke(app, ["serve", "--port", "1", *options], env=env)
        assert result.exit_code == 2, result.output
        assert "cannot start:" in result.output and message in result.output
        assert "Traceback" not in result.output
