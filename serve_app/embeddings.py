"""OpenAI's embeddings endpoint: the request checked at the edge, vectors and token counts from the Embedder."""

from __future__ import annotations

import base64

import numpy as np

from deployments.errors import InvalidRequest, PayloadTooLarge, UnknownModel
from deployments.handles import ServiceHandle
from deployments.schemas import Embeddings
from serve_app.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from serve_app.settings import AppSettings


def checked_texts(request: EmbeddingRequest, settings: AppSettings) -> list[str]:
    """The request's inputs as a list, refused when the model is not served or they pass the ingress's limits."""
    if request.model != settings.embedder.model:
        raise UnknownModel(f"embedding model {request.model!r} is not served here; use "
                           f"{settings.embedder.model!r}", param="model")
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts or any(not t for t in texts):
        raise InvalidRequest("input must be a non-empty string or a list of non-empty strings", param="input")
    if len(texts) > settings.ingress.max_embedding_inputs:
        raise PayloadTooLarge(f"at most {settings.ingress.max_embedding_inputs} inputs per request", param="input")
    if max(len(t) for t in texts) > settings.ingress.max_embedding_chars:
        raise PayloadTooLarge(f"an input is longer than {settings.ingress.max_embedding_chars} characters",
                              param="input")
    return texts


async def embeddings(embedder: ServiceHandle, request: EmbeddingRequest, settings: AppSettings) -> EmbeddingResponse:
    """OpenAI's embeddings: vectors, dimension and token count from one call to the embedder deployment."""
    texts = checked_texts(request, settings)
    result: Embeddings = await embedder.embeddings.remote(texts)
    if request.dimensions is not None and request.dimensions != result.dimension:
        raise InvalidRequest(f"{request.model} makes {result.dimension}-dimensional vectors and cannot shorten them "
                             f"to {request.dimensions}", param="dimensions")
    data = [EmbeddingData(index=i, embedding=_encode(v, request.encoding_format))
            for i, v in enumerate(result.vectors)]
    return EmbeddingResponse(data=data, model=request.model,
                             usage=EmbeddingUsage(prompt_tokens=result.tokens, total_tokens=result.tokens))


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """A vector as floats, or as OpenAI's base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector
