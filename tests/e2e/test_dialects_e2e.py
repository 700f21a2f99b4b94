"""OpenAI Responses, Anthropic Messages, logprobs and ``n`` against a real ``lichen up``
with the real model, through the official ``openai`` and ``anthropic`` SDKs.

SmolLM2's chat template has no tools, so tool calls are covered in-process
(tests/integration/test_dialect_*.py) with an engine that calls tools.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from clients import NO_ANONYMOUS_LIMITS, anonymous_openai
from harness import DEFAULT_MODEL, Harness, LichenProcess
from openai import OpenAI

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    return module_harness.up(env=NO_ANONYMOUS_LIMITS)


@pytest.fixture
def oai(up: LichenProcess) -> Iterator[OpenAI]:
    with anonymous_openai(f"{up.url}/v1") as client:
        yield client


@pytest.fixture
def claude(up: LichenProcess) -> Iterator[anthropic.Anthropic]:
    # the SDK sends its key as x-api-key; a value that is not a Lichen key is a placeholder
    with anthropic.Anthropic(base_url=up.url, api_key="unused", max_retries=0) as client:
        yield client


def test_responses_create_and_stream(oai: OpenAI) -> None:
    whole = oai.responses.create(
        model=DEFAULT_MODEL,
        instructions="Answer in one short sentence.",
        input="What colour is the sky?",
        max_output_tokens=16,
        temperature=0,
    )
    assert whole.status in ("completed", "incomplete")
    assert whole.output_text.strip()
    assert whole.usage is not None and 0 < whole.usage.output_tokens <= 16
    # the SDK's stream helper wants response.completed (an answer cut by
    # max_output_tokens ends with response.incomplete, as OpenAI's do): room to finish
    with oai.responses.stream(
        model=DEFAULT_MODEL, input="Say hi", max_output_tokens=200, temperature=0
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.strip()


def test_chat_with_logprobs_and_n(oai: OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        n=2,
    )
    assert [c.index for c in reply.choices] == [0, 1]
    for choice in reply.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        tokens = "".join(entry.token for entry in choice.logprobs.content)
        assert tokens == choice.message.content
        assert all(entry.logprob <= 0 for entry in choice.logprobs.content)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(
        len(c.logprobs.content or []) for c in reply.choices if c.logprobs
    )


def test_anthropic_messages_create_and_stream(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=DEFAULT_MODEL,
        max_tokens=12,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hi"}],
    )
    assert message.content and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 12
    with claude.messages.stream(
        model=DEFAULT_MODEL, max_tokens=12, messages=[{"role": "user", "content": "Say hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model=DEFAULT_MODEL,
            max_tokens=12,
            messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}],  # type: ignore[list-item]
        )
