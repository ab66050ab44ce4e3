"""Held-out speech for benchmarks and tests: texts of our own read as continuous speech by voices that are not
espeak-ng (flite's and festival's), and the word error rate against those texts.

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
from pathlib import Path

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


def missing_tools() -> list[str]:
    """The synthesis programs this machine lacks (``make test`` installs them)."""
    return [tool for tool in ("flite", "text2wave") if shutil.which(tool) is None]


def speak(text: str, voice: str) -> bytes:
    """``text`` read by ``voice`` (``flite:NAME`` or ``festival:kal``) as 16-bit mono WAV at 16 kHz."""
    engine, name = voice.split(":", 1)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "speech.wav"
        if engine == "flite":
            subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(path)], check=True, capture_output=True)
        else:
            subprocess.run(["text2wave", "-o", str(path)], input=text.encode(), check=True, capture_output=True)
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
        with wave.open(io.BytesIO(wav)) as audio:
            assert audio.getframerate() == SAMPLE_RATE and audio.getsampwidth() == 2, f"{voice}: 16-bit 16 kHz"
            parts.append(audio.readframes(audio.getnframes()) + pause)
        texts.append(paragraph)
        total += seconds_of(wav) + 0.5
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"".join(parts))
    return Clip(name=name, wav=buffer.getvalue(), text=" ".join(texts), seconds=round(total, 2), voice="all")


def clip_set(lengths: dict[str, float], per_length: int) -> list[Clip]:
    """``per_length`` clips of each length, each read by another voice from other sentences."""
    source, voices = sentences(), itertools.cycle(VOICES)
    return [clip(f"{label}-{index}", seconds, next(voices), source)
            for label, seconds in lengths.items() for index in range(per_length)]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER after lower-casing and dropping punctuation, so only words count."""
    import jiwer

    normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(references, hypotheses, reference_transform=normalise, hypothesis_transform=normalise)
