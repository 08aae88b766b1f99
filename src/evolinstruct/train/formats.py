"""Prompt formats: how an example becomes TRL's prompt-completion row.

Both formats give TRL a prompt and a completion, so TRL's completion-only loss masks the prompt:
- `paper`: the WizardLM training format, `{instruction}\\n\\n### Response:` then the response and EOS
  (strings; TRL appends the tokenizer's EOS to the completion).
- `chat`: the model's own chat template, a user turn then an assistant turn (conversational rows;
  the completion is whatever the template renders for the assistant turn, end-of-turn token included).

A conversation (an example with `history`) trains on every assistant turn: when any example of a dataset
has history, its rows are tokenized here turn by turn with the tokenizer's chat template (PAPER_CHAT_TEMPLATE
in the paper format), `completion_mask` 1 on exactly the assistant turns' tokens, and TRL builds the labels
from that mask. Single-turn datasets keep TRL's own prompt-completion path.

A model trained in the paper format gets PAPER_CHAT_TEMPLATE saved as its chat template, so every
chat-template consumer (the local backend, vLLM, llama.cpp servers) prompts it the way it was trained.
"""

from __future__ import annotations

from typing import Any

from .data import Example

PROMPT_FORMATS = ("paper", "chat")
PAPER_RESPONSE_TAG = "\n\n### Response:"

# System and user turns joined by blank lines, then the response tag: the paper format for any chat.
PAPER_CHAT_TEMPLATE = (
    "{%- set ns = namespace(first=true) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '" + PAPER_RESPONSE_TAG.replace("\n", "\\n") + "' + message['content'] + eos_token }}"
    "{%- set ns.first = true -%}"
    "{%- else -%}"
    "{{ ('' if ns.first else '\\n\\n') + message['content'] }}"
    "{%- set ns.first = false -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '" + PAPER_RESPONSE_TAG.replace("\n", "\\n") + "' }}{%- endif -%}"
)


def paper_prompt(instruction: str) -> str:
    return instruction + PAPER_RESPONSE_TAG


def to_row(example: Example, prompt_format: str) -> dict[str, Any]:
    if prompt_format == "paper":
        return {"prompt": paper_prompt(example.prompt), "completion": example.response}
    if prompt_format == "chat":
        return {
            "prompt": [{"role": "user", "content": example.prompt}],
            "completion": [{"role": "assistant", "content": example.response}],
        }
    raise ValueError(f"--prompt-format must be one of {', '.join(PROMPT_FORMATS)}, not '{prompt_format}'")


def conversation(example: Example) -> list[dict[str, str]]:
    return [*example.history, {"role": "user", "content": example.prompt},
            {"role": "assistant", "content": example.response}]


def tokenized_row(example: Example, tokenizer: Any) -> dict[str, list[int]]:
    """A conversation's tokens with `completion_mask` 1 on every assistant turn (its end-of-turn included) and
    0 on everything else, rendered turn by turn with the tokenizer's chat template."""
    messages = conversation(example)
    ids: list[int] = []
    mask: list[int] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template does not render a conversation as a growing text, so its "
                             "assistant turns cannot be masked; use --prompt-format paper")
        for text, bit in ((prompt[len(done):], 0), (full[len(prompt):], 1)):
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            mask += [bit] * len(piece)
        done = full
    return {"input_ids": ids, "completion_mask": mask}


def to_dataset(examples: list[Example], prompt_format: str, tokenizer: Any = None) -> Any:
    from datasets import Dataset

    if tokenizer is not None and any(e.history for e in examples):
        return Dataset.from_list([tokenized_row(e, tokenizer) for e in examples])
    return Dataset.from_list([to_row(e, prompt_format) for e in examples])
