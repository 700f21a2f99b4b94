"""A node's own bound on grammar work, checked before a request reaches llama.cpp.

llama.cpp compiles a ``response_format`` JSON schema (and the parameter schemas
of forced tool calls) into a grammar when the request starts on a slot, inside
its single engine loop: while that runs, every other request on the node waits.
Measured here (SmolLM2-135M, 1 thread, ``bench/grammar_cost.py``): the
schema-to-grammar conversion in the calling thread takes milliseconds even for
a 20,000-value ``enum`` (this wheel hands the schema to llguidance as is), but
the time to the first token grows superlinearly with the number of ``enum``
values: 0.14 s at 100, 0.9 s at 500, 2.3 s at 1,000, 9 s at 2,000. The cost
cannot be stopped once it started, so the node refuses before:

1. the schema's size and complexity against the node's own
   :class:`~lichen.engines.schema_limits.SchemaLimits` (the gateway checks the same
   at the edge; a node does not rely on that);
2. the conversion itself, in a worker thread under a time budget
   (``grammar_budget_s``), so a schema the converter rejects or chews on is
   refused with ``400 invalid_request_error`` (param ``response_format``)
   without ever entering the engine loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lichen.engines.schema_limits import SchemaLimits, check_schema
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import GenerationRequest

Converter = Callable[[str], str]


def _xllamacpp_converter(schema_json: str) -> str:
    import xllamacpp

    return str(xllamacpp.json_schema_to_grammar(schema_json))


@dataclass(frozen=True)
class GrammarGuard:
    """Refuse grammar work that would stall the engine loop."""

    limits: SchemaLimits = field(default_factory=SchemaLimits)
    budget_s: float = 2.0
    convert: Converter = _xllamacpp_converter

    async def check(self, request: GenerationRequest) -> None:
        """Raise ``LichenError(INVALID_REQUEST)`` for a schema too costly to compile."""
        p = request.params
        for schema, param in _schemas(p.response_format, p.tools):
            check_schema(schema, self.limits, param)
            await self._convert(schema, param)

    async def _convert(self, schema: Any, param: str) -> None:
        text = json.dumps(schema)
        try:
            async with asyncio.timeout(self.budget_s):
                await asyncio.to_thread(self.convert, text)
        except TimeoutError:
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"the JSON schema is too costly to compile (over {self.budget_s:g}s on this node)",
                param=param,
            ) from None
        except (ValueError, RuntimeError) as exc:
            # The converter's message quotes the schema: the client sees it, no log does.
            raise LichenError(
                ErrorCode.INVALID_REQUEST, f"invalid JSON schema: {exc}", param=param
            ) from None


def _schemas(response_format: str | None, tools: str | None) -> list[tuple[Any, str]]:
    """The JSON schemas a request would have the engine compile, with their parameter."""
    found: list[tuple[Any, str]] = []
    if response_format:
        fmt = _loads(response_format, "response_format")
        if isinstance(fmt, dict):
            wrapper = fmt.get("json_schema")
            if isinstance(wrapper, dict) and "schema" in wrapper:
                found.append((wrapper["schema"], "response_format"))
            elif "schema" in fmt:
                found.append((fmt["schema"], "response_format"))
    if tools:
        listed = _loads(tools, "tools")
        for tool in listed if isinstance(listed, list) else []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and function.get("parameters") is not None:
                found.append((function["parameters"], "tools"))
    return found


def _loads(text: str, param: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise LichenError(
            ErrorCode.INVALID_REQUEST, f"{param} is not valid JSON", param=param
        ) from None
