"""Enforcement in storage: the guard, the retention sweeper and ``lichen privacy audit``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.config import load_settings
from lichen.errors import ErrorCode, LichenError
from lichen.privacy.audit import audit
from lichen.privacy.content import ContentRepository, Exchange
from lichen.privacy.policy import load_preset, preset_text
from lichen.privacy.retention import RetentionSweeper
from lichen.privacy.storage_guard import PolicyGuard, install_guard
from lichen.storage import RequestLogRepository, RequestRecord, create_engine, migrate
from lichen.storage.tables import CompletionLog, PromptLog, RequestLog

DAY_MS = 86_400_000
NOW_S = 1_800_000_000.0  # a fixed "now" for the controllable clock


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def engine(data_dir: Path) -> AsyncIterator[AsyncEngine]:
    url = load_settings(data_dir=data_dir).database
    await migrate(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


def record(created_ms: int) -> RequestRecord:
    return RequestRecord(
        created_ms=created_ms,
        model="m",
        kind="chat",
        status=200,
        prompt_tokens=1,
        completion_tokens=2,
        ttft_ms=3,
        latency_ms=4,
        node_peer_id=None,
        stream=False,
    )


def exchange(request_id: str, created_ms: int, *, public: bool = False) -> Exchange:
    return Exchange(
        request_id=request_id,
        created_ms=created_ms,
        subject="s1",
        public=public,
        model="m",
        kind="completion",
        prompt="canary prompt",
        completion="canary answer",
        finish_reason="stop",
    )


async def count(engine: AsyncEngine, table: type) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(table)) or 0)


async def test_guard_refuses_a_forbidden_write_and_writes_nothing(engine: AsyncEngine) -> None:
    private = load_preset("private")
    install_guard(engine, PolicyGuard(private, ["gateway", "tracker"]))
    repo = ContentRepository(engine)
    await RequestLogRepository(engine).record(record(1))  # metadata is allowed

    with pytest.raises(LichenError) as caught:
        # Even bypassing the repository's own check, the engine refuses the write.
        async with engine.begin() as connection:
            await connection.execute(
                insert(RequestLog).values(
                    created_ms=2,
                    model="m",
                    kind="chat",
                    status=200,
                    prompt_tokens=0,
                    completion_tokens=0,
                    latency_ms=0,
                    stream=False,
                )
            )
            await connection.execute(
                insert(PromptLog).values(
                    request_id="r1",
                    created_ms=2,
                    deletion_hash="x",
                    model="m",
                    kind="chat",
                    text="canary",
                )
            )
    assert caught.value.code is ErrorCode.POLICY_FORBIDS
    assert caught.value.http_status == 403
    assert await count(engine, PromptLog) == 0
    assert await count(engine, RequestLog) == 1  # the allowed row of that transaction rolled back

    with pytest.raises(LichenError):
        await repo.keep(exchange("r2", 2), "token", private)
    with pytest.raises(LichenError):  # raw SQL is checked too
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                "INSERT INTO completion_log (request_id, created_ms, deletion_hash, public,"
                " finish_reason, text) VALUES ('r3', 1, 'x', 0, 'stop', 'canary')"
            )
    assert await count(engine, CompletionLog) == 0


async def test_guard_allows_what_the_policy_stores(engine: AsyncEngine) -> None:
    dataset = load_preset("dataset")
    install_guard(engine, PolicyGuard(dataset, ["gateway"]))
    repo = ContentRepository(engine)
    await repo.keep(exchange("r1", 1), "tok", dataset)
    assert await count(engine, PromptLog) == 1 and await count(engine, CompletionLog) == 1
    # The node has no business storing prompts even where the gateway may.
    install_guard(engine, PolicyGuard(dataset, ["node"]))
    with pytest.raises(LichenError):
        await repo.keep(exchange("r2", 1), "tok", dataset)
    assert await count(engine, PromptLog) == 1


async def test_retention_sweeper_deletes_exactly_the_expired_rows(engine: AsyncEngine) -> None:
    dataset = load_preset("dataset")  # prompts 365 d, metadata 365 d
    hosted = load_preset("hosted")  # metadata 90 d
    now_ms = int(NOW_S * 1000)
    requests = RequestLogRepository(engine)
    ages_days = [0, 89, 90, 91, 200, 364, 366, 400]
    for age in ages_days:
        await requests.record(record(now_ms - age * DAY_MS))
    repo = ContentRepository(engine)
    for age in ages_days:
        await repo.keep(exchange(f"r{age}", now_ms - age * DAY_MS), "t", dataset)

    sweeper = RetentionSweeper(engine, hosted, clock=lambda: NOW_S)
    deleted = await sweeper.sweep()
    assert deleted == {"request_log": 5}  # 91 days and older; 90 days is not yet over
    assert await count(engine, PromptLog) == 8  # hosted sets no retention on prompts

    sweeper = RetentionSweeper(engine, dataset, clock=lambda: NOW_S)
    assert await sweeper.sweep() == {"prompt_log": 2, "completion_log": 2}
    async with engine.connect() as connection:
        left = (await connection.execute(select(PromptLog.request_id))).scalars().all()
    assert sorted(left) == sorted(f"r{a}" for a in ages_days if a <= 365)
    assert await sweeper.sweep() == {}  # nothing more has expired
    later = RetentionSweeper(engine, dataset, clock=lambda: NOW_S + 2 * 86_400)
    assert await later.sweep() == {"prompt_log": 1, "completion_log": 1}  # the 364-day one


async def test_audit_reports_counts_ages_and_violations(engine: AsyncEngine) -> None:
    now_ms = int(NOW_S * 1000)
    await RequestLogRepository(engine).record(record(now_ms - 45 * DAY_MS))
    await ContentRepository(engine).keep(exchange("r1", now_ms), "t", load_preset("dataset"))
    report = await audit(engine, load_preset("private"), now=NOW_S)
    by_class = {c.data_class: c for c in report.classes}
    assert by_class["prompt"].rows == 1 and by_class["completion"].rows == 1
    assert by_class["request_metadata"].oldest_age_s == 45 * 86_400
    assert not report.ok
    assert any("prompt records stored" in v for v in report.violations)
    assert any("request_metadata records are 45 days old" in v for v in report.violations)
    assert (await audit(engine, load_preset("dataset"), now=NOW_S)).ok


def _db_url(data_dir: Path) -> str:
    return load_settings(data_dir=data_dir).database


async def _inject_prompt_row(data_dir: Path) -> None:
    """A prompt row written behind every guard's back (what an audit must catch)."""
    url = _db_url(data_dir)
    await migrate(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(PromptLog).values(
                    request_id="x",
                    created_ms=1,
                    deletion_hash="h",
                    model="m",
                    kind="chat",
                    text="t",
                )
            )
    finally:
        await engine.dispose()


def test_audit_cli_exits_non_zero_on_an_injected_violation(data_dir: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(app, ["privacy", "audit", "--data-dir", str(data_dir)])
    assert clean.exit_code == 0, clean.output
    assert "everything stored is allowed" in clean.stdout

    asyncio.run(_inject_prompt_row(data_dir))  # under `private`, the default policy
    result = runner.invoke(app, ["privacy", "audit", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["policy"] == "private"
    assert any("prompt" in v for v in report["violations"])

    # The same row is fine under `dataset`, except that it is far older than a year.
    (data_dir / "policy.toml").write_text(preset_text("dataset"))
    aged = runner.invoke(app, ["privacy", "audit", "--data-dir", str(data_dir)])
    assert aged.exit_code == 1
    assert "retention is 365 days" in aged.stdout
    swept = runner.invoke(app, ["privacy", "sweep", "--data-dir", str(data_dir)])
    assert swept.exit_code == 0 and "prompt_log: 1 deleted" in swept.stdout
    assert runner.invoke(app, ["privacy", "audit", "--data-dir", str(data_dir)]).exit_code == 0


async def _keep_two(data_dir: Path) -> None:
    url = _db_url(data_dir)
    await migrate(url)
    engine = create_engine(url)
    try:
        dataset = load_preset("dataset")
        repo = ContentRepository(engine)
        await repo.keep(exchange("a", 1), "ta", dataset)
        await repo.keep(Exchange(**{**exchange("b", 2).as_json(), "subject": "s2"}), "tb", dataset)
    finally:
        await engine.dispose()


def test_export_and_per_user_deletion(data_dir: Path) -> None:
    asyncio.run(_keep_two(data_dir))
    runner = CliRunner()
    exported = runner.invoke(app, ["privacy", "export", "--data-dir", str(data_dir)])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["request_id"] for line in lines] == ["b", "a"]
    assert lines[1]["prompt"] == "canary prompt" and lines[1]["completion"] == "canary answer"
    only = runner.invoke(app, ["privacy", "export", "--subject", "s2", "--data-dir", str(data_dir)])
    assert [json.loads(x)["request_id"] for x in only.stdout.splitlines()] == ["b"]

    args = ["privacy", "delete", "--subject", "s1", "--data-dir", str(data_dir)]
    deleted = runner.invoke(app, args)
    assert deleted.exit_code == 0 and "deleted 1" in deleted.stdout
    again = runner.invoke(app, ["privacy", "export", "--data-dir", str(data_dir)])
    assert [json.loads(x)["request_id"] for x in again.stdout.splitlines()] == ["b"]


async def test_deletion_by_token(engine: AsyncEngine) -> None:
    repo = ContentRepository(engine)
    await repo.keep(exchange("a", 1), "right", load_preset("dataset"))
    assert not await repo.delete_by_token("a", "wrong")
    assert await repo.delete_by_token("a", "right")
    assert await count(engine, PromptLog) == 0 and await count(engine, CompletionLog) == 0
