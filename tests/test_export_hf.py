"""evolve/hub.py: `export --format hf` read back with the real `datasets` package, its dataset card, and the
push to the Hub up to the upload call (a stand-in HfApi records the calls; nothing leaves the machine).

The slow test loads the sharegpt, openai and alpaca exports with `datasets` and renders every row with the
embedded model's chat template, as TRL, axolotl and LLaMA-Factory do before training (docs/EXPORT.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from evolinstruct import __version__
from evolinstruct.evolve.config import Algorithm, EvolveConfig, Roles, Source
from evolinstruct.evolve.export import export
from evolinstruct.evolve.hub import HUB_EXTRA, HubError, export_hf, push_to_hub, size_category
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Transport
from evolinstruct.quality.filter.config import FilterConfig
from evolinstruct.quality.filter.run import filter_source
from evolinstruct.quality.score.run import ScoreOptions, run_score
from scripted import on, write_seeds

datasets = pytest.importorskip("datasets")
yaml = pytest.importorskip("yaml")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local directory needs no network: make any attempt an error rather than a wait."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

COMMAND = "evolinstruct export runs/demo --format hf -o out/hf --test-size 0.25 --license cc-by-nc-4.0"


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


@pytest.fixture
def run_dir(tmp_path: Path, scripted) -> Path:
    """A finished scripted run: 12 seeds (two of them the same), 2 epochs, some evolutions judged equal,
    the first 6 records scored (heuristics), so that some rows have scores and some do not."""
    scripted((on("equality"), lambda p: "Equal" if _digest(p.second) % 4 == 0 else "Not Equal"))
    instructions = [f"Describe the history of invention number {i} and why it mattered." for i in range(11)]
    seeds = write_seeds(tmp_path / "seeds.jsonl", [*instructions, instructions[0]])
    config = EvolveConfig(source=Source(seeds=seeds), algorithm=Algorithm(epochs=2),
                          roles=Roles(evolver=ModelSpec(backend="scripted", model="s")), transport=Transport(concurrency=4))
    run = tmp_path / "run"
    stats = run_evolve(config, run)
    assert stats["eliminated"].get("no_information_gain")
    run_score(run, ScoreOptions(heuristics=True, limit=6))
    return run


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _card(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _load(folder: Path, cache: Path):
    return datasets.load_dataset(str(folder), cache_dir=str(cache))


def test_hf_export_loads_with_datasets_and_its_card_holds_the_run(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = export_hf(run_dir, out, license="cc-by-nc-4.0", test_size=0.25, seed=1, command=COMMAND)
    rows = _jsonl(run_dir / "dataset.jsonl")
    assert result["rows"] == len(rows)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]

    ds = _load(out, tmp_path / "cache")
    assert set(ds) == {"train", "test"}
    assert ds["train"].num_rows + ds["test"].num_rows == len(rows)
    assert ds["test"].num_rows == result["splits"]["test"]["rows"] > 0
    assert {"instruction", "input", "output", "messages", "id", "root_id", "parent_id", "epoch", "op", "model",
            "truncated", "scores"} <= set(ds["train"].column_names)

    # Every row as dataset.jsonl has it; scores where the row has them, None where it has none.
    loaded = {r["id"]: r for split in ds.values() for r in split}
    with_scores = 0
    for row in rows:
        got = loaded[row["id"]]
        for key in ("instruction", "input", "output", "root_id", "parent_id", "epoch", "op", "model"):
            assert got[key] == row[key], key
        assert got["messages"] == [{"role": "user", "content": row["instruction"]},
                                   {"role": "assistant", "content": row["output"]}]
        if "scores" in row:
            with_scores += 1
            assert got["scores"] == pytest.approx({k: row["scores"].get(k) for k in got["scores"]})
        else:
            assert got["scores"] is None
    assert 0 < with_scores < len(rows)

    # The test split holds whole lineages.
    roots = defaultdict(set)
    for split, data in ds.items():
        for r in data:
            roots[r["root_id"]].add(split)
    assert all(len(splits) == 1 for splits in roots.values())
    assert any(splits == {"test"} for splits in roots.values())

    # The card: YAML the Hub reads, and the run's own numbers.
    meta, body = _card(out / "README.md")
    assert meta["license"] == "cc-by-nc-4.0"
    assert meta["task_categories"] == ["text-generation"] and meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert f"| seeds | {stats['seeds']} |" in body
    assert "| epochs | 2 |" in body and "| template set | paper |" in body
    assert f"| no_information_gain | {stats['eliminated']['no_information_gain']} |" in body
    assert f"| evolver model | {stats['models']['evolver']} |" in body
    ev = stats["evolutions"]
    assert f"| {ev['planned']} | {ev['attempted']} | {ev['kept']} | {ev['eliminated']} | {ev['errors']} |" in body
    for epoch, counts in stats["by_epoch"].items():
        assert f"| {epoch} | {counts['attempted']} | {counts.get('kept', 0)} |" in body
    assert "Scores by epoch" in body and "length_tokens" in body
    assert COMMAND in body and __version__ in body
    assert f"| train | {ds['train'].num_rows} |" in body and f"| test | {ds['test'].num_rows} |" in body

    # The same seed draws the same test split.
    again = export_hf(run_dir, tmp_path / "hf2", license="cc-by-nc-4.0", test_size=0.25, seed=1)
    assert again["splits"]["test"]["rows"] == result["splits"]["test"]["rows"]
    assert _load(tmp_path / "hf2", tmp_path / "cache2")["test"]["id"] == ds["test"]["id"]


def test_shards_a_filtered_subset_and_refuses_a_full_directory(run_dir: Path, tmp_path: Path) -> None:
    outcome = filter_source(run_dir, name="clean", config=FilterConfig(decontam=False, minhash=False, embed=False))
    assert outcome.stats["removed"] > 0  # the repeated seed and its evolutions
    out = tmp_path / "hf"
    result = export_hf(run_dir, out, subset="clean", shard_rows=7, repo_id="someone/evolved")
    kept = _jsonl(run_dir / "filtered" / "clean" / "dataset.jsonl")
    files = result["splits"]["train"]["files"]
    n = -(-len(kept) // 7)
    assert files == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)] and n > 1
    ds = _load(out, tmp_path / "cache")
    assert list(ds) == ["train"] and ds["train"].num_rows == len(kept)
    assert ds["train"]["id"] == [r["id"] for r in kept]
    meta, body = _card(out / "README.md")
    assert meta["license"] == "unknown" and meta["pretty_name"] == "evolved"
    assert 'load_dataset("someone/evolved")' in body
    assert "Filters applied (subset `clean`)" in body
    stats = outcome.stats
    assert f"{stats['rows_in']} rows in, {stats['rows_out']} out, {stats['removed']} removed." in body

    with pytest.raises(ValueError, match="not empty"):
        export_hf(run_dir, out)
    (out / "keep.txt").write_text("a file of the user's")
    export_hf(run_dir, out, overwrite=True)  # replaces README.md and data/, nothing else
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert (out / "keep.txt").exists() and not any(p.name.startswith(".staging") for p in out.iterdir())
    with pytest.raises(ValueError, match="license"):
        export_hf(run_dir, tmp_path / "x", license="CC BY NC")
    with pytest.raises(ValueError, match="test-size"):
        export_hf(run_dir, tmp_path / "x", test_size=1.0)
    assert not (tmp_path / "x").exists()
    with pytest.raises(FileNotFoundError, match="no dataset"):
        export_hf(tmp_path / "nothing", tmp_path / "y")


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 52_000, 250_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi at the upload boundary: records the calls, sends nothing."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        if self.fail:
            raise self.fail
        return f"https://huggingface.co/datasets/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "commit"


def test_push_to_hub_up_to_the_upload_call(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hf"
    export_hf(run_dir, out, license="apache-2.0")
    api = FakeHfApi()
    url = push_to_hub(out, "someone/evolved", private=True, api=api)
    assert url == "https://huggingface.co/datasets/someone/evolved"
    assert api.calls == [
        ("create_repo", {"repo_id": "someone/evolved", "repo_type": "dataset", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "someone/evolved", "repo_type": "dataset", "folder_path": str(out),
                           "allow_patterns": ["README.md", "data/*.parquet"], "delete_patterns": ["data/*.parquet"],
                           "commit_message": f"Upload with evolinstruct {__version__}"}),
    ]

    with pytest.raises(HubError, match="no exported dataset"):
        push_to_hub(tmp_path, "someone/evolved", api=FakeHfApi())
    with pytest.raises(HubError, match="OWNER/NAME"):
        push_to_hub(out, "evolved", api=FakeHfApi())
    failing = FakeHfApi(fail=RuntimeError("401 Client Error: Unauthorized\nmore detail"))
    with pytest.raises(HubError, match=r"failed: 401 Client Error: Unauthorized \(a token comes from HF_TOKEN"):
        push_to_hub(out, "someone/evolved", api=failing)
    assert [c[0] for c in failing.calls] == ["create_repo"]  # nothing uploaded after a refusal

    # The real HfApi is what runs by default: built with the given token, sending nothing until called.
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from evolinstruct.evolve.hub import hf_api

    real = hf_api(token="hf_test")
    assert isinstance(real, huggingface_hub.HfApi) and real.token == "hf_test"
    # Without the package: one line naming the extra.
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(HubError, match=re.escape(f"needs huggingface_hub: {HUB_EXTRA}")):
        push_to_hub(out, "someone/evolved")


# ------------------------------------------------------------------------------------------ slow
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


@pytest.mark.slow
def test_trainer_formats_load_and_render_with_the_embedded_chat_template(run_dir: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from evolinstruct.models.embedded import embedded_checkpoint

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(embedded_checkpoint()))
    rows = _jsonl(run_dir / "dataset.jsonl")
    cache = str(tmp_path / "cache")

    def conversations(fmt: str) -> list[list[dict]]:
        path = tmp_path / f"mix.{fmt}.jsonl"
        assert export(run_dir, fmt, path) == len(rows)
        data = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache)
        assert data.num_rows == len(rows)
        if fmt == "openai":
            return list(data["messages"])
        if fmt == "sharegpt":
            return [[{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in c] for c in data["conversations"]]
        # alpaca, as a formatting function for TRL's SFTTrainer turns it into messages
        return [[{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")},
                 {"role": "assistant", "content": r["output"]}] for r in data]

    hf = tmp_path / "hf"
    export_hf(run_dir, hf)
    formats = {fmt: conversations(fmt) for fmt in ("openai", "sharegpt", "alpaca")}
    formats["hf"] = list(datasets.load_dataset(str(hf), split="train", cache_dir=cache)["messages"])
    for fmt, convs in formats.items():
        assert convs == formats["openai"], fmt  # every format carries the same conversations
        for row, messages in zip(rows, convs, strict=True):
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            assert "<|im_start|>user\n" + row["instruction"] in text, fmt
            assert "<|im_start|>assistant\n" + row["output"] + "<|im_end|>" in text, fmt
