"""Prompt size against each node's per-request context: route long prompts, refuse early.

A node publishes its real per-request limit in ``ModelInfo.context`` (0: unknown).
The gateway has no tokenizer for every model, so it uses a lower bound on the
prompt's token count: byte-level BPE tokenizers (llama.cpp's) average 3-4.5 UTF-8
bytes per token on prose and code, so ``bytes // BYTES_PER_TOKEN_MAX`` is below
the real count for realistic text. A lower bound only excludes nodes that surely
cannot take the prompt; a borderline one reaches the node, whose engine refuses
with the same ``context_length_exceeded`` and its exact numbers.
"""

from __future__ import annotations

from lichen.errors import ErrorCode, LichenError
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.wire.messages import GenerationRequest

BYTES_PER_TOKEN_MAX = 6  # above what SmolLM2's tokenizer averages on English or code


def min_prompt_tokens(request: GenerationRequest) -> int:
    """A lower bound on the tokens this request's prompt takes (text, tools, calls)."""
    size = len(request.prompt.encode()) + len(request.continuation.encode())
    for message in request.messages:
        size += len(message.content.encode()) + len((message.tool_calls or "").encode())
    size += len((request.params.tools or "").encode())
    return size // BYTES_PER_TOKEN_MAX


def fits(conn: NodeConnection, model: str, prompt_tokens: int) -> bool:
    """Whether ``conn``'s per-request context for ``model`` can hold the prompt (unknown: yes)."""
    info = conn.state.model_info(model)
    return info is None or info.context == 0 or prompt_tokens < info.context


def largest_context(registry: Registry, model: str) -> int:
    """The largest per-request context any node offers for ``model`` (0: some node unknown)."""
    best = 0
    for conn in registry.serving(model):
        info = conn.state.model_info(model)
        if info is None or info.context == 0:
            return 0
        best = max(best, info.context)
    return best


def check_context(registry: Registry, request: GenerationRequest) -> None:
    """Refuse (``context_length_exceeded``) a prompt no node serving the model can hold."""
    limit = largest_context(registry, request.model)
    if limit == 0:
        return  # nobody serves it (routing says so) or some node's limit is unknown
    tokens = min_prompt_tokens(request)
    if tokens >= limit:
        raise LichenError(
            ErrorCode.CONTEXT_LENGTH_EXCEEDED,
            f"The prompt takes at least {tokens} tokens; the largest per-request context "
            f"for `{request.model}` on this network is {limit} tokens. Shorten the prompt, "
            "or run a node with a larger per-request context (LICHEN_CTX_SIZE, fewer "
            "LICHEN_PARALLEL slots, or LICHEN_KV_UNIFIED=true).",
            param="messages",
        )


def node_context(registry: Registry, peer_id: str, model: str) -> int:
    """The context size ``peer_id``'s manifest declares for ``model`` (0 if unknown)."""
    conn = registry.get(peer_id)
    info = conn.state.model_info(model) if conn is not None else None
    return info.context if info is not None else 0
