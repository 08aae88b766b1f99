"""Seed input: every supported format, and a one-line error naming file and line for bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evolinstruct.records import join_input
from evolinstruct.seeds import SeedColumns, SeedError, SeedReadStats, read_seeds
from runhelpers import CLI

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "seeds"


def test_alpaca_json_from_shared_data():
    seeds = list(read_seeds(SHARED / "alpaca_52k.json", limit=5))
    assert len(seeds) == 5
    assert seeds[0].instruction == "Give three tips for staying healthy."
    assert [s.index for s in seeds] == [0, 1, 2, 3, 4]
    assert seeds[0].source.startswith("alpaca_52k.json:")
    with_input = next(s for s in read_seeds(SHARED / "alpaca_52k.json", limit=50) if s.input)
    assert join_input(with_input.instruction, with_input.input) == with_input.instruction + "\r\n" + with_input.input


def test_selfinstruct_jsonl_uses_first_instance():
    seeds = list(read_seeds(SHARED / "selfinstruct_seed_175.jsonl"))
    assert len(seeds) == 175
    raw = [json.loads(line) for line in (SHARED / "selfinstruct_seed_175.jsonl").read_text().splitlines()]
    assert seeds[0].instruction == raw[0]["instruction"]
    assert seeds[0].output == raw[0]["instances"][0]["output"]


def test_csv_and_parquet_with_chosen_column(tmp_path):
    csv_file = tmp_path / "s.csv"
    csv_file.write_text('prompt,other\n"Name a color, please",x\nSay hi,y\n', encoding="utf-8")
    seeds = list(read_seeds(csv_file, SeedColumns(instruction="prompt", input=None)))
    assert [s.instruction for s in seeds] == ["Name a color, please", "Say hi"]
    assert seeds[1].source == "s.csv:3"

    pq_file = tmp_path / "s.parquet"
    pq.write_table(pa.table({"q": ["one", "", "three"]}), pq_file)
    stats = SeedReadStats()
    seeds = list(read_seeds(pq_file, SeedColumns(instruction="q", input=None), stats=stats))
    assert [s.instruction for s in seeds] == ["one", "three"]
    assert stats.skipped_empty == 1


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.jsonl", b'{"instruction": "ok"}\n{"instruction": "broken"\n', "bad.jsonl:2: malformed JSON line"),
        ("col.jsonl", b'{"instruction": "ok"}\n\n{"prompt": "x"}\n', "col.jsonl:3: missing column 'instruction'"),
        ("latin.jsonl", b'{"instruction": "ok"}\n{"instruction": "caf\xe9"}\n', "latin.jsonl:2: not UTF-8 text"),
        ("arr.json", b'[\n {"instruction": "a"},\n {"instruction": "b",}\n]\n', "arr.json:3: malformed JSON"),
        ("bad.txt", b"hello\n", "unknown seed format"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SeedError) as info:
        list(read_seeds(path))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_empty_instructions_are_skipped_and_counted(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"instruction": "a"}\n{"instruction": "   "}\n{"instruction": ""}\n{"instruction": "b"}\n')
    stats = SeedReadStats()
    assert [s.instruction for s in read_seeds(path, stats=stats)] == ["a", "b"]
    assert (stats.read, stats.skipped_empty) == (2, 2)


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "fine"}\n{oops}\n')
    out = tmp_path / "run"
    proc = subprocess.run(
        [*CLI, "evolve", str(seeds), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "seeds.jsonl:2: malformed JSON line" in lines[0]
    assert not out.exists()

    missing = subprocess.run(
        [*CLI, "evolve", str(tmp_path / "nope.json"), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode == 2 and "nope.json:0: no such file" in missing.stderr
    assert not out.exists()
