"""Reading small POST bodies: urlencoded forms or JSON objects (no multipart)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.requests import Request

from lichen.errors import ErrorCode, LichenError

MAX_FORM_BYTES = 16 * 1024


async def read_fields(request: Request) -> dict[str, str]:
    """The body's fields as strings (last value wins); 400 for anything else."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise LichenError(ErrorCode.REQUEST_TOO_LARGE, "form too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise LichenError(ErrorCode.INVALID_JSON, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise LichenError(ErrorCode.INVALID_REQUEST, "expected a JSON object")
        return {str(k): _text(v) for k, v in data.items()}
    if kind in ("application/x-www-form-urlencoded", ""):
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}
    raise LichenError(ErrorCode.INVALID_REQUEST, f"unsupported content type {kind!r}")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else ""
    return "" if value is None else str(value)


def checked(fields: dict[str, str], name: str) -> bool:
    return fields.get(name, "").lower() in ("on", "true", "1", "yes")
