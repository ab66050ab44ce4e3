"""Speech for benchmarks and tests, made here at run time, and the word error rate against its texts.

The held-out clips are texts of our own read as continuous speech by voices that are not espeak-ng (flite's
and festival's); the tests' short scripts are read by espeak-ng, one file each.

espeak-ng's one robotic voice, sentence by sentence with silences between, flattered the service: every
window ended at a pause. These clips are whole paragraphs read without breaks, so windows must be cut
inside speech, as in a real lecture.
"""

from __future__ import annotations

import io
import itertools
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

PARAGRAPHS = [
    "Good morning everyone. Today we continue our study of how glaciers shape the land. A glacier is a slow river of "
    "ice that forms where more snow falls in winter than melts in summer. Over many years the snow is pressed into "
    "ice, and the weight of that ice makes it flow downhill. As it moves, it scrapes the rock beneath it and carries "
    "stones, sand and even large boulders for great distances. When the climate warms, the glacier melts back and "
    "leaves those stones behind in long ridges that we call moraines. Many of the lakes in the northern countries "
    "were dug out by ice in exactly this way.",
    "Let us turn to the history of printing. Before the printing press, every book was copied by hand, and a single "
    "copy of a long text could take a scribe many months. Metal type that could be arranged and reused made it "
    "possible to print many identical pages in a day. Books became cheaper, more people learned to read, and ideas "
    "travelled faster than ever before. Scholars in different cities could now work from the same edition of a "
    "text, which changed the way science and religion were argued about across the whole of Europe.",
    "In this part of the course we look at how the heart works as a pump. The heart has four chambers. The two upper "
    "chambers collect blood as it returns from the body and from the lungs, and the two lower chambers push it out "
    "again. Valves between the chambers open in one direction only, so the blood cannot flow backwards. Each beat "
    "begins with a small electrical signal that spreads across the muscle and makes it contract in the right order. "
    "A healthy heart beats many times a minute at rest, and it moves a great deal of blood every single minute of "
    "our lives.",
    "Our topic this afternoon is the economics of public transport. A city that builds a new railway line pays a "
    "very large amount at the start, for tunnels, tracks and stations, but each additional passenger costs almost "
    "nothing to carry. This is why ticket prices are often set well below the full cost of the service. Planners "
    "also count benefits that never appear on a ticket, such as fewer cars on the roads, cleaner air and shorter "
    "journeys for people who still drive. The difficult question is how to share the cost fairly between "
    "passengers, taxpayers and the businesses that gain from the new line.",
    "Now a few words about volcanoes. Deep below the surface, rock melts into a thick liquid called magma. Because it "
    "is lighter than the solid rock around it, the magma rises slowly and collects in chambers far below the "
    "ground. When the pressure becomes too high, it escapes through cracks and reaches the surface as lava, ash and "
    "gas. Some volcanoes erupt gently, with rivers of lava that flow for days, while others explode violently and "
    "throw ash high into the sky. Scientists watch small earthquakes and changes in the shape of the ground to warn "
    "people before an eruption begins.",
    "The last subject for today is the way computers store numbers. Inside the machine everything is written with "
    "only two symbols, which we call bits. A group of bits together makes a byte, and a byte can represent any small "
    "whole number. To store larger numbers, the computer simply uses more bytes. Fractions are harder, because many "
    "simple decimal values, such as a tenth, cannot be written exactly in binary. This is why a calculation on a "
    "computer can sometimes give a result that is very slightly different from the answer you would expect on paper.",
    "Before we finish, a short note on how to prepare for the examination. Read your notes again within a day of "
    "each lecture, while the ideas are still fresh. Try to explain each topic in your own words to a friend, "
    "because teaching is the quickest way to find out what you have not understood. Work through the practice "
    "questions without looking at the answers first. If a question seems impossible, write down what you do know "
    "and come back to it later. Most of all, sleep well the night before, since a tired mind forgets what it knows.",
    "Rivers are among the most powerful forces that shape a landscape. Near its source a river is narrow and fast, "
    "and it cuts a deep valley into the hills. Further down, the ground becomes flatter and the water slows, so it "
    "begins to drop the sand and mud that it carried. Over time the river swings from side to side across a wide "
    "plain, leaving curved lakes where an old bend was cut off. At the coast it may split into many channels and "
    "build new land out into the sea, which is why so many great cities grew up beside river mouths.",
]
"""Texts of our own, lecture-like and without numerals (digits against spelled numbers would count as errors)."""
SCRIPTS = {
    "lecture": "Today we talk about the water cycle. Water falls from the sky as rain and flows into the "
    "rivers. The sun warms the sea and the water rises into the air again.",
    "history": "The library opened in the old town more than one hundred years ago. People came from "
    "every village to read the books and newspapers.",
    "cooking": "Cut the onions and the carrots into small pieces. Cook them slowly in a large pan with "
    "a little oil and some salt.",
}
"""Short scripts the tests and the soak read with espeak-ng (``ESPEAK``), each the reference of its file."""
LANGUAGES = {
    "en": ("espeak-ng:en", "Today we talk about the water cycle. Water falls from the sky as rain and flows into the "
                           "rivers. The sun warms the sea, and the water rises into the air again to form clouds."),
    "de": ("espeak-ng:de", "Heute sprechen wir über den Wasserkreislauf. Das Wasser fällt als Regen vom Himmel und "
                           "fließt in die Flüsse. Die Sonne wärmt das Meer, und das Wasser steigt wieder in die Luft."),
    "es": ("espeak-ng:es", "Hoy hablamos del ciclo del agua. El agua cae del cielo como lluvia y corre por los ríos. "
                           "El sol calienta el mar y el agua sube otra vez al aire para formar las nubes."),
    "fr": ("espeak-ng:fr@150", "Aujourd'hui, nous parlons du cycle de l'eau. L'eau tombe du ciel sous forme de pluie "
                               "et coule dans les rivières. Le soleil chauffe la mer et l'eau remonte dans l'air."),
    "it": ("festival:lp_diphone", "Oggi parliamo del ciclo dell'acqua. L'acqua cade dal cielo come pioggia e "
                                  "scorre nei fiumi. Il sole scalda il mare e l'acqua risale nell'aria per formare "
                                  "le nuvole."),
    "ru": ("festival:msu_ru_nsh_clunits", "Сегодня мы говорим о круговороте воды. Вода падает с неба в виде дождя и "
                                          "течёт в реки. Солнце греет море, и вода снова поднимается в воздух."),
}
"""Per language, a voice and a text of our own read in one go (the water cycle, so a translation can be checked
for its content words): espeak-ng's voices, and festival's Italian and Russian ones (``make test`` installs them).
French is read at a lecturer's 150 words a minute: at espeak-ng's default 175, base's int8 decoding on an AVX-512 CPU
heard its first sentence as "J'oublier, ou par l'obusique" (57% WER; 33% on the CPU the bounds were measured on),
and at 150 it is 30% there."""
PICO_VOICES = {"de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT", "en": "en-US"}
"""SVOX Pico's voice of each language it has (py-nanotts, Apache-2.0; the voice data is in the wheel)."""
ESPEAK = "espeak-ng:en"
VOICES = ("flite:awb", "flite:rms", "flite:slt", "festival:kal", "flite:kal16")
"""Synthetic voices other than espeak-ng: flite's (Scottish and US male, US female, a diphone voice) and festival's."""
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Clip:
    """A WAV file of continuous speech and its script; with ``video``, the id a YouTube double serves it under."""

    name: str
    wav: bytes
    text: str
    seconds: float
    voice: str
    video: str | None = None


PROGRAMS = {"flite": "flite", "festival": "text2wave", "espeak-ng": "espeak-ng"}
"""The program behind each voice's engine (``make test`` installs them all); ``pico`` is a Python package."""


def missing_tools(engines: tuple[str, ...] = ("flite", "festival")) -> list[str]:
    """The synthesis programs (or, for ``pico``, the package) of ``engines`` this machine lacks (``make test``
    installs them)."""
    missing = []
    for engine in engines:
        if engine == "pico" and find_spec("py_nanotts") is None:
            missing.append("py-nanotts")
        elif engine != "pico" and shutil.which(PROGRAMS[engine]) is None:
            missing.append(PROGRAMS[engine])
    return missing


def speak(text: str, voice: str, sentence_pause_ms: int = 0) -> bytes:
    """``text`` read by ``voice`` (``flite:NAME``, ``festival:VOICE``, ``espeak-ng:LANGUAGE[@WPM]`` or
    ``pico:LANGUAGE-REGION``) as a WAV file.

    flite, festival and SVOX Pico (py-nanotts: de-DE, fr-FR, es-ES, it-IT, en-US, en-GB) write 16-bit mono at
    16 kHz; espeak-ng at its own 22.05 kHz. festival's ``kal`` is its
    default voice; another is named as festival names it (``lp_diphone``, Italian). ``sentence_pause_ms``
    (espeak-ng only) pauses after each sentence as a speaker does, so that segments end where sentences do.
    espeak-ng reads at its default 175 words a minute unless ``@WPM`` says otherwise.
    """
    if sentence_pause_ms:
        if not voice.startswith("espeak-ng:"):
            raise ValueError(f"sentence pauses are made with espeak-ng's SSML, not by {voice}")
        pause = f'<break time="{sentence_pause_ms}ms"/>'
        text = "<speak>" + re.sub(r"(?<=[.?!])\s+", f" {pause} ", escape(text)) + "</speak>"
    engine, name = voice.split(":", 1)
    if missing := missing_tools((engine,)):
        raise RuntimeError(f"{missing[0]} is missing: run `make test`, which installs it")
    if engine == "pico":
        from py_nanotts import NanoTTS

        return as_wav(NanoTTS().speak(text, voice=name))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "speech.wav"
        if engine == "flite":
            subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(path)], check=True, capture_output=True)
        elif engine == "espeak-ng":
            markup = ["-m"] if sentence_pause_ms else []
            language, _, wpm = name.partition("@")
            rate = ["-s", wpm] if wpm else []
            subprocess.run(["espeak-ng", "-v", language, *rate, *markup, "-w", str(path), text], check=True,
                           capture_output=True)
        else:
            chosen = [] if name == "kal" else ["-eval", f"(voice_{name})"]
            subprocess.run(["text2wave", *chosen, "-o", str(path)], input=text.encode(), check=True,
                           capture_output=True)
        return path.read_bytes()


def realtime_pcm(wav: bytes) -> bytes:
    """A WAV file as OpenAI's Realtime input: raw PCM16, little-endian, mono at 24 kHz (resampled by ffmpeg)."""
    return subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1",
                           "-ar", "24000", "pipe:1"], input=wav, check=True, capture_output=True).stdout


def seconds_of(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as audio:
        return audio.getnframes() / audio.getframerate()


def sentences() -> Iterator[str]:
    """The paragraphs' sentences, in order, without end."""
    yield from itertools.cycle([part for paragraph in PARAGRAPHS for part in re.split(r"(?<=[.?!])\s+", paragraph)])


def clip(name: str, seconds: float, voice: str, source: Iterator[str], words_per_second: float = 2.6) -> Clip:
    """About ``seconds`` of continuous speech: the next whole sentences of ``source``, read in one go."""
    chosen = [next(source)]
    while len(" ".join(chosen).split()) < seconds * words_per_second:
        chosen.append(next(source))
    text = " ".join(chosen)
    wav = speak(text, voice)
    return Clip(name=name, wav=wav, text=text, seconds=round(seconds_of(wav), 2), voice=voice)


def lecture(name: str, seconds: float) -> Clip:
    """A long file: paragraphs read by the voices in turn, joined with half a second of silence, about ``seconds``."""
    pause = b"\0\0" * (SAMPLE_RATE // 2)
    parts, texts, total = [], [], 0.0
    for paragraph, voice in zip(itertools.cycle(PARAGRAPHS), itertools.cycle(VOICES)):
        if total >= seconds:
            break
        wav = speak(paragraph, voice)
        parts.append(pcm(wav, voice) + pause)
        texts.append(paragraph)
        total += seconds_of(wav) + 0.5
    return Clip(name=name, wav=as_wav(b"".join(parts)), text=" ".join(texts), seconds=round(total, 2), voice="all")


def pcm(wav: bytes, voice: str) -> bytes:
    """The samples of ``voice``'s WAV file, which must be 16-bit 16-kHz mono (so files can be joined)."""
    with wave.open(io.BytesIO(wav)) as audio:
        assert audio.getframerate() == SAMPLE_RATE and audio.getsampwidth() == 2, f"{voice}: 16-bit 16 kHz"
        return audio.readframes(audio.getnframes())


def as_wav(frames: bytes) -> bytes:
    """16-bit 16-kHz mono samples as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(frames)
    return buffer.getvalue()


def clip_set(lengths: dict[str, float], per_length: int) -> list[Clip]:
    """``per_length`` clips of each length, each read by another voice from other sentences."""
    source, voices = sentences(), itertools.cycle(VOICES)
    return [clip(f"{label}-{index}", seconds, next(voices), source)
            for label, seconds in lengths.items() for index in range(per_length)]


def word_error_rate(reference: str | list[str], hypothesis: str | list[str]) -> float:
    """WER (over a corpus when given lists) after lower-casing and dropping punctuation, so only words count."""
    import jiwer

    normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(reference, hypothesis, reference_transform=normalise, hypothesis_transform=normalise)


UNSPACED = frozenset({"ja", "zh", "th", "lo", "km", "my"})
"""Languages written without spaces between words: their error rate is counted in characters."""


def error_rate(language: str, reference: str, hypothesis: str) -> float:
    """WER, or for a language written without spaces (``UNSPACED``) the character error rate, punctuation and
    spaces dropped on both sides (a Japanese sentence is one "word" to a WER)."""
    if language not in UNSPACED:
        return word_error_rate(reference, hypothesis)
    import jiwer

    def characters(text: str) -> str:
        return "".join(c for c in text if c.isalnum())

    return jiwer.cer(characters(reference), characters(hypothesis))


SpeakerTime = tuple[float, float, str]
"""(start, end, speaker): a stretch of time and who spoke in it."""


@dataclass(frozen=True)
class Conversation:
    """Several voices taking turns in one WAV file, and who spoke when (start, end, voice) as the reference."""

    wav: bytes
    turns: list[SpeakerTime]
    text: str

    @property
    def samples(self) -> np.ndarray:
        """The recording as 16-kHz mono float32 samples."""
        with wave.open(io.BytesIO(self.wav)) as audio:
            return np.frombuffer(audio.readframes(audio.getnframes()), np.int16).astype(np.float32) / 32768


def conversation(lines: list[tuple[str, str]], pause_s: float = 0.6) -> Conversation:
    """``lines`` of (voice, text) read in turn, joined by ``pause_s`` of silence (voices as in ``speak``)."""
    pause = b"\0\0" * int(SAMPLE_RATE * pause_s)
    frames, turns, at = [], [], 0.0
    for voice, text in lines:
        samples = pcm(speak(text, voice), voice)
        seconds = len(samples) / 2 / SAMPLE_RATE
        frames.append(samples + pause)
        turns.append((round(at, 3), round(at + seconds, 3), voice))
        at += seconds + pause_s
    return Conversation(wav=as_wav(b"".join(frames)), turns=turns, text=" ".join(text for _, text in lines))


def dialogue(voices: list[str], lines: int, source: Iterator[str]) -> Conversation:
    """``lines`` turns of one or two sentences each, the voices speaking in rotation."""
    return conversation([(voices[n % len(voices)], " ".join(itertools.islice(source, 1 + n % 2)))
                         for n in range(lines)])


def attributed(reference: list[SpeakerTime], hypothesis: list[SpeakerTime]) -> dict[str, float]:
    """Each reference speaker's share of time that the hypothesis gives to the label mapped to them, under the
    one-to-one mapping of labels to speakers that attributes the most time correctly."""
    speakers = sorted({s for _, _, s in reference})
    found = sorted({s for _, _, s in hypothesis})
    overlap = {(r, h): 0.0 for r in speakers for h in found}
    for rs, re_, r in reference:
        for hs, he, h in hypothesis:
            overlap[r, h] += max(0.0, min(re_, he) - max(rs, hs))
    padded = found + [None] * max(0, len(speakers) - len(found))
    best = max(itertools.permutations(padded, len(speakers)),
               key=lambda labels: sum(overlap.get((r, h), 0.0) for r, h in zip(speakers, labels, strict=True)))
    spoken = {r: sum(e - s for s, e, who in reference if who == r) for r in speakers}
    return {r: overlap.get((r, h), 0.0) / spoken[r] for r, h in zip(speakers, best, strict=True)}
