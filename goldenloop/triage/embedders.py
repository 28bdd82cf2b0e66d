"""Embedders for clustering: text → dense vectors.

``EMBEDDERS`` maps a name to a factory returning an ``Embedder``. The built-in ``lsa``
(TF-IDF then TruncatedSVD, the classic latent semantic analysis) needs nothing beyond
scikit-learn and downloads no model. ``sentence-transformers`` plugs in the optional
extra (``pip install sentence-transformers``) the same way a user's embedder does::

    from goldenloop.triage.embedders import EMBEDDERS

    class MyEmbedder:
        name = "mine"
        def embed(self, texts, *, seed): ...   # → numpy array, one row per text

    EMBEDDERS["mine"] = MyEmbedder
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class EmbedderError(RuntimeError):
    """An embedder cannot run (e.g. its optional package is not installed)."""


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str], *, seed: int) -> NDArray[np.float64]:
        """One L2-normalised row per text."""
        ...


def _normalize(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.asarray(matrix / norms, dtype=np.float64)


class LsaEmbedder:
    """TF-IDF (words and word pairs) reduced with TruncatedSVD."""

    name = "lsa"

    def __init__(self, components: int = 64, max_features: int = 50_000) -> None:
        self.components = components
        self.max_features = max_features

    def embed(self, texts: Sequence[str], *, seed: int) -> NDArray[np.float64]:
        from sklearn.decomposition import TruncatedSVD  # type: ignore[import-untyped, unused-ignore]
        from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped, unused-ignore]

        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, max_features=self.max_features, sublinear_tf=True,
            token_pattern=r"(?u)\b[\w:.-]{2,}\b", dtype=np.float32,
        )  # fmt: skip
        matrix = vectorizer.fit_transform(texts)
        rank = min(self.components, matrix.shape[1] - 1, matrix.shape[0] - 1)
        if rank < 2:
            return _normalize(np.asarray(matrix.todense(), dtype=np.float64))
        svd = TruncatedSVD(n_components=rank, random_state=seed, algorithm="randomized")
        with warnings.catch_warnings():
            # Identical documents make the explained-variance ratio 0/0; harmless here.
            warnings.simplefilter("ignore", RuntimeWarning)
            reduced: NDArray[np.float64] = svd.fit_transform(matrix).astype(np.float64)
        return _normalize(reduced)


class SentenceTransformerEmbedder:
    """Sentence embeddings from the optional ``sentence-transformers`` package."""

    name = "sentence-transformers"

    def __init__(self, model: str = "all-MiniLM-L6-v2") -> None:
        self.model = model

    def embed(self, texts: Sequence[str], *, seed: int) -> NDArray[np.float64]:
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise EmbedderError(
                "the 'sentence-transformers' embedder needs the optional package: "
                "pip install sentence-transformers (or use the default 'lsa')"
            ) from None
        model: Any = SentenceTransformer(self.model)
        vectors = np.asarray(model.encode(list(texts), show_progress_bar=False), dtype=np.float64)
        return _normalize(vectors)


EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "lsa": LsaEmbedder,
    "sentence-transformers": SentenceTransformerEmbedder,
}


def get_embedder(name: str) -> Embedder:
    factory = EMBEDDERS.get(name)
    if factory is None:
        raise EmbedderError(f"unknown embedder {name!r}; known: {', '.join(EMBEDDERS)}")
    return factory()
