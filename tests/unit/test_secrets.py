"""The secret store: encrypted at rest, bound to names and to the device key, mode 0600."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.errors import ErrorCode, LichenError
from lichen.identity.secrets import SECRETS_FILE, SecretStore, derive_key
from lichen.identity.signing import generate_key

VALUE = "sk-live-0123456789abcdef"


def test_round_trip_and_encryption_at_rest(tmp_path: Path) -> None:
    store = SecretStore.for_data_dir(tmp_path)
    store.set("openai", VALUE)
    store.set("other", "x")
    assert store.get("openai") == VALUE
    assert store.names() == ["openai", "other"]
    assert "openai" in store
    raw = (tmp_path / SECRETS_FILE).read_bytes()
    assert VALUE.encode() not in raw
    assert stat.S_IMODE((tmp_path / SECRETS_FILE).stat().st_mode) == 0o600
    assert VALUE not in repr(store)
    # a fresh store on the same data dir (same device key) reads it back
    assert SecretStore.for_data_dir(tmp_path).get("openai") == VALUE
    assert store.remove("openai") and not store.remove("openai")
    assert store.names() == ["other"]


def test_another_device_key_cannot_decrypt(tmp_path: Path) -> None:
    SecretStore.for_data_dir(tmp_path).set("k", VALUE)
    stranger = SecretStore(tmp_path / SECRETS_FILE, derive_key(generate_key()))
    with pytest.raises(LichenError) as info:
        stranger.get("k")
    assert VALUE not in info.value.message


def test_a_ciphertext_moved_to_another_name_does_not_decrypt(tmp_path: Path) -> None:
    store = SecretStore.for_data_dir(tmp_path)
    store.set("a", VALUE)
    path = tmp_path / SECRETS_FILE
    doc = json.loads(path.read_text())
    doc["secrets"]["b"] = doc["secrets"]["a"]
    path.write_text(json.dumps(doc))
    with pytest.raises(LichenError):
        store.get("b")


@pytest.mark.parametrize("name", ["", "a b", "../x", "x" * 65, "-lead"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(LichenError) as info:
        SecretStore.for_data_dir(tmp_path).set(name, VALUE)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_missing_secret(tmp_path: Path) -> None:
    with pytest.raises(LichenError) as info:
        SecretStore.for_data_dir(tmp_path).get("nope")
    assert info.value.code is ErrorCode.NOT_FOUND


def test_cli_set_from_stdin_list_rm_never_prints_values(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["secret"]
    dd = ["--data-dir", str(tmp_path)]
    r = runner.invoke(app, [*base, "set", "upstream", *dd], input=VALUE + "\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "set", "second", "--value", "v2", *dd])
    assert r.exit_code == 0, r.output
    listed = runner.invoke(app, [*base, "list", *dd])
    assert listed.exit_code == 0
    assert listed.stdout.split() == ["second", "upstream"]
    assert SecretStore.for_data_dir(tmp_path).get("upstream") == VALUE  # newline stripped
    r = runner.invoke(app, [*base, "rm", "upstream", *dd])
    assert r.exit_code == 0
    r = runner.invoke(app, [*base, "rm", "upstream", *dd])
    assert r.exit_code == 1
    for output in (listed.output, r.output):
        assert VALUE not in output
