"""Decoding any media file to the 16 kHz mono float32 samples Whisper expects."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from deployments.errors import PayloadTooLarge, SourceFailed, UnsupportedAudio


def _media(source: bytes | str | Path) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def probe_seconds(source: bytes | str | Path) -> float | None:
    """The container's declared duration, read from its header without decoding; None when absent."""
    import av

    with av.open(_media(source), mode="r", metadata_errors="ignore") as container:
        if container.duration is None:
            return None
        return container.duration / av.time_base


def decode(source: bytes | str | Path, sample_rate: int = 16000, param: str = "file",
           max_seconds: float | None = None) -> np.ndarray:
    """Decode a file path or in-memory bytes with ffmpeg (PyAV); typed errors for what is not audio.

    A declared duration past ``max_seconds`` is refused before decoding; the decoded length is checked
    too, for containers that declare none. ``param`` names the request field the bytes came from.
    """
    import av
    from faster_whisper.audio import decode_audio

    try:
        declared = probe_seconds(source) if max_seconds is not None else None
        if declared is not None and declared > max_seconds:
            raise _too_long(declared, max_seconds, param)
        samples = decode_audio(_media(source), sampling_rate=sample_rate)
    except (av.FFmpegError, ValueError, IndexError, StopIteration, EOFError) as error:
        raise UnsupportedAudio(f"the media could not be decoded as audio ({type(error).__name__})",
                               param=param) from error
    if samples.size == 0:
        raise SourceFailed("the media holds no audio samples", param=param, code="no_audio_stream")
    if max_seconds is not None and samples.size / sample_rate > max_seconds:
        raise _too_long(samples.size / sample_rate, max_seconds, param)
    return samples


def _too_long(seconds: float, limit: float, param: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"the audio is {seconds:.0f} s long; the limit is {limit:.0f} s", param=param,
                           code="audio_too_long")
