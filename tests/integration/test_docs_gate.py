"""``/docs`` and ``/openapi.json`` take the operator gate; the page's assets stay open."""

from __future__ import annotations

import httpx

from lichen.http.operator import OperatorGate
from lichen.roles.gateway import GatewayOptions, build_gateway
from lichen.tracker.registry import Registry

TOKEN = "lop_" + "t" * 43


def gated_client() -> httpx.AsyncClient:
    app = build_gateway(
        GatewayOptions(max_request_bytes=4096, timeout_s=5.0),
        registry=Registry(),
        operator=OperatorGate("operator", TOKEN),
    ).app
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_docs_and_openapi_need_the_operator_token() -> None:
    async with gated_client() as http:
        for path in ("/docs", "/openapi.json"):
            assert (await http.get(path)).status_code == 401, path
            bad = await http.get(path, headers={"authorization": "Bearer lop_wrong"})
            assert bad.status_code == 403, path
            ok = await http.get(path, headers={"authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, path
        spec = (
            await http.get("/openapi.json", headers={"authorization": f"Bearer {TOKEN}"})
        ).json()
        assert "/v1/messages" in spec["paths"] and "/docs" not in spec["paths"]
        asset = await http.get("/docs/assets/swagger-ui.css")
        assert asset.status_code == 200 and asset.content
