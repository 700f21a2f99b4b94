"""Teacher-forced re-scoring of a given answer under a reference copy of the claimed model.

llama.cpp has no "score this continuation" call, so the reference forces the
answer with a grammar: the request is re-run greedily with a GBNF grammar that
accepts exactly the answer's text (and then only end-of-generation), asking for
``logprobs`` with ``top_logprobs``. llama.cpp reports those probabilities from the
raw logits *before* the grammar and the sampler touch them, so each position gives
the reference model's own distribution after the answer's prefix, plus the
log-probability of the token the answer actually used there. Greedy under the
grammar also re-derives the token split: among the tokens the grammar allows it
picks the model's most likely, which is the split an honest greedy node made.

Measured here (docs/verification.md): forcing an honest node's own greedy answer
reproduces its tokens and log-probabilities; the last position is the
end-of-generation token (an empty token string), scored like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import GenerationRequest

log = logging.getLogger(__name__)

TOP_K = 20  # alternatives reported per position (enough for the sampled-request tests)
DISCOVER_EVERY_S = 60.0  # how often a scorer looks for newly installed reference models


@dataclass(frozen=True, slots=True)
class TokenScore:
    """The reference's view of one position of the answer."""

    token: str  # the answer's token at this position ("" for end-of-generation)
    logprob: float  # its log-probability under the reference (raw logits, no sampler)
    top: tuple[tuple[str, float], ...]  # the reference's most likely tokens, best first
    eog: bool = False  # this position is the end-of-generation token the grammar forced

    @property
    def margin(self) -> float:
        """How far (in nats) the answer's token is below the reference's top token (>= 0)."""
        best = self.top[0][1] if self.top else self.logprob
        return max(0.0, best - self.logprob)

    @property
    def rank(self) -> int:
        """0 when the answer's token is the reference's top token; len(top) when not listed."""
        for i, (tok, lp) in enumerate(self.top):
            if tok == self.token or lp <= self.logprob:
                return i
        return len(self.top)


@dataclass(frozen=True, slots=True)
class Rescored:
    """The answer, token by token, under the reference model."""

    tokens: tuple[TokenScore, ...]  # answer tokens, then (if forced) the end-of-generation
    prompt_tokens: int  # the prompt's length as the reference counted it
    complete: bool  # False: the reference could not force the whole text

    @property
    def answer_tokens(self) -> int:
        """Tokens of the answer itself (the end-of-generation position excluded)."""
        return sum(1 for t in self.tokens if not t.eog)


class Scorer(Protocol):
    """Something that re-scores answers under a reference model."""

    def serves(self, model: str, sha256: str) -> bool:
        """Whether this scorer holds the weights ``sha256`` of ``model``."""
        ...

    async def rescore(
        self, request: GenerationRequest, text: str, pieces: list[str] | None = None
    ) -> Rescored:
        """``text`` as the answer to ``request``, scored position by position; with
        ``pieces`` (the node's streamed chunks, one token each) forced token by token."""
        ...


def gbnf_literal(text: str) -> str:
    """A GBNF grammar that accepts exactly ``text``."""
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= code < 127:
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return 'root ::= "' + "".join(out) + '"'


def gbnf_tokens(ids: list[int]) -> str:
    """A GBNF grammar that accepts exactly the token sequence ``ids`` (llama.cpp's ``<[id]>``)."""
    return "root ::= " + (" ".join(f"<[{i}]>" for i in ids) if ids else '""')


def rescore_body(
    request: GenerationRequest, text: str, token_ids: list[int] | None = None
) -> dict[str, Any]:
    """The llama.cpp request that forces ``text`` (or exactly ``token_ids``) after
    ``request``'s prompt."""
    body: dict[str, Any] = {
        "stream": False,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": TOP_K,
        "grammar": gbnf_literal(text) if token_ids is None else gbnf_tokens(token_ids),
        # Every UTF-8 byte is at most one token; +2 leaves room for end-of-generation.
        "max_tokens": len(text.encode("utf-8")) + 2,
    }
    if request.kind == "chat":
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": m.content} for m in request.messages
        ]
        if request.continuation:
            messages.append({"role": "assistant", "content": request.continuation})
        body["messages"] = messages
    else:
        body["prompt"] = request.prompt + request.continuation
    return body


def parse_rescored(payload: dict[str, Any], text: str) -> Rescored:
    """Read llama.cpp's answer to :func:`rescore_body` (chat or completion shape)."""
    if "error" in payload:
        message = str((payload.get("error") or {}).get("message") or "reference engine error")
        raise LichenError(ErrorCode.ENGINE_ERROR, message)
    choice = (payload.get("choices") or [{}])[0]
    content = (choice.get("logprobs") or {}).get("content") or []
    forced = (choice.get("message") or {}).get("content")
    if forced is None:
        forced = choice.get("text", "")
    tokens: list[TokenScore] = []
    produced = 0
    for item in content:
        tok = str(item.get("token", ""))
        raw = item.get("bytes")
        eog = tok == "" and not raw
        top = tuple(
            (str(alt.get("token", "")), float(alt.get("logprob", -1e9)))
            for alt in item.get("top_logprobs") or ()
        )
        tokens.append(TokenScore(tok, float(item.get("logprob", -1e9)), top, eog))
        produced += 0 if eog else 1
    usage = payload.get("usage") or {}
    return Rescored(
        tokens=tuple(tokens),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        complete=forced == text,
    )


@dataclass(frozen=True)
class ReferenceModel:
    """A GGUF file the tracker holds, to re-score answers for one model name."""

    name: str
    path: Path
    sha256: str
    threads: int = 1
    ctx_size: int = 4096


class LlamaScorer:
    """Re-scores answers with llama.cpp (``xllamacpp``), one reference server per model.

    Servers load lazily on first use and re-score one answer at a time: the
    reference's cost stays bounded no matter how many audits are queued.
    """

    def __init__(
        self,
        models: list[ReferenceModel],
        *,
        discover: Callable[[], list[ReferenceModel]] | None = None,
        discover_every_s: float = DISCOVER_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = {m.name: m for m in models}
        # Models installed after start (a tracker pulls models while it runs): looked for
        # again when asked about one it does not hold, at most every ``discover_every_s``.
        self._discover = discover
        self._discover_every_s = discover_every_s
        self._clock = clock
        self._discovered_at = clock()
        self._servers: dict[str, Any] = {}
        self._keys: dict[int, str] = {}  # id(server) -> the random key of its HTTP listener
        self._lock = threading.Lock()
        self._busy = asyncio.Lock()

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def loaded(self) -> list[str]:
        """Models whose reference engine is running now (they load at their first audit)."""
        with self._lock:
            return sorted(name for name, server in self._servers.items() if server is not None)

    def serves(self, model: str, sha256: str) -> bool:
        ref = self._models.get(model)
        if ref is None and self._discover is not None:
            now = self._clock()
            if now - self._discovered_at >= self._discover_every_s:
                self._discovered_at = now
                for found in self._discover():
                    self._models.setdefault(found.name, found)  # a loaded one stays as it is
                ref = self._models.get(model)
        return ref is not None and (not sha256 or ref.sha256 == sha256)

    def _server(self, name: str) -> Any:
        with self._lock:
            server = self._servers.get(name)
            if server is None:
                key = secrets.token_hex(32)
                server = self._servers[name] = _load(self._models[name], key)
                self._keys[id(server)] = key
            return server

    def _tokenize(self, server: Any, pieces: list[str]) -> list[int]:
        """Token ids of the node's pieces, each tokenized on its own (one token each,
        for a llama.cpp node; a piece that is several tokens stays several)."""
        key = self._keys[id(server)]
        ids: list[int] = []
        with httpx.Client(
            base_url=server.listening_address,
            headers={"authorization": f"Bearer {key}"},
            timeout=30.0,
            trust_env=False,
        ) as client:
            for piece in pieces:
                if not piece:
                    continue
                response = client.post("/tokenize", json={"content": piece, "add_special": False})
                response.raise_for_status()
                ids.extend(int(t) for t in response.json()["tokens"])
        return ids

    def _run(self, request: GenerationRequest, text: str, pieces: list[str] | None) -> Rescored:
        server = self._server(request.model)
        token_ids = self._tokenize(server, pieces) if pieces is not None else None
        body = rescore_body(request, text, token_ids)
        handler = (
            server.handle_chat_completions if request.kind == "chat" else server.handle_completions
        )
        result = handler(body)
        payload = json.loads(result) if isinstance(result, str) else result
        return parse_rescored(payload, text)

    async def rescore(
        self, request: GenerationRequest, text: str, pieces: list[str] | None = None
    ) -> Rescored:
        if request.model not in self._models:
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"no reference for {request.model!r}")
        async with self._busy:
            try:
                return await asyncio.to_thread(self._run, request, text, pieces)
            except (ValueError, httpx.HTTPError) as exc:  # request validation, tokenizer
                raise LichenError(ErrorCode.ENGINE_ERROR, type(exc).__name__) from None

    async def close(self) -> None:
        servers = list(self._servers.values())
        self._servers.clear()
        self._keys.clear()
        await asyncio.to_thread(servers.clear)


def _load(model: ReferenceModel, api_key: str) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model.path)
    params.n_parallel = 1
    params.n_ctx = model.ctx_size
    params.cpuparams.n_threads = model.threads
    params.cpuparams_batch.n_threads = model.threads
    params.warmup = False
    params.verbosity = -1  # llama.cpp's own log could echo the answer
    params.api_keys = [api_key]  # the wheel's loopback listener: only this process may use it
    log.info("loading reference model %s for audits", model.name)
    return xllamacpp.Server(params)
