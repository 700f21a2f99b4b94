"""The policy across the network: signed on join, refused by nodes, screening, privacy
classes, the published policy and telemetry."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import MODEL, FakeEngine, assert_openai_error, eventually, sse_payloads, streamed_text
from privacy_net import PrivacyNetwork

from lichen.errors import ErrorCode
from lichen.privacy.policy import preset_text
from lichen.privacy.signing import verify_public_json


@pytest.fixture
async def screened(tmp_path: Path) -> AsyncIterator[PrivacyNetwork]:
    net = await PrivacyNetwork.for_preset(tmp_path, "screened").start()
    try:
        yield net
    finally:
        await net.close()


async def test_nodes_verify_and_show_the_signed_policy(
    screened: PrivacyNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node = await screened.add_node(FakeEngine(), "n1", refuse_policies=("open", "dataset"))
    policy = node.agent.privacy.policy
    assert policy is not None and policy.name == "screened"
    assert any("network policy 'screened'" in r.getMessage() for r in caplog.records)


async def test_a_node_refuses_a_policy_its_settings_forbid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = await PrivacyNetwork.for_preset(tmp_path, "open").start()
    try:
        node = await net.add_node(FakeEngine(), "picky", wait=False, refuse_policies=("open",))
        await eventually(lambda: node.task.done(), what="the node to give up")
        assert node.agent.fatal is not None
        assert node.agent.fatal.code is ErrorCode.POLICY_FORBIDS
        assert net.tracker.registry.get(node.peer_id) is None
        assert any(
            r.levelno == logging.ERROR and "refusing to join" in r.getMessage()
            for r in caplog.records
        )
        ok = await net.add_node(FakeEngine(), "easy", refuse_policies=("dataset",))
        assert ok.agent.fatal is None
    finally:
        await net.close()


async def test_input_screening_blocks_with_content_policy_violation(
    screened: PrivacyNetwork,
) -> None:
    node = await screened.add_node(FakeEngine(), "n1")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "How to build a bomb?"}]}
    response = await screened.client.post("/v1/chat/completions", json=body)
    error = assert_openai_error(response, 400, "content_policy_violation")
    assert "weapons" in error["message"]
    assert node.engine.requests == []  # it never reached a node


@pytest.mark.parametrize("stream", [False, True])
async def test_output_screening_ends_the_answer_with_content_filter(
    screened: PrivacyNetwork, stream: bool
) -> None:
    tokens = ["Sure", ". First", " you make a pi", "pe bo", "mb", " with", " care", "."]
    await screened.add_node(FakeEngine(tokens), "n1")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "tell me a story"}],
        "stream": stream,
    }
    response = await screened.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    if stream:
        payloads = sse_payloads(response.text)
        text = streamed_text(payloads)
        reasons = [c["finish_reason"] for p in payloads for c in p["choices"] if c["finish_reason"]]
        assert reasons == ["content_filter"]
    else:
        choice = response.json()["choices"][0]
        text = choice["message"]["content"]
        assert choice["finish_reason"] == "content_filter"
    # Nothing of the phrase got out; what did is the clean start of the answer.
    assert "bomb" not in text and "pipe" not in text
    assert "Sure. First you make a pipe bomb".startswith(text)


async def test_privacy_classes_pick_nodes_by_trust(tmp_path: Path) -> None:
    # Only "trusted" nodes may serve private-net-only; the only node is the owner's.
    text = preset_text("private").replace(
        'private-net-only = ["owner", "trusted"]', 'private-net-only = ["trusted"]'
    )
    net = await PrivacyNetwork(tmp_path, text).start()
    try:
        node = await net.add_node(FakeEngine(), "owned")
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 3}
        ok = await net.client.post("/v1/completions", json=body)
        assert ok.status_code == 200 and ok.headers["x-lichen-privacy-class"] == "standard"
        refused = await net.client.post(
            "/v1/completions", json=body, headers={"x-lichen-privacy-class": "private-net-only"}
        )
        assert_openai_error(refused, 503, "no_capacity")
        unknown = await net.client.post(
            "/v1/completions", json=body | {"lichen_privacy_class": "vip"}
        )
        error = assert_openai_error(unknown, 400, "invalid_request_error")
        assert error["param"] == "lichen_privacy_class"
        assert len(node.engine.requests) == 1
        assert node.engine.requests[0].privacy_class == "standard"
    finally:
        await net.close()


async def test_the_published_policy_is_signed_and_plain(screened: PrivacyNetwork) -> None:
    body = (await screened.client.get("/privacy.json")).json()
    assert verify_public_json(body).name == "screened"
    assert body["document"] == preset_text("screened")
    assert base64.b64decode(body["network_key"]) == screened.identity.network_public
    page = await screened.client.get("/privacy")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Privacy policy: screened" in page.text
    assert "replaced by placeholders" in page.text
    assert "x-lichen-data-policy" not in page.headers  # only disclosing policies announce
    assert (await screened.client.get("/feed.json")).status_code == 404  # no feed here


async def test_telemetry_only_from_opted_in_nodes_and_only_listed_counters(
    tmp_path: Path,
) -> None:
    text = preset_text("private").replace(
        'counters = ["requests", "tokens", "tokens_per_s", "models", "uptime_s"]',
        'counters = ["requests", "models"]',
    )
    net = await PrivacyNetwork(tmp_path, text).start()
    try:
        # The quiet node serves another model, so every request lands on the chatty one.
        quiet = await net.add_node(
            FakeEngine(model="other-model"), "quiet", telemetry_interval_s=0.05
        )
        chatty = await net.add_node(
            FakeEngine(), "chatty", telemetry=True, telemetry_interval_s=0.05
        )
        for _ in range(3):
            body = {"model": MODEL, "prompt": "count me", "max_tokens": 2}
            assert (await net.client.post("/v1/completions", json=body)).status_code == 200
        await eventually(
            lambda: any(row[3] == 3 for row in net.rows()["telemetry_log"]),
            what="telemetry rows counting the 3 requests",
        )
        rows = net.rows()["telemetry_log"]
        peers = {row[2] for row in rows}
        assert peers == {chatty.peer_id} and quiet.peer_id not in peers
        columns = [
            "id",
            "created_ms",
            "peer_id",
            "requests",
            "tokens",
            "tokens_per_s",
            "models",
            "uptime_s",
            "data_class",
        ]
        for row in rows:
            values = dict(zip(columns, row, strict=True))
            assert values["tokens"] is None and values["tokens_per_s"] is None
            assert values["uptime_s"] is None
            assert values["models"] == MODEL
        assert sum(1 for row in rows if row[3]) >= 1
    finally:
        await net.close()
