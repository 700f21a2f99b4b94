"""Signed node manifests: built and signed by the node, verified by the tracker."""

from __future__ import annotations

import contextlib
import os
import platform
import time

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import sign, verify
from lichen.wire.messages import Hardware, Manifest, ManifestBody, ModelInfo

_body_decoder = msgspec.msgpack.Decoder(ManifestBody)


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
    trust: str = "community",
) -> Manifest:
    body = ManifestBody(
        name=name,
        peer_id=peer_id,
        hardware=hardware or detect_hardware(),
        models=models,
        engines=engines,
        issued_ms=int(time.time() * 1000),
        trust=trust,
    )
    raw = msgspec.msgpack.encode(body)
    return Manifest(body=raw, signature=sign(device_key, raw))


def verify_manifest(manifest: Manifest, *, device_key: bytes, peer_id: str) -> ManifestBody:
    """Return the manifest body if it is signed by ``device_key`` and names ``peer_id``."""
    if not verify(device_key, manifest.signature, manifest.body):
        raise LichenError(ErrorCode.MANIFEST_INVALID, "manifest signature does not verify")
    try:
        body = _body_decoder.decode(manifest.body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise LichenError(ErrorCode.MANIFEST_INVALID, f"malformed manifest: {exc}") from exc
    if body.peer_id != peer_id:
        raise LichenError(ErrorCode.MANIFEST_INVALID, "manifest names another peer")
    return body
