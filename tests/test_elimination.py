"""The four elimination rules, on real model outputs (SmolLM2-135M and typical ChatGPT refusals)."""

from __future__ import annotations

from evolinstruct.evolve.rules import (
    COPIED_PROMPT,
    EMPTY,
    NO_INFORMATION_GAIN,
    PUNCT_STOPWORDS,
    SORRY_SHORT,
    check_equality,
    check_instruction,
    check_response,
    parse_equality,
)

# Evolutions SmolLM2-135M-Instruct actually produced for Alpaca seeds in a demo run.
ECHOED = (
    '"What are the three primary colors?\n#Rewritten Prompt#:\nThis is an extremely challenging prompt requiring '
    "a more challenging Rewrite."
)
ECHOED_CREATED = "#Created Prompt#: Design a bakery logo using only three colours."
GOOD_EVOLUTION = (
    "Give three tips for staying healthy, and for each tip explain the physiological mechanism that makes it work."
)


def test_rule4_copied_prompt_words():
    verdict = check_instruction(ECHOED)
    assert verdict and verdict.reason == COPIED_PROMPT
    assert verdict.evidence["phrase"] == "rewritten prompt"
    assert "#Rewritten Prompt#" in verdict.evidence["context"]
    assert check_instruction(ECHOED_CREATED).reason == COPIED_PROMPT
    assert check_instruction("Rewrite the given prompt in passive voice.").reason == COPIED_PROMPT
    assert check_instruction(GOOD_EVOLUTION) is None


def test_empty_evolution_is_eliminated_before_any_call():
    assert check_instruction("   \n").reason == EMPTY


def test_rule2_sorry_and_short():
    refusal = "I'm sorry, but as an AI language model I cannot browse the internet to find today's stock prices."
    verdict = check_response(refusal)
    assert verdict and verdict.reason == SORRY_SHORT and verdict.evidence["words"] < 80
    # "sorry" in a long, useful answer is not a failure (rule 2 needs both).
    long_answer = "Sorry is a word with many uses. " + " ".join(["Apologies can be sincere and specific."] * 20)
    assert check_response(long_answer) is None
    assert check_response("Here is a short answer without apology.") is None


def test_rule3_punctuation_and_stop_words_only():
    for text in ("...", "?!", "the of and to", "It is what it is.", "* * *\n---"):
        verdict = check_response(text)
        assert verdict and verdict.reason == PUNCT_STOPWORDS, text
    assert check_response("Paris.") is None
    assert check_response("42") is None


def test_rule1_equality_judge_parsing():
    assert parse_equality("Equal") is True
    assert parse_equality("Not Equal") is False
    assert parse_equality("  not equal.") is False
    assert parse_equality("Your Judgement: Equal") is True
    assert parse_equality("The two prompts are not equal because the second adds a constraint.") is False
    assert parse_equality("I think the first prompt is better.") is None
    verdict, parsed = check_equality("Equal")
    assert parsed and verdict.reason == NO_INFORMATION_GAIN
    verdict, parsed = check_equality("Not Equal")
    assert parsed and verdict is None
    verdict, parsed = check_equality("#Rewritten Prompt#: give me five tips")  # a weak judge's real output
    assert not parsed and verdict is None  # unparseable keeps the evolution, and is counted by the caller
