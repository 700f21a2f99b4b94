"""Signed node manifests: what the node signs is exactly what the tracker accepts."""

from __future__ import annotations

import msgspec
import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, peer_id, public_raw, sign
from lichen.wire import codec
from lichen.wire.manifest import detect_hardware, sign_manifest, verify_manifest
from lichen.wire.messages import Hardware, Manifest, ManifestBody, ModelInfo

MODELS = [
    ModelInfo(name="smollm2-135m", sha256="ab" * 32, engine="llamacpp", context=2048, slots=8)
]


def _signed() -> tuple[Manifest, bytes, str]:
    key = generate_key()
    device = public_raw(key)
    pid = peer_id(device)
    manifest = sign_manifest(
        key,
        name="n1",
        peer_id=pid,
        models=MODELS,
        engines=["llamacpp"],
        hardware=Hardware(cpu="test cpu", cores=2, ram_mb=1024),
    )
    return manifest, device, pid


def test_signed_manifest_verifies_after_a_trip_over_the_wire() -> None:
    manifest, device, pid = _signed()
    received = codec.decode(codec.encode(manifest))
    assert isinstance(received, Manifest)
    body = verify_manifest(received, device_key=device, peer_id=pid)
    assert body.name == "n1"
    assert body.peer_id == pid
    assert body.models == MODELS
    assert body.engines == ["llamacpp"]
    assert body.hardware.cores == 2
    assert body.issued_ms > 0


def _refused(manifest: Manifest, device: bytes, pid: str) -> LichenError:
    with pytest.raises(LichenError) as info:
        verify_manifest(manifest, device_key=device, peer_id=pid)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    return info.value


def test_tampered_body_is_refused() -> None:
    manifest, device, pid = _signed()
    body = msgspec.msgpack.decode(manifest.body, type=ManifestBody)
    forged = msgspec.structs.replace(body, models=[*body.models, MODELS[0]])
    tampered = Manifest(body=msgspec.msgpack.encode(forged), signature=manifest.signature)
    _refused(tampered, device, pid)


def test_flipped_signature_bit_is_refused() -> None:
    manifest, device, pid = _signed()
    sig = bytearray(manifest.signature)
    sig[0] ^= 1
    _refused(Manifest(body=manifest.body, signature=bytes(sig)), device, pid)


def test_manifest_signed_by_another_device_is_refused() -> None:
    manifest, _device, pid = _signed()
    other = public_raw(generate_key())
    _refused(manifest, other, pid)


def test_manifest_naming_another_peer_is_refused() -> None:
    manifest, device, _pid = _signed()
    error = _refused(manifest, device, peer_id(public_raw(generate_key())))
    assert "another peer" in error.message


def test_signed_garbage_body_is_refused_as_malformed() -> None:
    key = generate_key()
    device = public_raw(key)
    garbage = b"\x93\x01\x02"
    error = _refused(Manifest(body=garbage, signature=sign(key, garbage)), device, peer_id(device))
    assert "malformed" in error.message


def test_detect_hardware_reports_this_machine() -> None:
    hw = detect_hardware()
    assert hw.cores >= 1
    assert hw.ram_mb > 0
    assert hw.cpu
