"""Records and samplings serialise every field (their to_dict is spelled out for speed)."""

from __future__ import annotations

from dataclasses import fields

from evolinstruct.models.base import Request, Sampling
from evolinstruct.records import Record
from evolinstruct.store import call_key, key_of, request_json


def test_to_dict_covers_every_field_and_round_trips():
    history = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    record = Record("e-1", "s-1", "s-1", 1, "deepening", "Why?", "ctx", "Because.", "m", "eliminated", "copied",
                    {"rule": 1}, {"k": [1]}, history)
    data = record.to_dict()
    assert list(data) == [f.name for f in fields(Record)]
    assert Record.from_dict(data) == record
    data["evidence"]["rule"] = 2  # a copy: the record itself is untouched
    data["history"].append({"role": "user", "content": "More?"})
    assert record.evidence == {"rule": 1} and len(record.history) == 2
    assert list(Sampling().to_dict()) == [f.name for f in fields(Sampling)]


def test_single_turn_records_keep_their_stored_shape():
    record = Record("s-1", "s-1", None, 0, "seed", "Why?", "ctx", "Because.")
    data = record.to_dict()
    assert list(data) == [f.name for f in fields(Record) if f.name != "history"]  # no empty history key
    assert Record.from_dict(data) == record and "history" not in record.dataset_row()
    assert record.messages() == [{"role": "user", "content": "Why?\r\nctx"}, {"role": "assistant", "content": "Because."}]
    turn = Record("e-1", "s-1", "s-1", 1, "deepening", "And then?", history=[{"role": "user", "content": "Why?"},
                                                                           {"role": "assistant", "content": "So."}])
    assert [m["content"] for m in turn.messages(with_output=False)] == ["Why?", "So.", "And then?"]
    assert turn.dataset_row()["history"] == turn.history


def test_call_keys_hash_the_stored_canonical_request():
    plain = Request([{"role": "user", "content": "hi"}], Sampling(temperature=0.5, seed=3))
    guided = Request(plain.messages, plain.sampling, guide=r"\d")
    assert call_key("m", plain) == key_of(request_json("m", plain))
    assert "guide" not in request_json("m", plain)  # unguided keys are those of earlier versions
    assert call_key("m", guided) != call_key("m", plain) and call_key("m", plain) != call_key("n", plain)
