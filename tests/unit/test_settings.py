"""Settings: defaults, ``LICHEN_`` environment, TOML config file, CLI overrides, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.config import DEFAULT_MODEL, DEFAULT_PORT, Settings, load_settings


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(lichen_data_dir: Path) -> None:
    s = load_settings()
    assert s.port == DEFAULT_PORT == 8470
    assert s.host == "127.0.0.1"
    assert s.model == DEFAULT_MODEL == "smollm2-135m"
    assert s.data_dir == lichen_data_dir  # from the hermetic LICHEN_DATA_DIR
    assert s.models_path == lichen_data_dir / "models"
    assert s.database == f"sqlite+aiosqlite:///{lichen_data_dir / 'lichen.db'}"
    assert s.max_request_bytes == 1_048_576


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LICHEN_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings().data_dir == tmp_path / "xdg" / "lichen"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings().data_dir == tmp_path / "home" / ".local" / "share" / "lichen"


def test_environment_with_lichen_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LICHEN_PORT", "9001")
    monkeypatch.setenv("LICHEN_HOST", "0.0.0.0")
    monkeypatch.setenv("LICHEN_THREADS", "1")
    monkeypatch.setenv("LICHEN_BATCH_THREADS", "1")
    monkeypatch.setenv("LICHEN_PARALLEL", "3")
    monkeypatch.setenv("LICHEN_MODELS_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("LICHEN_REQUEST_TIMEOUT_S", "2.5")
    monkeypatch.setenv("PORT", "1234")  # unprefixed variables are not ours
    s = load_settings()
    assert (s.port, s.host, s.parallel, s.request_timeout_s) == (9001, "0.0.0.0", 3, 2.5)
    assert s.resolved_threads() == (1, 1)
    assert s.models_path == tmp_path / "shared"


def test_threads_zero_means_all_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = os.cpu_count() or 1
    assert load_settings().resolved_threads() == (cores, cores)
    assert load_settings(threads=1).resolved_threads() == (1, 1)
    assert load_settings(threads=1, batch_threads=2).resolved_threads() == (1, 2)


def test_data_dir_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings(data_dir=Path("~/lichen")).data_dir == tmp_path / "lichen"


def test_config_file_from_lichen_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _write(
        tmp_path / "elsewhere" / "lichen.toml",
        'port = 9100\nmodel = "some-model"\nparallel = 2\nlog_level = "DEBUG"\n',
    )
    monkeypatch.setenv("LICHEN_CONFIG", str(config))
    s = load_settings()
    assert (s.port, s.model, s.parallel, s.log_level) == (9100, "some-model", 2, "DEBUG")


def test_config_file_in_the_data_dir_is_found(lichen_data_dir: Path) -> None:
    _write(lichen_data_dir / "config.toml", "port = 9200\n")
    assert load_settings().port == 9200


def test_precedence_cli_over_env_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "port = 9100\nparallel = 2\nthreads = 3\n")
    monkeypatch.setenv("LICHEN_CONFIG", str(config))
    monkeypatch.setenv("LICHEN_PORT", "9300")
    monkeypatch.setenv("LICHEN_PARALLEL", "5")
    s = load_settings(port=9400, parallel=None)  # None means "flag not given"
    assert s.port == 9400  # CLI wins
    assert s.parallel == 5  # env beats the file
    assert s.threads == 3  # the file beats the default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LICHEN_PORT", "70000"),
        ("LICHEN_PORT", "-1"),
        ("LICHEN_PORT", "eighty"),
        ("LICHEN_PARALLEL", "0"),
        ("LICHEN_PARALLEL", "65"),
        ("LICHEN_THREADS", "-2"),
        ("LICHEN_CTX_SIZE", "10"),
        ("LICHEN_MAX_REQUEST_BYTES", "100"),
        ("LICHEN_REQUEST_TIMEOUT_S", "0"),
    ],
)
def test_invalid_environment_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    field = name.removeprefix("LICHEN_").lower()
    assert field in str(info.value)


def test_invalid_config_file_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LICHEN_CONFIG", str(_write(tmp_path / "c.toml", 'parallel = "many"\n')))
    with pytest.raises(ValidationError, match="parallel"):
        load_settings()


def test_invalid_cli_overrides_are_rejected() -> None:
    with pytest.raises(ValidationError, match="port"):
        load_settings(port=65536)


def test_every_setting_is_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name!r} has no description"


def test_up_refuses_an_invalid_flag_before_starting_anything(lichen_data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--port", "70000"])
    assert result.exit_code == 2, result.output
    assert "port" in result.output
    assert not lichen_data_dir.exists()  # nothing created, no model pulled


def test_up_refuses_an_invalid_environment_value(
    monkeypatch: pytest.MonkeyPatch, lichen_data_dir: Path
) -> None:
    monkeypatch.setenv("LICHEN_PARALLEL", "0")
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code == 2, result.output
    assert not lichen_data_dir.exists()


@pytest.mark.parametrize("command", [[], ["up"], ["models"], ["models", "pull"], ["version"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
