"""Turn detection on a live stream (server VAD): where speech starts, and where it stops for long enough.

Silero VAD (faster-whisper's, the model ``deployments.windows`` cuts files with) scores each 32 ms frame as
it arrives. Speech starts at the first of ``MIN_SPEECH_FRAMES`` frames at or over ``threshold``; it stops
where a pause began (its first frame under ``threshold - 0.15``), once ``silence_ms`` of frames under it
have come with none at or over ``threshold`` (the hysteresis Silero's own ``get_speech_timestamps`` uses).
Each call scores only the new frames, after ``CONTEXT_FRAMES`` of the audio before them to settle the
model's state, so a long session costs the same per second as a short one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from deployments.audio import SAMPLE_RATE

FRAME = 512
"""Samples Silero scores at once at 16 kHz (32 ms)."""
CONTEXT_FRAMES = 16
"""Frames before the new ones that are scored again so the model starts from the right state (about 0.5 s)."""
MIN_SPEECH_FRAMES = 3
"""Frames over the threshold in a row that count as speech (about 0.1 s): a click or a cough does not."""
HYSTERESIS = 0.15
"""How far under ``threshold`` a frame must score to count as silence (Silero's own default)."""


@dataclass(frozen=True)
class Boundary:
    """Speech ``started`` or ``stopped`` at ``sample`` (counted from the stream's first sample)."""

    kind: Literal["started", "stopped"]
    sample: int


class TurnDetector:
    """Feeds 16 kHz samples through Silero frame by frame and reports where turns start and stop."""

    def __init__(self, threshold: float, silence_ms: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.threshold = threshold
        self.silent_below = max(threshold - HYSTERESIS, 0.01)
        self.silence_frames = max(1, round(silence_ms * sample_rate / 1000 / FRAME))
        self.speaking = False
        self._history = np.zeros(0, dtype=np.float32)
        """Scored frames kept as context for the next call (at most CONTEXT_FRAMES)."""
        self._pending = np.zeros(0, dtype=np.float32)
        """Samples of the frame not yet complete."""
        self._next_frame = 0
        """Stream index of the first sample in ``_pending``."""
        self._run = 0
        """Frames in a row on the side that would change the state (speech while silent, silence while speaking)."""
        self._silent_from: int | None = None
        """While speaking: the stream index where the silence now running began (None while speech goes on)."""

    @property
    def silent_since(self) -> int | None:
        """Where the pause now running began, while speech has not yet stopped for ``silence_ms``; else None.

        A session starts decoding its turn at a pause, before the pause is long enough to end it."""
        return self._silent_from if self.speaking else None

    def feed(self, samples: np.ndarray) -> list[Boundary]:
        """The boundaries in the complete frames so far, in order."""
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = audio.size // FRAME * FRAME
        self._pending = audio[whole:]
        if whole == 0:
            return []
        frames = audio[:whole]
        probabilities = self._score(frames)
        first = self._next_frame
        self._next_frame += whole
        boundaries = []
        for index, probability in enumerate(probabilities):
            boundary = self._step(float(probability), first + index * FRAME)
            if boundary is not None:
                boundaries.append(boundary)
        return boundaries

    def reset(self) -> None:
        """Back to silence, as after a commit or a clear: the next speech starts a new turn."""
        self.speaking, self._run, self._silent_from = False, 0, None

    def _score(self, frames: np.ndarray) -> np.ndarray:
        """Silero's speech probability for each frame, scored after the context frames before them."""
        from faster_whisper.vad import get_vad_model

        scored = np.concatenate([self._history, frames])
        self._history = scored[-CONTEXT_FRAMES * FRAME:]
        probabilities = np.asarray(get_vad_model()(scored)).reshape(-1)
        return probabilities[-(frames.size // FRAME):]

    def _step(self, probability: float, start: int) -> Boundary | None:
        """One frame (starting at sample ``start``) through the state machine."""
        if not self.speaking:
            self._run = self._run + 1 if probability >= self.threshold else 0
            if self._run < MIN_SPEECH_FRAMES:
                return None
            self.speaking, self._run = True, 0
            return Boundary("started", start - (MIN_SPEECH_FRAMES - 1) * FRAME)
        if probability >= self.threshold:
            self._run, self._silent_from = 0, None
        elif probability < self.silent_below:
            self._run += 1
            if self._silent_from is None:
                self._silent_from = start
        if self._run < self.silence_frames:
            return None
        stopped = self._silent_from if self._silent_from is not None else start
        self.reset()
        return Boundary("stopped", stopped)
