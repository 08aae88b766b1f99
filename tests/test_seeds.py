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


@pytest.mark.parametrize(
    ("name", "content", "columns", "expected"),
    [
        # A JSON array is the whole file: what follows it was silently dropped before.
        ("two.json", '[{"instruction": "a"}]\n[{"instruction": "b"}]\n', None, "two.json:2: unexpected text after the JSON array"),
        ("tail.json", '[\n{"instruction": "a"}\n]\nx', None, "tail.json:4: unexpected text after the JSON array"),
        # An instruction must be text: no number, list, object or boolean becomes its Python repr.
        ("n.jsonl", '{"instruction": 3.5}\n', None, "n.jsonl:1: column 'instruction' holds a number, expected text"),
        ("b.jsonl", '{"instruction": true}\n', None, "b.jsonl:1: column 'instruction' holds a boolean"),
        ("l.jsonl", '{"instruction": "ok", "output": ["x"]}\n', None, "l.jsonl:1: column 'output' holds a list"),
        ("top.json", "[1, 2]\n", None, "top.json:1: expected an object (or a string), got a number"),
        # ShareGPT / OpenAI chat rows: not seeds for the chat task; say so, point at --task conversation and --column.
        ("sg.jsonl", json.dumps({"conversations": [{"from": "human", "value": "Hi"}], "title": "t"}) + "\n",
         SeedColumns(instruction="conversations"), "sg.jsonl:1: column 'conversations' holds a conversation"),
        ("oa.jsonl", json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n", None,
         "oa.jsonl:1: missing column 'instruction' (has: messages); this looks like a chat file"),
        # Nothing to evolve is an error, not a run of 0 seeds.
        ("none.jsonl", "\n\n", None, "none.jsonl:1: no seeds"),
        ("none.csv", "instruction,input\n", None, "none.csv:1: no seeds"),
        ("void.jsonl", '{"instruction": null}\n', None, "void.jsonl:1: no usable seed: all 1 rows have an empty 'instruction'"),
    ],
)
def test_wrong_input_that_was_accepted_is_one_line(tmp_path, name, content, columns, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SeedError) as info:
        list(read_seeds(path, columns))
    message = str(info.value)
    assert message.startswith(f"{path.parent}/{expected}"), message
    assert "\n" not in message
    if "conversation" in expected or "chat file" in expected:
        assert "--task conversation" in message and "--column" in message


def test_numbers_in_input_and_output_are_text_as_written(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text('{"instruction": "Add 1 and 2.", "input": 7, "output": 3}\n{"instruction": "Halve 5.", "output": 2.5}\n')
    seeds = list(read_seeds(path))
    assert [(s.input, s.output) for s in seeds] == [("7", "3"), ("", "2.5")]
    pq_file = tmp_path / "n.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"], "output": [1.0, float("nan")]}), pq_file)
    assert [s.output for s in read_seeds(pq_file)] == ["1.0", ""]  # NaN: a dataframe's empty cell


def test_a_json_array_then_only_whitespace_is_fine(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('[{"instruction": "a"}, "b"]\n\n  \n')
    assert [s.instruction for s in read_seeds(path)] == ["a", "b"]
