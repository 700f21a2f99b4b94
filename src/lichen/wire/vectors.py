"""Embedding vectors on the wire: packed little-endian float32, as OpenAI's base64 form."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

from lichen.errors import ErrorCode, LichenError


def pack_vector(values: Sequence[float]) -> bytes:
    """``values`` as little-endian float32 bytes."""
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_vector(data: bytes) -> list[float]:
    """The floats in a packed vector; refuses bytes that are not whole float32 values."""
    if len(data) % 4:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "a packed vector must be a multiple of 4 bytes")
    values = array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()
