"""Signed node manifests: built and signed by the node, verified by the tracker."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.clock import now_ms
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import sign, verify
from lichen.identity.trust import TrustLevel
from lichen.wire.messages import MAX_MODELS, MAX_NAME, Hardware, Manifest, ManifestBody, ModelInfo

log = logging.getLogger(__name__)

_body_decoder = msgspec.msgpack.Decoder(ManifestBody)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# A manifest describes one node: its size is bounded like every other field (model
# count and name lengths by the ManifestBody types themselves).
MAX_MANIFEST_BYTES = 64 * 1024


def detect_hardware() -> Hardware:
    ram_mb = 0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return Hardware(cpu=cpu, cores=os.cpu_count() or 1, ram_mb=ram_mb)


def sign_manifest(
    device_key: Ed25519PrivateKey,
    *,
    name: str,
    peer_id: str,
    models: list[ModelInfo],
    engines: list[str],
    hardware: Hardware | None = None,
    trust: str = TrustLevel.COMMUNITY.value,
) -> Manifest:
    """Sign a manifest the tracker will accept: a model whose entry breaks the wire's
    bounds (an upstream's odd model name) is left out with a warning rather than getting
    the whole node refused, and so is every model past :data:`MAX_MODELS`."""
    body = ManifestBody(
        name=_CONTROL.sub(" ", name)[:MAX_NAME],
        peer_id=peer_id,
        hardware=hardware or detect_hardware(),
        models=_acceptable(models),
        engines=engines,
        issued_ms=now_ms(),
        trust=trust,
    )
    raw = msgspec.msgpack.encode(body)
    return Manifest(body=raw, signature=sign(device_key, raw))


def _acceptable(models: list[ModelInfo]) -> list[ModelInfo]:
    kept: list[ModelInfo] = []
    for model in models:
        try:
            msgspec.convert(msgspec.to_builtins(model), ModelInfo)
        except msgspec.ValidationError as exc:
            log.warning("not offering model %r: %s", model.name[:MAX_NAME], exc)
            continue
        kept.append(model)
    if len(kept) > MAX_MODELS:
        log.warning("offering the first %d of %d models", MAX_MODELS, len(kept))
    return kept[:MAX_MODELS]


def verify_manifest(manifest: Manifest, *, device_key: bytes, peer_id: str) -> ManifestBody:
    """Return the manifest body if it is signed by ``device_key`` and names ``peer_id``.

    Refused with MANIFEST_INVALID: a bad signature, a body over :data:`MAX_MANIFEST_BYTES`,
    more than :data:`~lichen.wire.messages.MAX_MODELS` models, over-long or malformed names.
    """
    if len(manifest.body) > MAX_MANIFEST_BYTES:
        raise LichenError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest of {len(manifest.body)} bytes exceeds {MAX_MANIFEST_BYTES}",
        )
    if not verify(device_key, manifest.signature, manifest.body):
        raise LichenError(ErrorCode.MANIFEST_INVALID, "manifest signature does not verify")
    try:
        body = _body_decoder.decode(manifest.body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise LichenError(ErrorCode.MANIFEST_INVALID, f"malformed manifest: {exc}") from exc
    if body.peer_id != peer_id:
        raise LichenError(ErrorCode.MANIFEST_INVALID, "manifest names another peer")
    return body
