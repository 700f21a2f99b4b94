"""lichen.server facing hostile networks: slow loris, forged X-Forwarded-For, TLS (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from websockets.asyncio.client import connect

from lichen.errors import ErrorCode, LichenError
from lichen.server import HttpOptions, HttpServer
from tls_kit import make_tls


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> JSONResponse:
        client = request.client
        return JSONResponse({"host": client.host if client else None, "scheme": request.url.scheme})

    return app


@contextlib.asynccontextmanager
async def serving(options: HttpOptions) -> AsyncIterator[int]:
    server = HttpServer(_echo_app(), host="127.0.0.1", port=0, options=options)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop()


def _client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")


async def _closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True when the server closes the socket (EOF or reset) within ``within_s``."""
    try:
        data = await asyncio.wait_for(reader.read(), timeout=within_s)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_partial_headers_are_closed_after_the_header_timeout() -> None:
    async with serving(HttpOptions(header_timeout_s=0.5)) as port:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(300)]
        for _reader, writer in conns:
            writer.write(b"GET /who HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            await writer.drain()
        async with _client(port) as client:  # an honest client is served meanwhile
            assert (await client.get("/who")).status_code == 200
        # Closed by the server (not by this test giving up); the timeout is 0.5 s.
        closed = await asyncio.gather(*(_closed_by_server(r, within_s=30) for r, _ in conns))
        assert all(closed)
        for _reader, writer in conns:
            writer.close()


async def test_silent_socket_is_closed_too() -> None:
    async with serving(HttpOptions(header_timeout_s=0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(reader, within_s=30)
        writer.close()


async def test_slow_second_request_on_keepalive_connection_is_closed() -> None:
    async with serving(HttpOptions(header_timeout_s=0.5, keepalive_s=60)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"GET /who HTTP/1.1\r\nHost: ")  # the second request trickles
        await writer.drain()
        assert await _closed_by_server(reader, within_s=30)
        writer.close()


async def test_complete_requests_are_served_and_slow_handlers_are_not_cut() -> None:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> JSONResponse:
        await asyncio.sleep(1.0)  # longer than the header timeout: must still answer
        return JSONResponse({"ok": True})

    server = HttpServer(app, host="127.0.0.1", port=0, options=HttpOptions(header_timeout_s=0.3))
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            first = await client.get("/slow")
            second = await client.get("/slow")  # same keep-alive connection
        assert first.json() == {"ok": True}
        assert second.json() == {"ok": True}
    finally:
        await server.stop()


async def test_forwarded_for_is_ignored_by_default() -> None:
    async with serving(HttpOptions()) as port, _client(port) as client:
        body = (await client.get("/who", headers={"X-Forwarded-For": "203.0.113.9"})).json()
    assert body["host"] == "127.0.0.1"


async def test_forwarded_for_from_unlisted_peer_is_ignored() -> None:
    async with (
        serving(HttpOptions(forwarded_allow_ips="10.1.2.3,192.0.2.0/24")) as port,
        _client(port) as client,
    ):
        body = (
            await client.get(
                "/who", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
            )
        ).json()
    assert body == {"host": "127.0.0.1", "scheme": "http"}


async def test_forwarded_for_from_listed_proxy_is_honoured() -> None:
    async with (
        serving(HttpOptions(forwarded_allow_ips="127.0.0.1")) as port,
        _client(port) as client,
    ):
        body = (await client.get("/who", headers={"X-Forwarded-For": "203.0.113.9"})).json()
    assert body["host"] == "203.0.113.9"


async def test_tls_serves_https_to_a_client_trusting_the_ca(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    options = HttpOptions(tls_certfile=tls.cert, tls_keyfile=tls.key, header_timeout_s=5)
    server = HttpServer(_echo_app(), host="127.0.0.1", port=0, options=options)
    assert server.scheme == "https"
    port = await server.start()
    try:
        trusted = ssl.create_default_context(cafile=str(tls.ca))
        async with httpx.AsyncClient(verify=trusted) as client:
            body = (await client.get(f"https://localhost:{port}/who")).json()
            assert body["scheme"] == "https"
        async with httpx.AsyncClient() as untrusting:  # system CAs only
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(f"https://127.0.0.1:{port}/who")
    finally:
        await server.stop()


@pytest.mark.parametrize("which", ["missing", "garbage", "key_only", "encrypted", "wrong_key"])
async def test_bad_tls_files_are_a_typed_error(tmp_path: Path, which: str) -> None:
    tls = make_tls(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    options = {
        "missing": HttpOptions(tls_certfile=tmp_path / "nope.pem", tls_keyfile=tls.key),
        "garbage": HttpOptions(tls_certfile=garbage, tls_keyfile=tls.key),
        "key_only": HttpOptions(tls_keyfile=tls.key),
        "encrypted": HttpOptions(tls_certfile=tls.cert, tls_keyfile=_encrypted_key(tmp_path)),
        "wrong_key": HttpOptions(
            tls_certfile=tls.cert, tls_keyfile=make_tls(tmp_path, prefix="b-").key
        ),
    }[which]
    server = HttpServer(_echo_app(), host="127.0.0.1", port=0, options=options)
    with pytest.raises(LichenError) as caught:
        await server.start()
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert caught.value.param == "tls_certfile"


async def test_websocket_links_outlive_the_header_timeout() -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.send_text(await ws.receive_text())

    server = HttpServer(app, host="127.0.0.1", port=0, options=HttpOptions(header_timeout_s=0.2))
    port = await server.start()
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None) as ws:
            await ws.send("one")
            assert await ws.recv() == "one"
            await asyncio.sleep(1.0)  # five header timeouts: an upgraded link is not cut
            await ws.send("two")
            assert await asyncio.wait_for(ws.recv(), 10) == "two"
    finally:
        await server.stop()


def _encrypted_key(directory: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = directory / "encrypted.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


def test_options_come_from_settings(tmp_path: Path) -> None:
    from lichen.config import Settings

    settings = Settings(
        tls_certfile=tmp_path / "c.pem",
        tls_keyfile=tmp_path / "k.pem",
        forwarded_allow_ips="10.0.0.0/8",
        http_header_timeout_s=3.5,
        http_keepalive_s=7,
    )
    options = HttpOptions.from_settings(settings)
    assert options == HttpOptions(tmp_path / "c.pem", tmp_path / "k.pem", "10.0.0.0/8", 3.5, 7)
    assert options.tls and not HttpOptions().tls
