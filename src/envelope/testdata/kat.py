#!/usr/bin/env python3
"""Independent implementation of envelope v1 (docs/PROTOCOL.md) with the Python `cryptography`
package and hand-written protobuf encoding. It produces the known-answer files the Rust tests
compare against, so the Rust code is checked against the specification, not against itself.

    python3 src/envelope/testdata/kat.py   # rewrites kat_*.txt / kat_sealed.hex
"""
import hashlib
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED = bytes([0x11] * 32)
MASTER = bytes([0x42] * 32)
NONCE = bytes([0x07] * 12)
CONTEXT = b"mprelay/v1/submission"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data


def field_varint(num, value):
    return varint(num << 3) + varint(value) if value else b""


sk = Ed25519PrivateKey.from_private_bytes(SEED)
pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
device_id = hashlib.sha256(pk).digest()[:16].hex()
device_key = HKDF(
    algorithm=hashes.SHA256(),
    length=32,
    salt=b"mprelay/v1/device-key",
    info=device_id.encode() + b"\x00" + pk,
).derive(MASTER)

report = (
    field_bytes(1, b"ssh-hardening")
    + field_varint(2, 3)
    + field_bytes(3, b"SSH hardening")
    + field_varint(4, 1_760_000_000_000)
)
submission = (
    field_bytes(1, b"0190f2d4-8c3b-7f00-9c1e-2b8f3e4a5d6c")
    + field_bytes(2, device_id.encode())
    + field_varint(3, 1_760_000_000_000)
    + field_bytes(10, report)
)
signature = sk.sign(CONTEXT + b"\x00" + submission)
signed = field_bytes(1, submission) + field_bytes(2, signature)
epoch = 1
aad = CONTEXT + b"\x00" + device_id.encode() + b"\x00" + epoch.to_bytes(4, "big")
ciphertext = AESGCM(device_key).encrypt(NONCE, signed, aad)
sealed = (
    field_varint(1, 1)
    + field_bytes(2, device_id.encode())
    + field_varint(3, epoch)
    + field_bytes(4, pk)
    + field_bytes(5, NONCE)
    + field_bytes(6, ciphertext)
)

here = os.path.dirname(os.path.abspath(__file__))
for name, value in [
    ("kat_device_id.txt", device_id),
    ("kat_device_key.txt", device_key.hex()),
    ("kat_sealed.hex", sealed.hex()),
]:
    with open(os.path.join(here, name), "w") as f:
        f.write(value + "\n")
print(device_id)
