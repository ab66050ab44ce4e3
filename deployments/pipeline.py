"""The graph's composition that the Ingress and the JobRunner share: downloader → transcriber (→ diarizer) → embedder.

Audio never comes here: the downloader decodes it into windows and sends them to the transcribers itself
(and, when diarizing, to the diarizer at the same time), streaming back each window's transcription and
speaker embeddings in order; here they are stitched with their offsets, and the speakers that the diarizer
finds in all of the embeddings are given to the words they spoke.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from deployments.diarization import diarized
from deployments.errors import InvalidRequest, SourceFailed
from deployments.handles import ServiceHandle
from deployments.language_routing import check_request, resolved, unnamed, unnamed_live
from deployments.schemas import (
    AudioEnd,
    Passage,
    Reference,
    Resolved,
    Segment,
    SourceMode,
    SpeechEmbeddings,
    TimedText,
    TranscribedWindow,
    TranscribeOptions,
    Transcript,
    Transcription,
    TranscriptSpec,
)
from deployments.settings import TranscriberSettings
from deployments.store import ENGLISH_VERSION
from deployments.windows import shifted, stitch
from deployments.youtube import NoCaptions


def _timed(items: list[Any]) -> list[TimedText]:
    return [TimedText(start=i.start, end=i.end, text=i.text, speaker=i.speaker) for i in items]


def from_captions(resolved: Resolved) -> Transcription:
    """A caption track in the shape of an ASR result (the ``model`` says where it came from)."""
    segments = resolved.captions or []
    return Transcription(model="captions", language=resolved.language or "und", duration=resolved.duration,
                         text=" ".join(s.text for s in segments), segments=segments)


@dataclass
class Source:
    """A resolved source: its header, and for audio the rest of the downloader's stream."""

    header: Resolved
    options: TranscribeOptions
    rest: Any = None
    """``TranscribedWindow`` items in order, then ``AudioEnd``; None for captions."""
    known_speakers: dict[str, list[float]] | None = None
    """Known speakers' voiceprints by name, when diarizing with reference clips."""


async def _rest(source: Source) -> AsyncGenerator[TranscribedWindow | AudioEnd, None]:
    """The stream after the header; a reader that stops before its end stops the downloader too."""
    ended = False
    try:
        async for item in source.rest:
            ended = isinstance(item, AudioEnd)
            yield item
    finally:
        if not ended:
            source.rest.cancel()


class TranscriptPipeline:
    """Holds the Downloader's and the Embedder's handles and composes them for one request.

    The Transcribers are reached through the Downloader, which sends them each window it cuts.
    """

    def __init__(self, downloader: ServiceHandle, embedder: ServiceHandle, settings: TranscriberSettings,
                 diarizer: ServiceHandle | None = None) -> None:
        self.downloader = downloader
        self.embedder = embedder
        self.settings = settings
        self.diarizer = diarizer

    def check_diarize(self, diarize: bool, source: SourceMode) -> SourceMode:
        """Where a request's transcript may come from: diarizing needs the audio (``auto`` means ASR), and a
        Diarizer in the graph (the ``diarizer`` section of the application's ``args``)."""
        if not diarize:
            return source
        if self.diarizer is None:
            raise InvalidRequest("diarization is not configured on this server: the application's args have no "
                                 "'diarizer' section", param="diarize", code="diarization_not_configured")
        if source == "captions":
            raise InvalidRequest("captions have no speakers: diarizing needs source 'asr' or 'auto'", param="source")
        return "asr"

    def check_model(self, requested: str | None, language: str | None = None) -> str:
        """The configured model name for a realtime session, refused when unknown or unable to serve ``language``;
        naming no model means the model routing gives ``language``, else the routed name (``unnamed_live``)."""
        return check_request(self.settings, unnamed_live(self.settings, requested, language), language)

    def check_source_model(self, requested: str | None, language: str | None = None) -> str:
        """``check_model`` for a source (an upload, a URL, a job's item), where naming no model asks for routing."""
        return check_request(self.settings, unnamed(self.settings, requested), language)

    def models_for(self, requested: str | None, language: str | None) -> list[str]:
        """The models a source request's transcript may have come from: the routed name's, or the one it names."""
        name = self.check_source_model(requested, language)
        routing = self.settings.routing
        return list(routing.models) if routing is not None and self.settings.is_routed(name) else [name]

    async def expand(self, url: str) -> list[str]:
        """The items of a playlist, channel or multi-media page (the URL itself for one item)."""
        return await self.downloader.expand.remote(url)

    async def resolve(self, data: bytes | None, filename: str | None, url: str | None, source: SourceMode,
                      language: str | None, options: TranscribeOptions,
                      references: list[Reference] | None = None) -> Source:
        """Captions, or audio whose windows the downloader is transcribing, from uploaded bytes or a URL (one).

        ``options.vad_filter`` (the transcriber's ``vad_filter`` when None) decides whether windows are cut
        at silences; the downloader sends each window to the transcribers with ``options``. With
        ``options.diarize``, words are timed (to be given to speakers) and ``references`` (known speakers'
        clips) are checked before anything is fetched.
        """
        if (data is None) == (url is None):
            raise InvalidRequest("send exactly one of 'file' and 'url'", param="file")
        options = resolved(self.settings, options)
        source = self.check_diarize(options.diarize, source)
        known = None
        if options.diarize:
            options = options.model_copy(update={"word_timestamps": True, "timestamps": True})
            known = await self.diarizer.voiceprints.remote(references) if references and self.diarizer else None
        if options.vad_filter is None:
            options = options.model_copy(update={"vad_filter": self.settings.vad_filter})
        downloader = self.downloader.options(stream=True)
        if data is not None:
            stream = downloader.from_upload.remote(data, filename, options)
        else:
            stream = downloader.resolve.remote(url, source, language, options)
        header = await stream.__anext__()
        return Source(header, options, None if header.kind == "captions" else stream, known)

    async def transcription(self, source: Source) -> Transcription:
        """The whole transcription: the captions as they are, or the audio's windows stitched in order."""
        if source.rest is None:
            return from_captions(source.header)
        parts: list[tuple[float, Transcription]] = []
        speech: list[SpeechEmbeddings] = []
        duration = 0.0
        async with aclosing(_rest(source)) as items:
            async for item in items:
                if isinstance(item, AudioEnd):
                    duration = item.duration
                else:
                    parts.append((item.start, item.transcription))
                    if item.speech is not None:
                        speech.append(item.speech.shifted(item.start))
        options = source.options
        result = stitch(parts, duration, self.check_model(options.model), options.language or "en")
        if not options.diarize or self.diarizer is None:
            return result
        turns = await self.diarizer.speakers.remote(speech, source.known_speakers or {}, options.min_speakers,
                                                    options.max_speakers)
        return result.model_copy(update={"segments": diarized(result.segments, turns)})

    async def segments(self, source: Source) -> AsyncIterator[Segment]:
        """Segments as each window's transcription arrives, in order (or the captions, at once)."""
        if source.rest is None:
            for segment in source.header.captions or []:
                yield segment
            return
        count = 0
        async with aclosing(_rest(source)) as items:
            async for item in items:
                if isinstance(item, TranscribedWindow):
                    for segment in shifted(item.transcription.segments, item.start, count):
                        yield segment
                    count += len(item.transcription.segments)

    async def transcript_and_passages(self, spec: TranscriptSpec) -> tuple[Transcript, list[Passage]]:
        """The transcript and its passages with their vectors (what the store keeps)."""
        model = self.check_source_model(spec.model, spec.language)
        options = TranscribeOptions(model=model, language=spec.language, diarize=spec.diarize)
        source = await self.resolve(None, None, spec.url, spec.source, spec.language, options)
        return await self._kept(source.header, await self.transcription(source), spec.embed, source.header.key)

    async def translation(self, spec: TranscriptSpec, original: Transcript) -> tuple[Transcript, list[Passage]] | None:
        """The English version of ``original`` (speech in another language), kept beside it with its own passages, so
        an English search finds the source at the moment a passage was spoken; None when it is English already.

        A captioned source takes YouTube's English translation of its captions when YouTube offers one (no audio is
        fetched); otherwise the audio is decoded again with the task ``translate``, by the model and in the language
        of the original. Its id is the source's with ``+en``.
        """
        if original.language in (None, "en"):
            return None
        if original.source == "captions" and (captions := await self._english_captions(spec, original)) is not None:
            return captions
        model = original.model if original.source == "asr" else None
        options = TranscribeOptions(model=self.check_source_model(model, original.language), language=original.language,
                                    task="translate")
        source = await self.resolve(None, None, spec.url, "asr", original.language, options)
        english = (await self.transcription(source)).model_copy(update={"language": "en"})
        return await self._kept(source.header, english, spec.embed, f"{original.id}{ENGLISH_VERSION}")

    async def _english_captions(self, spec: TranscriptSpec,
                                original: Transcript) -> tuple[Transcript, list[Passage]] | None:
        """The English captions of a captioned source, YouTube's translation among them; None when it has none."""
        options = TranscribeOptions(model=self.check_source_model(None, "en"), language="en")
        try:
            source = await self.resolve(None, None, spec.url, "captions", "en", options)
        except SourceFailed as error:
            if error.code != NoCaptions.code:
                raise
            return None
        return await self._kept(source.header, from_captions(source.header), spec.embed,
                                f"{original.id}{ENGLISH_VERSION}")

    async def _kept(self, resolved: Resolved, result: Transcription, embed: bool,
                    key: str) -> tuple[Transcript, list[Passage]]:
        """A transcription as the store keeps it, under ``key``, with its passages embedded when ``embed``."""
        passages: list[Passage] = []
        if embed and result.segments:
            passages = await self.embedder.embed_transcript.remote(result.segments)
        transcript = Transcript(
            id=key,
            url=resolved.url,
            title=resolved.title,
            duration_s=round(result.duration, 3),
            source="captions" if resolved.kind == "captions" else "asr",
            language=result.language,
            translated_from=resolved.translated_from,
            model=None if resolved.kind == "captions" else result.model,
            text=result.text,
            segments=_timed(result.segments),
            chunks=_timed(passages),
            embedding_dim=len(passages[0].vector or []) if passages else None,
        )
        return transcript, passages
