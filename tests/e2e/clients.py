"""Clients for e2e tests against a gateway, as an anonymous caller.

The gateway serves callers without an API key (``allow_anonymous``, the
default), bounded by per-address limits. Tests that make many requests start
``lichen up`` with :data:`NO_ANONYMOUS_LIMITS`, and use an ``openai`` client
that sends no ``Authorization`` header (the client insists on a key, and the
gateway refuses an unknown one with 401).
"""

from __future__ import annotations

from typing import Any

import httpx
from openai import OpenAI

NO_ANONYMOUS_LIMITS = {
    "LICHEN_ANONYMOUS_REQUESTS_PER_MINUTE": "0",
    "LICHEN_ANONYMOUS_TOKENS_PER_DAY": "0",
}


def _drop_authorization(request: httpx.Request) -> None:
    request.headers.pop("authorization", None)


def anonymous_openai(base_url: str, **options: Any) -> OpenAI:
    """An ``openai`` client for ``base_url`` (``.../v1``) that calls without a key."""
    http = httpx.Client(event_hooks={"request": [_drop_authorization]}, timeout=120)
    return OpenAI(
        base_url=base_url, api_key="anonymous", max_retries=0, http_client=http, **options
    )
