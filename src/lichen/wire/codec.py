"""Framing: a versioned, size-capped envelope around one message, as msgpack."""

from __future__ import annotations

import msgspec

from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import PROTOCOL_VERSION, Message

MAX_FRAME_BYTES = 4 * 1024 * 1024


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    v: int  # protocol version
    msg: Message


class _VersionOnly(msgspec.Struct, array_like=True):
    v: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)
_version_decoder = msgspec.msgpack.Decoder(_VersionOnly)


def encode(msg: Message, *, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    try:
        frame = _encoder.encode(Envelope(PROTOCOL_VERSION, msg))
    except (OverflowError, msgspec.EncodeError, TypeError) as exc:  # e.g. an int over 2**64
        raise LichenError(
            ErrorCode.PROTOCOL_ERROR, f"cannot encode a {type(msg).__name__}"
        ) from exc
    if len(frame) > max_bytes:
        raise LichenError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {max_bytes}"
        )
    return frame


def decode(frame: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Decode one frame; raise a typed LichenError for anything malformed."""
    if len(frame) > max_bytes:
        raise LichenError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {max_bytes}"
        )
    try:
        envelope = _decoder.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        try:
            version = _version_decoder.decode(frame).v
        except (msgspec.ValidationError, msgspec.DecodeError):
            version = PROTOCOL_VERSION
        if version != PROTOCOL_VERSION:
            raise LichenError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported (this side speaks "
                f"{PROTOCOL_VERSION})",
            ) from exc
        raise LichenError(ErrorCode.PROTOCOL_ERROR, f"malformed frame: {exc}") from exc
    if envelope.v != PROTOCOL_VERSION:
        raise LichenError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {envelope.v} is not supported (this side speaks {PROTOCOL_VERSION})",
        )
    return envelope.msg


def check(msg: Message, *, max_bytes: int = MAX_FRAME_BYTES) -> None:
    """Raise the LichenError the receiving side would raise for ``msg`` (out-of-range values,
    oversized frames), so a sender can refuse it instead of sending a frame that closes the link.
    """
    decode(encode(msg, max_bytes=max_bytes), max_bytes=max_bytes)
