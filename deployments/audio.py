"""Decoding any media file to the 16 kHz mono float32 samples Whisper expects."""

from __future__ import annotations

import io
import mmap
import struct
from pathlib import Path

import numpy as np

from deployments.errors import PayloadTooLarge, SourceFailed, UnsupportedAudio


def _media(source: bytes | str | Path) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def probe_seconds(source: bytes | str | Path) -> float | None:
    """The container's declared duration, read from its header without decoding; None when absent."""
    return _probe(source)[0]


def _probe(source: bytes | str | Path) -> tuple[float | None, int]:
    """The container's declared duration (None when absent) and its number of audio streams."""
    import av

    with av.open(_media(source), mode="r", metadata_errors="ignore") as container:
        declared = None if container.duration is None else container.duration / av.time_base
        return declared, len(container.streams.audio)


def decode(source: bytes | str | Path, sample_rate: int = 16000, param: str = "file",
           max_seconds: float | None = None) -> np.ndarray:
    """Decode a file path or in-memory bytes with ffmpeg (PyAV); typed errors for what is not audio.

    A declared duration past ``max_seconds`` is refused before decoding; the decoded length is checked
    too, for containers that declare none. ``param`` names the request field the bytes came from.
    """
    import av
    from faster_whisper.audio import decode_audio

    try:
        if _oversized_info_list(source):
            raise UnsupportedAudio("the media's RIFF INFO list claims more bytes than the whole file holds",
                                   param=param)
        declared, audio_streams = _probe(source)
        if audio_streams == 0:
            raise SourceFailed("the media has no audio stream", param=param, code="no_audio_stream")
        if declared is not None and max_seconds is not None and declared > max_seconds:
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


def _oversized_info_list(source: bytes | str | Path) -> bool:
    """Whether a RIFF ``LIST``/``INFO`` chunk (WAV, AVI) claims more bytes than the whole input holds.

    FFmpeg allocates and zeroes an INFO entry as large as its list claims, so a 20-byte trailer on a
    valid WAV would otherwise make each decode take gigabytes of memory and seconds of CPU.
    """
    if isinstance(source, bytes):
        return _claims_past_end(source)
    try:
        with open(source, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return _claims_past_end(view)
    except (OSError, ValueError):  # missing or empty: FFmpeg reports it
        return False


def _claims_past_end(data: bytes | mmap.mmap) -> bool:
    """Whether some ``LIST`` chunk of type ``INFO`` declares a size larger than ``data`` itself."""
    order = ">I" if data[:4] == b"RIFX" else "<I"
    at = data.find(b"LIST")
    while at != -1:
        if data[at + 8:at + 12] == b"INFO" and struct.unpack(order, data[at + 4:at + 8])[0] > len(data):
            return True
        at = data.find(b"LIST", at + 1)
    return False


def _too_long(seconds: float, limit: float, param: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"the audio is {seconds:.0f} s long; the limit is {limit:.0f} s", param=param,
                           code="audio_too_long")
