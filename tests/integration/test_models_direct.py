"""Direct chunk transfer between peers that accept connections (``chunk_port``).

The tracker sends a requester to a holder's own endpoint (``ChunkAt``) instead of
relaying, so those bytes never cross the tracker. A holder whose direct bytes are
wrong is reported by the requester and checked by the tracker itself (a relayed
request, verified) before it is struck; a report alone harms nobody.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from models_net import network, write_gguf

from lichen.models.admin import import_file
from lichen.models.chunks import CHUNK_SIZE
from lichen.models.holdings import Holdings
from lichen.models.network import NetworkModels


class _Liar(Holdings):
    def read(self, model: str, index: int, sha256: str) -> bytes | None:
        data = super().read(model, index, sha256)
        return None if data is None else b"\x00" + data[1:]


async def test_chunks_travel_directly_between_peers(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "m.gguf", size=5 * CHUNK_SIZE)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        holder = net.node("holder", chunk_port=0)
        await holder.install("m")
        assert holder.port > 0
        stats = net.models.hub.stats
        store_before = stats.from_store
        try:
            async with holder.client() as seeding:
                await seeding.announce()
                fresh = net.node("fresh")
                model = await fresh.install("m")
        finally:
            await holder.close()
        assert model.path.read_bytes() == data
        assert stats.directed == 5  # every chunk came straight from the holder
        assert stats.from_store == store_before and stats.relayed == 0


async def test_a_peer_lying_on_its_direct_endpoint_is_checked_and_struck(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "m.gguf", size=3 * CHUNK_SIZE)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        liar = net.node("liar", chunk_port=0)
        await liar.install("m")
        liar.holdings = _Liar(liar.store)  # its endpoint and its relay answers lie from now on
        await asyncio.to_thread(liar.holdings.scan)
        await liar.close()
        await liar.share()
        reputation = net.stack.accounting.reputation if net.stack.accounting else None
        assert reputation is not None
        before = reputation.score(liar.identity.peer_id)
        try:
            async with liar.client() as seeding:
                await seeding.announce()
                model = await net.node("fresh").install("m")
                hub = net.models.hub
                peer = hub.holders[liar.identity.peer_id]
                for _ in range(100):  # the tracker's checks of the reports run on their own
                    if peer.strikes:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await liar.close()
        assert model.path.read_bytes() == data
        assert hub.stats.reported_bad >= 1 and peer.strikes >= 1
        assert reputation.score(liar.identity.peer_id) < before


async def test_a_false_report_does_not_strike_an_honest_peer(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        write_gguf(tmp_path / "m.gguf", size=2 * CHUNK_SIZE)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        honest = net.node("honest")
        await honest.install("m")
        await asyncio.to_thread(honest.holdings.scan)
        async with honest.client() as seeding, net.node("accuser").client() as accuser:
            await seeding.announce()
            chunks = await accuser.chunk_list("m")
            for _ in range(3):
                await accuser.report_bad(chunks.sha256, 0, honest.identity.peer_id)
            hub = net.models.hub
            peer = hub.holders[honest.identity.peer_id]
            for _ in range(200):  # each report makes the tracker ask the accused itself
                if seeding.served == 3 and not peer.inflight:
                    break  # (the verdict follows the answer without a yield)
                await asyncio.sleep(0.05)
            assert seeding.served == 3 and hub.stats.reported_bad == 3
            assert hub.holders[honest.identity.peer_id].strikes == 0


async def test_direct_endpoint_refuses_hostile_paths(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        data = write_gguf(tmp_path / "m.gguf", size=CHUNK_SIZE + 3)
        await import_file(net.models.catalog, net.models.chunks, tmp_path / "m.gguf", name="m")
        node: NetworkModels = net.node("n", chunk_port=0)
        await node.install("m")
        entry = (await node.catalog()).lookup("m")  # type: ignore[union-attr]
        assert entry is not None
        base = f"http://127.0.0.1:{node.port}/v1/chunks"
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                good = await http.get(f"{base}/{entry.sha256}/1/{entry.chunks[1]}")
                assert good.status_code == 200 and good.content == data[CHUNK_SIZE:]
                for path, status in (
                    (f"{entry.sha256}/0/{entry.chunks[1]}", 404),  # not that chunk
                    (f"{'ab' * 32}/0/{entry.chunks[0]}", 404),  # not held
                    (f"{entry.sha256}/-1/{entry.chunks[0]}", 400),
                    (f"{entry.sha256}/99999999/{entry.chunks[0]}", 400),
                    (f"ZZ/0/{entry.chunks[0]}", 400),
                    (f"..%2F..%2Fetc/0/{entry.chunks[0]}", 404),
                ):
                    response = await http.get(f"{base}/{path}")
                    assert response.status_code == status, (path, response.text)
                assert (
                    await http.get(f"http://127.0.0.1:{node.port}/v1/catalog")
                ).status_code == 404
        finally:
            await node.close()
