"""Engine fingerprints: same weights and defaults → same string; any change → another."""

from __future__ import annotations

from pathlib import Path

import pytest

from seesay.engine.fingerprint import engine_fingerprint, file_identity, folder_identities


def write(path: Path, size: int, flip_at: int | None = None) -> Path:
    data = bytearray(i % 251 for i in range(size))
    if flip_at is not None:
        data[flip_at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_identity_sees_changes_anywhere_in_a_small_file(tmp_path: Path) -> None:
    base = file_identity(write(tmp_path / "a.safetensors", 200_000))
    assert base == file_identity(write(tmp_path / "b.safetensors", 200_000))
    assert base != file_identity(write(tmp_path / "c.safetensors", 200_000, flip_at=199_999))


def test_identity_samples_large_files_across_their_length(tmp_path: Path) -> None:
    size = 8 * 1024 * 1024
    base = file_identity(write(tmp_path / "a.safetensors", size))
    # A change inside the sample that starts at the middle of the file.
    assert base != file_identity(write(tmp_path / "b.safetensors", size, flip_at=size // 2 + 10))


def test_folder_identities_cover_weight_files_only(tmp_path: Path) -> None:
    write(tmp_path / "model-00001.safetensors", 1000)
    write(tmp_path / "model-00002.safetensors", 1000)
    (tmp_path / "config.json").write_text("{}")
    assert sorted(folder_identities(tmp_path)) == ["model-00001.safetensors", "model-00002.safetensors"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no weight files"):
        folder_identities(empty)


def test_fingerprint_changes_with_weights_and_defaults() -> None:
    base = engine_fingerprint("demo", {"m.safetensors": "1:aa"}, {"temperature": 0.7})
    assert base.startswith("demo@")
    assert base == engine_fingerprint("demo", {"m.safetensors": "1:aa"}, {"temperature": 0.7})
    assert base != engine_fingerprint("demo", {"m.safetensors": "1:ab"}, {"temperature": 0.7})
    assert base != engine_fingerprint("demo", {"m.safetensors": "1:aa"}, {"temperature": 0.0})
