"""The application's configuration: the ``args`` of a Serve config file, validated at start-up.

The graph's sections live with the graph (``deployments.settings``); this module adds the ingress's own
section and composes them. Unknown keys are refused, so a typo in YAML fails with the key's name.
"""

from __future__ import annotations

from pydantic import Field

from deployments.settings import (
    DiarizerSettings,
    DownloaderSettings,
    EmbedderSettings,
    JobSettings,
    Section,
    StoreSettings,
    TranscriberSettings,
)


class IngressSettings(Section):
    """HTTP-facing behaviour of the ingress."""

    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0)
    default_embed: bool = True
    max_embedding_inputs: int = Field(2048, ge=1, description="Strings one /v1/embeddings request may carry.")
    max_embedding_chars: int = Field(32768, ge=1, description="Characters one embedding input may have.")
    api_key_hashes: list[str] = Field(default_factory=list, description="Allowed keys as 'sha256:<hex>'.")
    api_keys_env: str | None = Field(None, description="An environment variable holding comma-separated keys.")
    api_keys_file: str | None = Field(None, description="A secret file with one key (or sha256: hash) a line.")
    rate_limit_per_minute: int | None = Field(None, ge=1, description="Requests a minute per key (per replica).")


class RealtimeSettings(Section):
    """Live transcription sessions (``/v1/realtime``): how many, how long, how much at once."""

    max_sessions: int = Field(8, ge=0, description="Sessions open at once per Ingress replica; past it, refused.")
    max_session_s: float = Field(3600, gt=0, description="Longest a session may stay open.")
    idle_timeout_s: float = Field(60, gt=0, description="A session that sends nothing this long is closed.")
    max_append_bytes: int = Field(1024 * 1024, gt=0, description="Audio bytes one input_audio_buffer.append may carry.")
    delta_interval_s: float = Field(1.0, gt=0, description="New audio after which a turn in progress is decoded again.")
    max_partials_in_flight: int = Field(
        4, ge=1, description="Decodings of turns in progress (for deltas) at once per Ingress replica; past it a "
        "session's next delta waits, so committed turns keep the decoders.")


class AppSettings(Section):
    """The whole application's ``args``."""

    ingress: IngressSettings = Field(default_factory=IngressSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    downloader: DownloaderSettings = Field(default_factory=DownloaderSettings)
    transcriber: TranscriberSettings = Field(default_factory=TranscriberSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    diarizer: DiarizerSettings | None = Field(
        None, description="Who spoke when (a Diarizer deployment); absent: requests with diarize=true are refused."
    )
