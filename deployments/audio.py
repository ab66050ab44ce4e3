"""Decoding any media file to the 16 kHz mono float32 samples Whisper expects."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from deployments.errors import SourceFailed, UnsupportedAudio


def decode(source: bytes | str | Path, sample_rate: int = 16000, param: str = "file") -> np.ndarray:
    """Decode a file path or in-memory bytes with ffmpeg (PyAV); typed errors for what is not audio.

    ``param`` names the request field the bytes came from, for the error.
    """
    import av
    from faster_whisper.audio import decode_audio

    data = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        samples = decode_audio(data, sampling_rate=sample_rate)
    except (av.FFmpegError, ValueError, IndexError, StopIteration, EOFError) as error:
        raise UnsupportedAudio(f"the media could not be decoded as audio ({type(error).__name__})",
                               param=param) from error
    if samples.size == 0:
        raise SourceFailed("the media holds no audio samples", param=param, code="no_audio_stream")
    return samples
