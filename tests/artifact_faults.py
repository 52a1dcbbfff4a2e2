"""Damage a published model version the way a bad copy or a bad disk does, for the refusal tests."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import msgspec

from models import artifact


def corrupt_inside_npz(version: Path, member: str = "popularity.npy") -> None:
    """Flip one byte of ``member``'s data inside ``arrays.npz`` and re-hash the file in the manifest.

    The sha256 check then passes and the damage only shows when the zip member is read (``Bad CRC-32``).
    """
    path = version / artifact.ARRAYS
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    # np.savez stores members uncompressed: the data follows the 30-byte local header, name and extra field
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + name_len + extra_len + info.file_size - 1] ^= 0xFF
    path.write_bytes(bytes(data))
    rehash(version, artifact.ARRAYS)


def rehash(version: Path, name: str) -> None:
    """Record the current sha256 and size of ``name`` in the version's manifest."""
    blob = (version / name).read_bytes()
    m = artifact.read_manifest(version)
    files = dict(m.files)
    files[name] = artifact.FileEntry(hashlib.sha256(blob).hexdigest(), len(blob))
    manifest = msgspec.structs.replace(m, files=files)
    (version / artifact.MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
