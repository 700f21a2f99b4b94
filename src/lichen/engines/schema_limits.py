"""How large and complex a JSON schema may be before a node compiles it into a grammar.

A node compiles ``response_format`` and tool-parameter schemas into a grammar inside
its engine loop, where the cost grows faster than the schema (a 20,000-value ``enum``
stalled a node for minutes). :func:`check_schema` bounds the schema's size and
complexity; the gateway applies it to every request
(:mod:`lichen.gateway.limits`) and a node's engine applies it again
(:mod:`lichen.engines.grammar_guard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lichen.errors import ErrorCode, LichenError

_ALTERNATIVES = ("anyOf", "oneOf", "allOf", "prefixItems")
_REPETITIONS = (
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)


@dataclass(frozen=True, slots=True)
class SchemaLimits:
    """How large and complex a JSON schema (``response_format``, tool parameters) may be."""

    max_bytes: int = 16_384  # the schema as JSON text
    max_nodes: int = 1_024  # objects, arrays and scalars in the schema, all together
    max_depth: int = 16  # nesting of objects and arrays
    max_enum: int = 32  # ``enum`` values in the whole schema, all enums together
    max_properties: int = 64  # ``properties`` in the whole schema (optional ones cost most)
    max_alternatives: int = 16  # members of one anyOf / oneOf / allOf / prefixItems
    max_repetition: int = 256  # any minItems / maxItems / minLength / maxLength ...
    max_pattern_chars: int = 256  # one ``pattern`` (or patternProperties key)


def _invalid(message: str, param: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_REQUEST, message, param=param)


def check_schema(schema: Any, limits: SchemaLimits, param: str) -> None:
    """Refuse (400) a JSON schema too large or complex to compile into a grammar cheaply."""
    if not isinstance(schema, dict | bool):
        raise _invalid("a JSON schema must be an object", param)
    nodes = enums = properties = 0
    size = 0  # about the schema's length as JSON text, without encoding it (no recursion)
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        size += len(value) + 3 if isinstance(value, str) else 2
        if nodes > limits.max_nodes:
            raise _invalid(f"the JSON schema may have at most {limits.max_nodes} nodes", param)
        if depth > limits.max_depth:
            raise _invalid(f"the JSON schema may nest at most {limits.max_depth} levels", param)
        if isinstance(value, dict):
            enum, props = _check_keywords(value, limits, param)
            enums, properties = enums + enum, properties + props
            if enums > limits.max_enum:
                raise _invalid(
                    f"a JSON schema may have at most {limits.max_enum} enum values in all", param
                )
            if properties > limits.max_properties:
                raise _invalid(
                    f"a JSON schema may have at most {limits.max_properties} properties in all",
                    param,
                )
            size += sum(len(str(key)) + 4 for key in value)
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
        if size > limits.max_bytes:
            raise _invalid(f"the JSON schema may be at most {limits.max_bytes} bytes", param)


def _check_keywords(node: dict[str, Any], limits: SchemaLimits, param: str) -> tuple[int, int]:
    """Check one schema object's keywords; returns its (enum values, properties)."""
    for keyword in _ALTERNATIVES:
        members = node.get(keyword)
        if isinstance(members, list) and len(members) > limits.max_alternatives:
            raise _invalid(f"{keyword} may have at most {limits.max_alternatives} members", param)
    for keyword in _REPETITIONS:
        bound: Any = node.get(keyword)
        numeric = isinstance(bound, int | float) and not isinstance(bound, bool)
        if numeric and not 0 <= bound <= limits.max_repetition:
            raise _invalid(f"{keyword} must be between 0 and {limits.max_repetition}", param)
    patterns: list[Any] = [node.get("pattern")]
    properties = node.get("patternProperties")
    if isinstance(properties, dict):
        patterns.extend(properties)
    for pattern in patterns:
        if isinstance(pattern, str) and len(pattern) > limits.max_pattern_chars:
            raise _invalid(f"a pattern may be at most {limits.max_pattern_chars} characters", param)
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        raise _invalid("only local $ref values ('#/...') are allowed in a JSON schema", param)
    enum, properties = node.get("enum"), node.get("properties")
    return (
        len(enum) if isinstance(enum, list) else 0,
        len(properties) if isinstance(properties, dict) else 0,
    )
