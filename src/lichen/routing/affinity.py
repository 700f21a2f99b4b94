"""Prefix affinity: which node most likely still holds a request's prompt prefix in its KV cache.

Multi-turn chats and shared system prompts re-send the same prefix. llama.cpp keeps
each slot's last prompt (and answer) in its KV cache and reuses the longest common
prefix, so the node that served the last turn skips most of the next turn's prompt
processing. The router remembers, per node, a hash chain over the prompt blocks it
sent there: each message is cut into blocks of :data:`BLOCK_CHARS` characters, and the
hash of block *i* covers every block before it, so one lookup per block finds the
longest prefix a node was sent.

Privacy: only keyed 64-bit digests are kept (the key is random per process, so the
digests cannot be matched against guessed texts elsewhere), never text. Memory is
bounded: each node keeps an LRU of about as many blocks as its slots' contexts hold
(what llama.cpp can still have cached), and at most :data:`MAX_NODES` nodes are tracked.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence

from lichen.wire.messages import ChatMessage, GenerationRequest

BLOCK_CHARS = 256  # prompt characters per hashed block
CHARS_PER_TOKEN = 4.0  # rough: English text and chat markup
MIN_BLOCKS = 64  # per node, whatever its manifest says
MAX_BLOCKS = 65536  # per node: 512 KiB of digests at most
MAX_NODES = 4096  # nodes tracked; the least recently used is forgotten first
MAX_CHAIN_BLOCKS = 4096  # a longer prompt's tail is not tracked (1 MiB of text)


class PrefixChain:
    """The hash chain of one prompt: ``digests[i]`` covers blocks ``0..i``; ``chars[i]``
    is how many prompt characters those blocks span."""

    __slots__ = ("chars", "digests")

    def __init__(self, digests: Sequence[int], chars: Sequence[int]) -> None:
        self.digests = tuple(digests)
        self.chars = tuple(chars)

    def __len__(self) -> int:
        return len(self.digests)


class AffinityTable:
    """Per node: the digests of the prompt blocks recently sent there (an LRU)."""

    def __init__(self, *, block_chars: int = BLOCK_CHARS, max_nodes: int = MAX_NODES) -> None:
        self.block_chars = block_chars
        self.max_nodes = max_nodes
        self._key = os.urandom(16)
        self._nodes: OrderedDict[str, OrderedDict[int, None]] = OrderedDict()
        self._capacity: dict[str, int] = {}

    # -- hashing -------------------------------------------------------------------

    def chain(self, request: GenerationRequest, answer: str = "") -> PrefixChain:
        """The chain of ``request``'s prompt; with ``answer``, of the prompt followed by
        that assistant answer (what the next turn of the conversation starts with)."""
        parts: list[tuple[str, str]]
        if request.kind == "chat":
            parts = [(_header(m), m.content) for m in request.messages]
            if answer:
                parts.append((_header(ChatMessage(role="assistant", content=answer)), answer))
        else:
            parts = [("prompt\x00", request.prompt + answer)]
        digests: list[int] = []
        chars: list[int] = []
        state = hashlib.blake2b(key=self._key, digest_size=8)
        state.update(request.model.encode())
        spanned = 0
        for header, text in parts:
            # The header goes into the message's first block, so roles and names count.
            for start in range(0, max(1, len(text)), self.block_chars):
                if len(digests) >= MAX_CHAIN_BLOCKS:
                    return PrefixChain(digests, chars)
                block = text[start : start + self.block_chars]
                state.update(b"\x01" + (header if start == 0 else "").encode() + b"\x02")
                state.update(block.encode("utf-8", "surrogatepass"))
                spanned += len(block) + (len(header) if start == 0 else 0)
                digests.append(int.from_bytes(state.copy().digest(), "big"))
                chars.append(spanned)
        return PrefixChain(digests, chars)

    # -- the table -----------------------------------------------------------------

    def remember(
        self, peer_id: str, chain: PrefixChain, capacity_blocks: int | None = None
    ) -> None:
        """``chain`` was sent to ``peer_id`` (its KV cache now holds it)."""
        if capacity_blocks is not None:
            self._capacity[peer_id] = max(MIN_BLOCKS, min(MAX_BLOCKS, capacity_blocks))
        if not chain:
            return
        held = self._nodes.get(peer_id)
        if held is None:
            held = self._nodes[peer_id] = OrderedDict()
            while len(self._nodes) > self.max_nodes:
                gone, _ = self._nodes.popitem(last=False)
                self._capacity.pop(gone, None)
        self._nodes.move_to_end(peer_id)
        for digest in chain.digests:
            held[digest] = None
            held.move_to_end(digest)
        capacity = self._capacity.get(peer_id, MIN_BLOCKS)
        while len(held) > capacity:
            held.popitem(last=False)

    def matched_chars(self, peer_id: str, chain: PrefixChain) -> int:
        """How many of the prompt's leading characters ``peer_id`` was sent recently."""
        held = self._nodes.get(peer_id)
        if not held or not chain:
            return 0
        for i in range(len(chain) - 1, -1, -1):
            if chain.digests[i] in held:
                return chain.chars[i]
        return 0

    def forget(self, peer_id: str) -> None:
        self._nodes.pop(peer_id, None)
        self._capacity.pop(peer_id, None)

    def held(self, peer_id: str) -> list[int]:
        """The digests kept for ``peer_id`` (for tests and introspection: never text)."""
        return list(self._nodes.get(peer_id, ()))

    def nodes(self) -> list[str]:
        return list(self._nodes)


def capacity_blocks(context_tokens: int, block_chars: int = BLOCK_CHARS) -> int:
    """About how many prompt blocks fit in ``context_tokens`` of KV cache."""
    return int(context_tokens * CHARS_PER_TOKEN / block_chars)


def _header(message: ChatMessage) -> str:
    return "\x00".join(
        (message.role, message.name or "", message.tool_call_id or "", message.tool_calls or "")
    )
