"""The data that travels between deployments (pydantic, so it pickles and validates the same way)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SourceMode = Literal["auto", "captions", "asr"]
"""Where a transcript may come from: captions first then ASR, captions only, or ASR only."""


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float | None = None
    speaker: str | None = None
    """Who said it, when the transcript was diarized."""


class Segment(BaseModel):
    """A timed piece of transcript; the decoder's scores are present only for ASR segments."""

    id: int = 0
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    words: list[Word] | None = None
    speaker: str | None = None
    """Who said it, when the transcript was diarized."""
    language: str | None = None
    """The language its window was decoded in (ASR segments): a talk that changes language keeps each part's."""


class TranscribeOptions(BaseModel):
    """Per-request decoding options; ``None`` means the replica's configured default."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    language: str | None = Field(None, min_length=2, max_length=8)
    task: Literal["transcribe", "translate"] = "transcribe"
    beam_size: int | None = Field(None, ge=1, le=10)
    vad_filter: bool | None = None
    word_timestamps: bool = False
    timestamps: bool = True
    """Segment times; an answer that shows none (``json``, ``text``) is decoded without aligning them."""
    initial_prompt: str | None = Field(None, max_length=2000)
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    diarize: bool = False
    """Also send each window to the Diarizer (its speech embedded beside the transcription)."""
    min_speakers: int | None = Field(None, ge=1)
    """When diarizing, find at least this many speakers (asked, or the number of known speakers named)."""
    max_speakers: int | None = Field(None, ge=1)
    """When diarizing, find at most this many speakers."""


class Transcription(BaseModel):
    """What the transcriber returns for one audio input."""

    model: str
    language: str
    language_probability: float | None = None
    duration: float
    text: str
    segments: list[Segment]


class Passage(BaseModel):
    """A window of transcript text with its time span, and its embedding when computed."""

    start: float
    end: float
    text: str
    vector: list[float] | None = None
    speaker: str | None = None
    """Its one speaker, when diarized: a passage never spans a change of speaker."""


class Resolved(BaseModel):
    """What the downloader found for a source: captions ready to use, or audio whose windows follow.

    For ``audio`` the downloader's stream goes on with ``AudioWindow`` items and ends with ``AudioEnd``;
    ``duration`` here is what the source declared (0 when it declared nothing).
    """

    key: str
    url: str | None = None
    title: str | None = None
    duration: float
    kind: Literal["captions", "audio"]
    language: str | None = None
    captions: list[Segment] | None = None
    translated_from: str | None = None
    """For captions YouTube machine-translated into ``language``: the language of the track they came from."""


class AudioWindow(BaseModel):
    """A stretch of speech (at most ``downloader.window_s``), cut at silences, starting ``start`` s into the source.

    ``samples`` are 16 kHz mono float32. They travel inside Ray's return values and arguments (large ones
    through the object store), never as a local file path, so the transcriber can be on any node. They
    are not wrapped in a nested ``ray.put`` reference: under concurrent load that hits a
    reference-counting race in Ray (ray-project/ray#58080) and loses the object.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    start: float
    samples: Any


class SpeechEmbeddings(BaseModel):
    """A window's speech as the Diarizer embedded it: each span's (start, end) in seconds and its voice vector.

    Small (a 192-float vector per ~0.6 s of speech), so a whole lecture's worth travels and is clustered at
    its end without the audio.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spans: list[tuple[float, float]]
    vectors: Any
    """float32 array, one row per span."""

    def shifted(self, offset: float) -> SpeechEmbeddings:
        """The same embeddings with span times moved ``offset`` seconds later."""
        return SpeechEmbeddings(spans=[(a + offset, b + offset) for a, b in self.spans], vectors=self.vectors)


class Turn(BaseModel):
    """A stretch of time in which one speaker talks."""

    start: float
    end: float
    speaker: str


class Reference(BaseModel):
    """A known speaker's name and a short sample of their voice (any media format, as uploaded)."""

    name: str
    audio: bytes


class TranscribedWindow(BaseModel):
    """A window's transcription (times from the window's start) and where the window starts in its source."""

    start: float
    transcription: Transcription
    speech: SpeechEmbeddings | None = None
    """The window's speaker embeddings (times from the window's start), when diarization was asked for."""


class AudioEnd(BaseModel):
    """The last item of an audio stream: how long the decoded audio was."""

    duration: float


class TranscriptSpec(BaseModel):
    """One source to turn into a transcript, as the graph takes it from an HTTP request or a job's item."""

    url: str
    source: SourceMode = "auto"
    language: str | None = None
    model: str | None = None
    embed: bool = True
    diarize: bool = False
    translate: bool = False
    """Also make an English version of speech in another language (``TranscriptPipeline.translation``)."""


class JobSpec(BaseModel):
    """What a job's items share, as the store keeps it (an older record's extra keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    source: SourceMode = "auto"
    model: str | None = None
    language: str | None = None
    diarize: bool = False
    translate: bool = False


class Embeddings(BaseModel):
    """Vectors for a list of texts, with their dimension and how many tokens the texts made."""

    vectors: list[list[float]]
    dimension: int
    tokens: int


class TimedText(BaseModel):
    start: float
    end: float
    text: str
    speaker: str | None = None


class Transcript(BaseModel):
    """A source's transcript and its passages' text, as the graph makes it and the store keeps it."""

    id: str
    url: str | None
    title: str | None
    duration_s: float
    source: Literal["captions", "asr"]
    language: str | None
    translated_from: str | None = None
    """Captions YouTube machine-translated into ``language`` name the track's own language here."""
    model: str | None
    text: str
    segments: list[TimedText]
    chunks: list[TimedText]
    embedding_dim: int | None
