"""The network's model catalog and chunk lists, signed with the network key.

The tracker publishes its catalog at ``GET /v1/catalog`` as JSON: the
signed ``document`` (JSON bytes, base64) with its Ed25519 signature, plus the
same models decoded for people. A node trusts only the document, and only if
the signature is by the network key it pinned when it joined. Chunk lists
travel on the transfer link as msgpack, signed the same way under their own
domain tag, so a signature over one can never pass for the other.
"""

from __future__ import annotations

import base64
import re
from pathlib import PurePosixPath
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import public_raw, sign, verify
from lichen.models.chunks import ChunkList, check_chunk_list, is_sha256

CATALOG_SIG_DOMAIN = b"lichen-model-catalog-v1\x00"
CHUNKS_SIG_DOMAIN = b"lichen-model-chunks-v1\x00"
MAX_CATALOG_BYTES = 16 * 1024 * 1024
MAX_CHUNK_LIST_BYTES = 3 * 1024 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # lichen.models.store.validate_name


class CatalogModel(msgspec.Struct, frozen=True, omit_defaults=True):
    """One model the network offers."""

    name: str  # catalog name, a valid store name
    sha256: str  # SHA-256 of the whole GGUF file
    size: int  # bytes (0 until a pull-through fetch has learnt it)
    filename: str  # file name nodes store it under
    source: str  # where the tracker gets it: pypi:..., a URL, a file URI, "upload"
    license: str = ""  # SPDX identifier
    description: str = ""
    context: int = 0  # trained context length in tokens, 0 if unknown
    capabilities: list[str] = []  # e.g. ["chat"], ["completion"]
    chunk_size: int = 0  # bytes per chunk, once the tracker holds the file
    chunks: list[str] = []  # SHA-256 per chunk, once the tracker holds the file
    cached: bool = False  # True: the tracker holds every chunk
    owner: str = ""  # account that uploaded it ("" for the operator)


class CatalogDocument(msgspec.Struct, frozen=True):
    network_key: str  # hex of the network's public key
    issued_ms: int  # when the tracker signed this document
    models: list[CatalogModel]

    def lookup(self, name: str) -> CatalogModel | None:
        folded = name.strip().lower()
        return next((m for m in self.models if m.name == folded), None)


class SignedChunkList(msgspec.Struct, frozen=True):
    document: bytes  # msgpack ChunkList
    signature: bytes  # network-key signature over CHUNKS_SIG_DOMAIN || document


def sign_catalog(network_key: Ed25519PrivateKey, doc: CatalogDocument) -> dict[str, Any]:
    """The JSON body of ``GET /v1/catalog``."""
    document = msgspec.json.encode(doc)
    return {
        "object": "catalog",
        "document": base64.b64encode(document).decode("ascii"),
        "signature": base64.b64encode(sign(network_key, CATALOG_SIG_DOMAIN + document)).decode(),
        "network_key": base64.b64encode(public_raw(network_key)).decode("ascii"),
        "signature_scheme": "ed25519 over 'lichen-model-catalog-v1\\0' + document",
        "models": [_public(m) for m in doc.models],
    }


def _public(model: CatalogModel) -> dict[str, Any]:
    body: dict[str, Any] = {f: getattr(model, f) for f in model.__struct_fields__}
    body["capabilities"] = list(model.capabilities)
    body["chunks"] = len(model.chunks)
    return body


def verify_catalog(body: Any, network_key: bytes) -> CatalogDocument:
    """Check a catalog body against the pinned ``network_key``; HANDSHAKE_FAILED if forged."""
    try:
        document = base64.b64decode(body["document"], validate=True)
        signature = base64.b64decode(body["signature"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "malformed model catalog") from None
    if len(document) > MAX_CATALOG_BYTES:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "model catalog is too large")
    if not verify(network_key, signature, CATALOG_SIG_DOMAIN + document):
        raise LichenError(
            ErrorCode.HANDSHAKE_FAILED,
            "the model catalog is not signed by this network's key; refusing it",
        )
    try:
        doc = msgspec.json.decode(document, type=CatalogDocument)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, f"malformed model catalog: {exc}") from None
    for model in doc.models:
        check_model(model)
    return doc


def safe_filename(filename: str) -> bool:
    """A plain, visible file name: no directories, no traversal, not a sidecar."""
    return (
        0 < len(filename) <= 255
        and PurePosixPath(filename).name == filename
        and "\\" not in filename
        and not filename.startswith(".")
        and filename not in ("model.json", "chunks.json")
    )


def check_model(model: CatalogModel) -> CatalogModel:
    """Refuse an entry a node could not safely store: PROTOCOL_ERROR."""
    valid = (
        _NAME.fullmatch(model.name) is not None
        and safe_filename(model.filename)
        and is_sha256(model.sha256)
        and model.size >= 0
        and all(is_sha256(c) for c in model.chunks)
    )
    if not valid:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, f"catalog entry {model.name[:64]!r} is invalid")
    return model


def sign_chunk_list(network_key: Ed25519PrivateKey, chunks: ChunkList) -> bytes:
    document = msgspec.msgpack.encode(chunks)
    signature = sign(network_key, CHUNKS_SIG_DOMAIN + document)
    return msgspec.msgpack.encode(SignedChunkList(document=document, signature=signature))


def verify_chunk_list(blob: bytes, network_key: bytes) -> ChunkList:
    """Decode and check a signed chunk list from the transfer link."""
    if len(blob) > MAX_CHUNK_LIST_BYTES:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "chunk list is too large")
    try:
        signed = msgspec.msgpack.decode(blob, type=SignedChunkList)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "malformed signed chunk list") from None
    if not verify(network_key, signed.signature, CHUNKS_SIG_DOMAIN + signed.document):
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "chunk list not signed by the network key")
    try:
        chunks = msgspec.msgpack.decode(signed.document, type=ChunkList)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "malformed chunk list") from None
    return check_chunk_list(chunks)
