"""The diarization error rate (pyannote.metrics): each recording's missed speech, false alarm and confusion,
and the same pooled over every recording scored, as the field reports it (overlapping speech is scored)."""

from __future__ import annotations

from typing import Any

from benchmarks.support.speech import SpeakerTime

PARTS = {"missed detection": "missed_s", "false alarm": "false_alarm_s", "confusion": "confusion_s",
         "total": "speech_s"}
"""pyannote.metrics' names of the error's parts (seconds) and of the reference's speech, and ours."""


def annotation(turns: list[SpeakerTime]) -> Any:
    """(start, end, speaker) turns as a pyannote ``Annotation``; overlapping turns stay overlapping."""
    from pyannote.core import Annotation, Segment

    found = Annotation()
    for n, (start, end, speaker) in enumerate(turns):
        if end > start:
            found[Segment(start, end), n] = speaker
    return found


def _parts(detail: dict[str, float]) -> dict[str, float]:
    return {ours: round(detail[theirs], 2) for theirs, ours in PARTS.items()}


class ErrorRate:
    """Scores recordings one by one with one metric, so that ``pooled`` is the error over all of them."""

    def __init__(self, collar: float = 0.25) -> None:
        """``collar``: seconds around each reference boundary not scored (pyannote's: half on each side)."""
        from pyannote.metrics.diarization import DiarizationErrorRate

        self.metric = DiarizationErrorRate(collar=collar, skip_overlap=False)

    def score(self, reference: list[SpeakerTime], hypothesis: list[SpeakerTime], seconds: float) -> dict[str, float]:
        """One recording's DER and its parts in seconds, over its first ``seconds``."""
        from pyannote.core import Segment, Timeline

        detail = self.metric(annotation(reference), annotation(hypothesis), uem=Timeline([Segment(0, seconds)]),
                             detailed=True)
        return {"der": round(detail["diarization error rate"], 4), **_parts(detail)}

    def pooled(self) -> dict[str, float]:
        """The DER over every recording scored so far (their errors summed over their speech summed)."""
        summed = {name: sum(detail[name] for _, detail in self.metric.results_) for name in PARTS}
        return {"der": round(abs(self.metric), 4), **_parts(summed)}
