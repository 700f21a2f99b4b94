"""Typed access to stored rows; callers never touch SQL or ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict, cast

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.storage.tables import MODEL_NAME_MAX, PEER_ID_MAX, RequestLog

RequestKind = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """Metadata of one served request. Holds no prompt or completion text by design."""

    created_ms: int  # unix epoch, milliseconds
    model: str  # model name as routed (not free text from the prompt)
    kind: RequestKind
    status: int  # HTTP status answered to the client
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: int | None  # time to first token; None when no token was produced
    latency_ms: int  # request received -> last byte sent
    node_peer_id: str | None  # node that served it; None when none did
    stream: bool

    def __post_init__(self) -> None:
        if self.kind not in ("chat", "completion"):
            raise ValueError(f"kind must be 'chat' or 'completion', not {self.kind!r}")
        if len(self.model) > MODEL_NAME_MAX:
            raise ValueError(f"model name longer than {MODEL_NAME_MAX} characters")
        if self.node_peer_id is not None and len(self.node_peer_id) > PEER_ID_MAX:
            raise ValueError(f"node_peer_id longer than {PEER_ID_MAX} characters")
        counts = (self.prompt_tokens, self.completion_tokens, self.latency_ms, self.ttft_ms or 0)
        if min(counts) < 0:
            raise ValueError("token counts and durations must not be negative")


class RequestStats(TypedDict):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int  # prompt + completion


class RequestLogRepository:
    """The ``request_log`` table (data class ``request_metadata``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, entry: RequestRecord) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(RequestLog).values(
                    created_ms=entry.created_ms,
                    model=entry.model,
                    kind=entry.kind,
                    status=entry.status,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    ttft_ms=entry.ttft_ms,
                    latency_ms=entry.latency_ms,
                    node_peer_id=entry.node_peer_id,
                    stream=entry.stream,
                )
            )

    async def recent(self, limit: int = 100) -> list[RequestRecord]:
        """The newest ``limit`` records, newest first."""
        query = (
            select(
                RequestLog.created_ms,
                RequestLog.model,
                RequestLog.kind,
                RequestLog.status,
                RequestLog.prompt_tokens,
                RequestLog.completion_tokens,
                RequestLog.ttft_ms,
                RequestLog.latency_ms,
                RequestLog.node_peer_id,
                RequestLog.stream,
            )
            .order_by(RequestLog.created_ms.desc(), RequestLog.id.desc())
            .limit(max(limit, 0))
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            RequestRecord(
                created_ms=row.created_ms,
                model=row.model,
                kind=cast(RequestKind, row.kind),
                status=row.status,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                ttft_ms=row.ttft_ms,
                latency_ms=row.latency_ms,
                node_peer_id=row.node_peer_id,
                stream=row.stream,
            )
            for row in rows
        ]

    async def count(self) -> int:
        async with self._engine.connect() as connection:
            total = await connection.scalar(select(func.count()).select_from(RequestLog))
        return int(total or 0)

    async def stats_since(self, since_ms: int) -> RequestStats:
        """Totals over the requests created at or after ``since_ms``."""
        query = select(
            func.count(),
            func.coalesce(func.sum(RequestLog.prompt_tokens), 0),
            func.coalesce(func.sum(RequestLog.completion_tokens), 0),
        ).where(RequestLog.created_ms >= since_ms)
        async with self._engine.connect() as connection:
            requests, prompt, completion = (await connection.execute(query)).one()
        return RequestStats(
            requests=int(requests),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            tokens=int(prompt) + int(completion),
        )

    async def node_stats(self, node_peer_id: str) -> RequestStats:
        """Totals over the successful requests one node served."""
        query = select(
            func.count(),
            func.coalesce(func.sum(RequestLog.prompt_tokens), 0),
            func.coalesce(func.sum(RequestLog.completion_tokens), 0),
        ).where(RequestLog.node_peer_id == node_peer_id, RequestLog.status < 400)
        async with self._engine.connect() as connection:
            requests, prompt, completion = (await connection.execute(query)).one()
        return RequestStats(
            requests=int(requests),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            tokens=int(prompt) + int(completion),
        )

    async def per_minute(self, since_ms: int) -> dict[int, int]:
        """Request counts by minute (unix epoch minute -> count) since ``since_ms``."""
        minute = RequestLog.created_ms // 60_000
        query = (
            select(minute, func.count()).where(RequestLog.created_ms >= since_ms).group_by(minute)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {int(m): int(n) for m, n in rows}
