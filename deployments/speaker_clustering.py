"""Speakers from voice vectors: senko's clusterers told how many speakers to find, alike clusters merged within
that count, and the labelled spans turned into turns.

senko's own call clusters with a fixed count search (1 to 15 speakers) and merges alike clusters whatever the
count; a request that says ``min_speakers`` / ``max_speakers`` (or names known speakers) needs both bounded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deployments.schemas import Turn

LONG_S = 1200.0
"""Past this much audio senko clusters with UMAP+HDBSCAN (its spectral clustering's eigendecomposition grows as
the cube of the embeddings), as its own ``diarize`` does."""


def centroids(labels: np.ndarray, vectors: np.ndarray) -> dict[int, np.ndarray]:
    """Each label's mean vector."""
    return {int(label): vectors[labels == label].mean(axis=0) for label in np.unique(labels)}


def _most_alike(centres: dict[int, np.ndarray]) -> tuple[float, int, int]:
    """The cosine similarity of the two most alike centroids, and their labels."""
    keys = list(centres)
    unit = np.stack([centres[k] / (np.linalg.norm(centres[k]) + 1e-12) for k in keys])
    similarity = np.triu(unit @ unit.T, 1) - np.tril(np.full((len(keys), len(keys)), 2.0))
    first, second = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
    return float(similarity[first, second]), keys[first], keys[second]


def merged(labels: np.ndarray, vectors: np.ndarray, similarity: float, low: int | None,
           high: int | None) -> np.ndarray:
    """``labels`` with the two most alike clusters joined, again and again, while more than ``high`` remain, or
    while they are at least ``similarity`` alike and more than ``low`` (at least one) remain."""
    labels = labels.copy()
    while len(centres := centroids(labels, vectors)) > 1:
        alike, keep, join = _most_alike(centres)
        over = high is not None and len(centres) > high
        if not over and (alike < similarity or len(centres) <= (low or 1)):
            break
        labels[labels == join] = keep
    return labels


def cluster_labels(engine: Any, vectors: np.ndarray, seconds: float, low: int | None, high: int | None) -> np.ndarray:
    """A speaker label per vector from the clusterer senko's ``engine`` uses for ``seconds`` of audio, searched
    between ``low`` and ``high`` speakers (the spectral one; UMAP+HDBSCAN takes no count, so only ``merged`` bounds
    it), then alike clusters merged at senko's ``mer_cos``."""
    from senko.cluster.cluster_cpu import CommonClustering

    long = seconds >= LONG_S
    args = dict((engine.umap_hdbscan_config if long else engine.spectral_config)["cluster"]["args"])
    similarity, args["mer_cos"] = args["mer_cos"], None
    if not long:
        args.update(min_num_spks=max(low or 1, 1), max_num_spks=max(high or args["max_num_spks"], low or 1),
                    oracle_num=low if low is not None and low == high else None)
    labels = np.asarray(CommonClustering(**args)(vectors), dtype=int)
    return merged(labels, vectors, similarity, low, high)


def turns_of(spans: list[tuple[float, float]], labels: np.ndarray) -> list[Turn]:
    """Labelled spans (in time order, often overlapping) as turns: a speaker's touching spans are one turn, and
    where two speakers' spans overlap the change is put at the middle of the overlap."""
    turns: list[Turn] = []
    for (start, end), label in zip(spans, labels, strict=True):
        speaker = str(int(label))
        if turns and turns[-1].speaker == speaker and start <= turns[-1].end:
            turns[-1].end = max(turns[-1].end, end)
            continue
        if turns and start < turns[-1].end:
            middle = (turns[-1].end + start) / 2
            turns[-1].end, start = middle, middle
        turns.append(Turn(start=start, end=end, speaker=speaker))
    return turns
