"""A node's direct chunk endpoint, for peers that can reach it (opt-in: ``chunk_port``).

Nodes behind NAT share chunks through the tracker's relay. A node that accepts
connections can also serve them itself: it announces its port in ``SwarmHave``,
the tracker sends requesters there (``ChunkAt``, with the address it sees the
node at), and the tracker's egress stays out of it. Only chunks of models this
node holds are served, re-hashed before they leave; model files are public data
in every preset policy, so the endpoint needs no credentials. The requester
verifies every chunk; a bad one is reported (``ChunkBad``) and the tracker checks
the accused holder itself before it strikes it.

    GET /v1/chunks/{model sha256}/{index}/{chunk sha256}  -> the bytes, or 404
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse, Response

from lichen.http.errors import install_error_handlers
from lichen.models.chunks import MAX_CHUNKS
from lichen.models.holdings import Holdings
from lichen.server import HttpServer

log = logging.getLogger(__name__)

CHUNKS_PATH = "/v1/chunks"
MAX_CONCURRENT = 8  # chunk reads at once; beyond that peers get 503 and ask elsewhere
HEX64 = r"^[0-9a-f]{64}$"


def chunk_app(holdings: Holdings) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)  # bad paths are typed 400s, like every Lichen API
    busy = asyncio.Semaphore(MAX_CONCURRENT)

    async def chunk(
        model: str = Path(pattern=HEX64),
        index: int = Path(ge=0, lt=MAX_CHUNKS),
        sha256: str = Path(pattern=HEX64),
    ) -> Response:
        if busy.locked():
            return JSONResponse({"error": "busy"}, status_code=503)
        async with busy:
            data = await asyncio.to_thread(holdings.read, model, index, sha256)
        if data is None:
            return JSONResponse({"error": "not held here"}, status_code=404)
        return Response(data, media_type="application/octet-stream")

    app.add_api_route(CHUNKS_PATH + "/{model}/{index}/{sha256}", chunk, methods=["GET"])
    return app


class ChunkServer:
    """The endpoint above on ``host:port`` (port 0: any free port)."""

    def __init__(self, holdings: Holdings, *, host: str, port: int) -> None:
        self._http = HttpServer(chunk_app(holdings), host=host, port=port)
        self.port = 0

    async def start(self) -> int:
        self.port = await self._http.start()
        log.info("serving model chunks to peers directly on port %d", self.port)
        return self.port

    async def stop(self) -> None:
        await self._http.stop()
