"""The policy model, its presets, their plain-language rendering and the signature."""

from __future__ import annotations

import base64

import msgspec
import pytest
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.privacy.policy import (
    DataClass,
    load_policy,
    load_preset,
    parse_duration,
    parse_policy,
    preset_names,
    preset_text,
)
from lichen.privacy.signing import SignedPolicy, sign_policy, verify_policy, verify_public_json
from lichen.privacy.summary import PrivacyPolicyView, policy_text

PRESETS = ["dataset", "hosted", "open", "private", "screened"]


def test_every_preset_exists_and_parses() -> None:
    assert preset_names() == PRESETS
    for name in PRESETS:
        policy = load_preset(name)
        assert policy.name == name
        assert set(policy.data) == set(DataClass)


def test_private_stores_no_content_and_only_metadata() -> None:
    policy = load_preset("private")
    assert not policy.stores(DataClass.PROMPT)
    assert not policy.stores(DataClass.COMPLETION)
    assert not policy.stores(DataClass.CLIENT_IP)
    assert policy.stores(DataClass.REQUEST_METADATA, "gateway")
    assert policy.prompt_logging == "metadata"
    assert policy.public_feed == "off"
    assert policy.telemetry.opt_in
    assert policy.disclosure_header is None


def test_presets_differ_as_the_issue_describes() -> None:
    hosted, screened = load_preset("hosted"), load_preset("screened")
    opened, dataset = load_preset("open"), load_preset("dataset")
    assert hosted.retention_s("request_metadata") == 90 * 86_400
    assert "owner" in hosted.rule("request_metadata").visible_to
    assert screened.pseudonymize.enabled and screened.screening.input
    assert screened.screening.output and screened.screening.categories
    assert opened.public_feed == "opt_in" and "public" in opened.rule("prompt").visible_to
    assert dataset.prompt_logging == "full" and dataset.disclose
    assert dataset.disclosure_header == "dataset; prompts-logged=full; public-feed=off"
    assert dataset.allowed_trust("private-net-only") == {"owner", "trusted"}


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("24h") == 86_400
    assert parse_duration("30d") == 2_592_000
    assert parse_duration("2w") == 1_209_600
    assert parse_duration(42) == 42
    for bad in ("soon", "-3d", "3y"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('prompt_logging = "metadata"', 'prompt_logging = "full"'), "stored = true"),
        (
            ("[data.prompt]\nstored = false", '[data.prompt]\nstored = true\nwhere = ["gateway"]'),
            "gives a reason",
        ),
        (('retention = "30d"', 'retention = "soon"'), "not a duration"),
        (('name = "private"', 'name = "Has Spaces"'), "name"),
        (('default_privacy_class = "standard"', 'default_privacy_class = "vip"'), "undefined"),
        (('counters = ["requests"', 'counters = ["prompts", "requests"'), "unknown telemetry"),
        (("[data.telemetry]", "[data.bogus]\nstored = false\n\n[data.telemetry]"), "bogus"),
    ],
)
def test_incoherent_policies_are_refused(change: tuple[str, str], problem: str) -> None:
    text = preset_text("private")
    assert change[0] in text
    with pytest.raises(LichenError) as caught:
        parse_policy(text.replace(change[0], change[1], 1))
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert problem in caught.value.message


def test_missing_policy_file_means_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert load_policy(tmp_path).name == "private"
    (tmp_path / "policy.toml").write_text(preset_text("open"))
    assert load_policy(tmp_path).name == "open"


def test_signature_verifies_and_detects_tampering() -> None:
    key = generate_key()
    document = preset_text("open").encode()
    signed = sign_policy(key, document)
    policy, again = verify_policy(signed.encode(), public_raw(key))
    assert policy.name == "open" and again.digest == signed.digest

    tampered = SignedPolicy(
        document.replace(b"opt_in", b"default_on"), signed.signature, signed.network_key
    )
    with pytest.raises(LichenError) as caught:
        verify_policy(tampered.encode(), public_raw(key))
    assert caught.value.code is ErrorCode.HANDSHAKE_FAILED
    with pytest.raises(LichenError):
        verify_policy(signed.encode(), public_raw(generate_key()))  # another network
    with pytest.raises(LichenError):
        verify_policy(b"\x93garbage", public_raw(key))

    body = signed.public_json(policy)
    assert base64.b64decode(body["network_key"]) == public_raw(key)
    assert verify_public_json(body).name == "open"
    assert msgspec.json.decode(msgspec.json.encode(body))["document"] == document.decode()


def test_plain_language_comes_from_the_policy() -> None:
    private = policy_text(load_preset("private"))
    assert "What you send (prompts): never stored." in private
    assert "kept for 30 days" in private
    dataset = policy_text(load_preset("dataset"))
    assert "recorded in full" in dataset and "365 days" in dataset
    view = PrivacyPolicyView(load_preset("open"), preset_text("open"))
    assert view.has_public_feed()
    assert {c.value for c in view.classes()} == {"standard", "private-net-only"}
    document = view.document()
    assert document is not None and document.source.startswith("# Lichen network policy")


def test_policy_cli_init_show_validate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    data = str(tmp_path / "data")
    result = runner.invoke(app, ["policy", "init", "--preset", "dataset", "--data-dir", data])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "policy.toml").read_text() == preset_text("dataset")
    again = runner.invoke(app, ["policy", "init", "--preset", "open", "--data-dir", data])
    assert again.exit_code == 1  # never overwritten silently
    shown = runner.invoke(app, ["policy", "show", "--data-dir", data])
    assert shown.exit_code == 0 and "Privacy policy: dataset" in shown.stdout
    as_json = runner.invoke(app, ["policy", "show", "--json", "--data-dir", data])
    assert '"prompt_logging": "full"' in as_json.stdout
    ok = runner.invoke(app, ["policy", "validate", str(tmp_path / "data" / "policy.toml")])
    assert ok.exit_code == 0 and "valid policy 'dataset'" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        preset_text("private").replace('prompt_logging = "metadata"', 'prompt_logging = "full"')
    )
    refused = runner.invoke(app, ["policy", "validate", str(bad)])
    assert refused.exit_code == 1
    unknown = runner.invoke(app, ["policy", "init", "--preset", "nope", "--data-dir", data])
    assert unknown.exit_code == 1
