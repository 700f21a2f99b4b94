"""Operator accounts: the role column (its migration keeps existing accounts and keys),
and ``lichen operator grant|revoke|list`` on the tracker's disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.passwords import fast_passwords
from lichen.accounts.roles import AccountRoles
from lichen.accounts.service import AccountService
from lichen.cli.main import app
from lichen.errors import LichenError
from lichen.storage.accounts_tables import AccountRow
from lichen.storage.engine import alembic_config, create_engine, migrate

runner = CliRunner()


async def _upgrade_to(url: str, target: str) -> None:
    engine = create_engine(url)

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, target)

    try:
        async with engine.connect() as connection:
            await connection.run_sync(run)
            await connection.commit()
    finally:
        await engine.dispose()


async def test_the_migration_keeps_accounts_and_their_keys(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await _upgrade_to(url, "0002_accounts")  # a database from before roles existed
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO account (id, username, email, password_hash, created_ms) "
                    "VALUES ('a1', 'olda', 'olda@example.org', 'x', 1)"
                )
            )
        made = await ApiKeyService(engine).create("a1", name="k", scopes=["inference"])
        await migrate(url)  # every head, this feature's included
        key = await ApiKeyService(engine).resolve(made.secret)
        assert key is not None and key.account_id == "a1"  # not cascaded away by a rebuild
        assert await AccountRoles(engine).role("a1") == "user"
    finally:
        await engine.dispose()


async def test_roles_are_checked_by_the_database(lichen_db: AsyncEngine) -> None:
    accounts = AccountService(lichen_db, passwords=fast_passwords())
    account = await accounts.signup("rhea", "rhea@example.org", "a long password here")
    roles = AccountRoles(lichen_db)
    assert await roles.role(account.id) == "user" and not await roles.is_operator(account.id)
    await roles.set_role(account.id, "operator")
    assert await roles.operators() == [(account.id, "rhea")]
    with pytest.raises(LichenError):
        await roles.set_role(account.id, "root")  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        async with lichen_db.begin() as connection:
            await connection.execute(
                update(AccountRow).where(AccountRow.id == account.id).values(role="root")
            )
    with pytest.raises(LichenError):
        await roles.set_role("no-such-account", "operator")
    await accounts.delete(account.id)
    assert await roles.role(account.id) is None and await roles.operators() == []


def _signup(data_dir: Path, username: str) -> None:
    async def run() -> None:
        url = f"sqlite+aiosqlite:///{data_dir / 'lichen.db'}"
        await migrate(url)
        engine = create_engine(url)
        try:
            accounts = AccountService(engine, passwords=fast_passwords())
            await accounts.signup(username, f"{username}@example.org", "a long password here")
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_operator_grant_revoke_list(tmp_path: Path) -> None:
    data = tmp_path / "tracker"
    data.mkdir(mode=0o700)
    _signup(data, "opal")
    where = ["--data-dir", str(data)]
    empty = runner.invoke(app, ["operator", "list", *where])
    assert empty.exit_code == 0 and "No operator accounts" in empty.output
    made = runner.invoke(app, ["operator", "grant", "opal", "--new-key", "laptop", *where])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("lk-") and "opal is now an operator" in made.stderr
    listed = runner.invoke(app, ["operator", "list", *where])
    assert listed.stdout.startswith("opal\t")
    revoked = runner.invoke(app, ["operator", "revoke", "opal", *where])
    assert revoked.exit_code == 0 and "opal is now a user" in revoked.stderr
    assert runner.invoke(app, ["operator", "list", *where]).stdout == ""
    missing = runner.invoke(app, ["operator", "grant", "nobody", *where])
    assert missing.exit_code == 1 and "no active account named 'nobody'" in missing.output
