"""Decoding any media file to the 16 kHz mono float32 samples Whisper expects."""

from __future__ import annotations

import io
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deployments.errors import PayloadTooLarge, SourceFailed, UnsupportedAudio

SAMPLE_RATE = 16000
"""What Whisper hears: every decoded sample and every window is at this rate."""

TRUNCATION_MIN_DECLARED_S = 3.0
"""Declared durations under this are not compared with the decoded audio: a short clip may be whole or not."""
TRUNCATION_MIN_FRACTION = 0.5
"""Audio whose decoded length is under this share of its declared duration was cut short (a download or
upload that stopped): 422 ``truncated_audio``, not a transcript of what little decodes. Half leaves room
for the durations ffmpeg estimates from the bitrate when a file has no frame index."""


def _media(source: bytes | str | Path) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def _probe(source: bytes | str | Path) -> tuple[float | None, int]:
    """The declared duration of the first audio stream, else of the container (None when neither says),
    and the number of audio streams."""
    import av

    with av.open(_media(source), mode="r", metadata_errors="ignore") as container:
        audio = container.streams.audio
        if audio and audio[0].duration is not None and audio[0].time_base is not None:
            return float(audio[0].duration * audio[0].time_base), len(audio)
        declared = None if container.duration is None else container.duration / av.time_base
        return declared, len(audio)


def decode_blocks(source: bytes | str | Path, sample_rate: int = SAMPLE_RATE, param: str = "file",
                  max_seconds: float | None = None, block_s: float = 120.0) -> Iterator[np.ndarray]:
    """Decode a file path or in-memory bytes with ffmpeg (PyAV), ``block_s`` seconds of samples at a time.

    Only one block is held, so a long lecture never sits whole in memory. Failures are typed: what is not
    audio, a declared duration past ``max_seconds`` (refused before decoding), decoded audio that runs
    past it (for containers that declare none), and audio far shorter than declared (``truncated``, raised
    after the last block). ``param`` names the request field the bytes came from.
    """
    import av

    try:
        if _oversized_info_list(source):
            raise UnsupportedAudio("the media's RIFF INFO list claims more bytes than the whole file holds",
                                   param=param)
        declared, audio_streams = _probe(source)
        if audio_streams == 0:
            raise SourceFailed("the media has no audio stream", param=param, code="no_audio_stream")
        if declared is not None and max_seconds is not None and declared > max_seconds:
            raise _too_long(declared, max_seconds, param)
        decoded = 0
        for block in _pcm_blocks(source, sample_rate, int(block_s * sample_rate)):
            decoded += block.size
            if max_seconds is not None and decoded / sample_rate > max_seconds:
                raise _too_long(decoded / sample_rate, max_seconds, param)
            yield block
    except (av.FFmpegError, ValueError, IndexError, StopIteration, EOFError) as error:
        raise UnsupportedAudio(f"the media could not be decoded as audio ({type(error).__name__})",
                               param=param) from error
    if decoded == 0:
        raise SourceFailed("the media holds no audio samples", param=param, code="no_audio_stream")
    if truncated(declared, decoded / sample_rate):
        raise SourceFailed(f"the media is truncated: its header declares {declared:.1f} s of audio but only "
                           f"{decoded / sample_rate:.1f} s decode", param=param, code="truncated_audio")


def truncated(declared: float | None, decoded: float) -> bool:
    """Whether audio that decodes to ``decoded`` seconds is far shorter than its ``declared`` duration."""
    return (declared is not None and declared >= TRUNCATION_MIN_DECLARED_S
            and decoded < TRUNCATION_MIN_FRACTION * declared)


def _pcm_blocks(source: bytes | str | Path, sample_rate: int, block: int) -> Iterator[np.ndarray]:
    """Mono float32 at ``sample_rate`` in blocks of ``block`` samples (the last one shorter).

    Frames are read, grouped and resampled by faster-whisper's own helpers, so the samples are exactly
    those of its ``decode_audio``, without keeping them all. Unlike ``decode_audio`` it runs no ``gc.collect()``:
    since PyAV 14 a decode's container and resampler hold no reference cycles and are freed when it ends
    (SYSTRAN/faster-whisper#390 was PyAV 10's); with a replica's imports, a 10-s upload took 236 ms of CPU with
    its collections and 30 ms without.
    """
    import av
    from faster_whisper.audio import _group_frames, _ignore_invalid_frames, _resample_frames

    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    pending: list[np.ndarray] = []
    held = 0
    with av.open(_media(source), mode="r", metadata_errors="ignore") as container:
        frames = _resample_frames(_group_frames(_ignore_invalid_frames(container.decode(audio=0)), 500000),
                                  resampler)
        for frame in frames:
            pending.append(frame.to_ndarray().reshape(-1))
            held += pending[-1].size
            while held >= block:
                joined = np.concatenate(pending)
                yield joined[:block].astype(np.float32) / 32768.0
                pending, held = [joined[block:]], joined.size - block
    if held:
        yield np.concatenate(pending).astype(np.float32) / 32768.0


class LivePcm:
    """A live stream's PCM16 (little-endian mono at 24 kHz, OpenAI's Realtime input) as 16 kHz float32, chunk by chunk.

    24 kHz to 16 kHz is 2 up, 3 down: the input is zero-stuffed to 48 kHz, run through a windowed-sinc
    low-pass under the new Nyquist frequency, and every third sample kept. The stuffed input that the next
    output's filter still reaches is kept between chunks, so chunk boundaries leave no seams and memory stays
    flat. One ``np.correlate`` per chunk and no index matrices: the Ingress runs this for every append of
    every session, with big temporaries mmapped (its ``MALLOC_MMAP_THRESHOLD_``), where index arithmetic
    cost 4-5 ms per 100-ms append and this costs 0.1 ms.
    """

    INPUT_RATE = 24000
    HALF_TAPS = 48
    """The filter's half-length at 48 kHz (1 ms each side)."""
    CUTOFF_HZ = 7200.0

    def __init__(self) -> None:
        offsets = np.arange(-self.HALF_TAPS, self.HALF_TAPS + 1)
        cutoff = 2 * self.CUTOFF_HZ / (2 * self.INPUT_RATE)
        self._taps = (2 * cutoff * np.sinc(cutoff * offsets) * np.hanning(offsets.size)).astype(np.float32)
        self._held = np.zeros(self.HALF_TAPS, dtype=np.float32)
        """The 48 kHz stuffed input from the next output's filter reach on (zeros before the stream)."""

    def __call__(self, pcm: bytes) -> np.ndarray:
        """The 16 kHz samples that ``pcm`` (whole 16-bit samples) completes; the last few wait for the next chunk."""
        chunk = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        stuffed = np.zeros(2 * chunk.size, dtype=np.float32)
        stuffed[::2] = chunk
        held = np.concatenate([self._held, stuffed])
        reach = self._taps.size
        count = max(0, (held.size - reach) // 3 + 1)  # outputs the input covers: k reads held[3k : 3k + reach]
        self._held = held[3 * count:]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        return np.correlate(held[:3 * (count - 1) + reach], self._taps, "valid")[::3].astype(np.float32)


def decode(source: bytes | str | Path, sample_rate: int = SAMPLE_RATE, param: str = "file",
           max_seconds: float | None = None) -> np.ndarray:
    """The whole of ``decode_blocks``' audio in one array, for inputs known to be short."""
    return np.concatenate(list(decode_blocks(source, sample_rate, param, max_seconds)))


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
