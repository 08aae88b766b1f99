"""The embedded in-process backend: real generation, iteration-level batching, per-request seeds."""

from __future__ import annotations

import asyncio
import re

import pytest

from evolinstruct.models import ModelSpec, Request, Sampling, Transport, build
from evolinstruct.models.local import LocalBackend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    backend = build(ModelSpec(backend="local"), Transport(concurrency=8))  # the registry's way, as a run builds it
    assert isinstance(backend, LocalBackend) and backend.max_batch == 8  # --concurrency caps the batch
    yield backend
    asyncio.run(backend.aclose())


def ask(text: str, **sampling) -> Request:
    return Request([{"role": "user", "content": text}], Sampling(**{"max_tokens": 12, **sampling}))


def test_generates_and_counts_tokens(local):
    [result] = asyncio.run(local.generate([ask("What is the capital of France?", temperature=0)]))
    assert result.ok and "Paris" in result.text
    assert result.prompt_tokens > 5 and 0 < result.completion_tokens <= 12
    assert result.finish_reason in ("stop", "length")


def test_batched_rows_match_one_at_a_time(local):
    prompts = [f"Write one sentence about the number {i}." for i in range(6)]
    alone = [asyncio.run(local.generate([ask(p, temperature=0)]))[0].text for p in prompts[:2]]
    before = local.peak_batch
    together = asyncio.run(local.generate([ask(p, temperature=0) for p in prompts]))
    assert local.peak_batch > 1 or before > 1  # the six requests really shared decoding steps
    assert [r.text for r in together[:2]] == alone
    assert all(r.ok and r.text for r in together)


def test_requests_arriving_mid_batch_join_it(local):
    async def staggered():
        first = asyncio.ensure_future(local.generate([ask("Count from one to twenty.", max_tokens=24, temperature=0)]))
        await asyncio.sleep(0.3)
        second = await local.generate([ask("Name a fruit.", max_tokens=6, temperature=0)])
        return (await first)[0], second[0]

    long_one, short_one = asyncio.run(staggered())
    assert long_one.ok and short_one.ok and short_one.completion_tokens <= 6


def test_per_request_seed_decides_the_sample(local):
    def cat(seed):
        return ask("Invent a name for a cat.", temperature=1.0, top_p=0.9, seed=seed)

    results = asyncio.run(local.generate([cat(5), cat(5), cat(6), cat(7), cat(8)]))
    assert results[0].text == results[1].text  # same seed, same sample, even inside one batch
    assert len({r.text for r in results[1:]}) >= 2  # other seeds sample other names


def test_oversized_prompt_fails_only_its_own_request(local):
    huge = "word " * 9000
    results = asyncio.run(local.generate([ask(huge), ask("Say hi.", temperature=0)]))
    assert results[0].error and "exceeds the context" in results[0].error
    assert results[1].ok


def test_guided_head_is_enforced_and_the_rest_is_free(local):
    # A prompt that invites anything but a score line: the guide still makes every sample open with one,
    # in a batch that mixes guided and unguided rows.
    head = r"(10|[1-9]) (10|[1-9])\n"
    guided = [Request(ask("Tell me a story about a dragon.").messages,
                      Sampling(temperature=1.0, max_tokens=10, seed=seed), guide=head) for seed in range(4)]
    results = asyncio.run(local.generate([*guided, ask("Tell me a story about a dragon.", temperature=0)]))
    assert all(r.ok and re.match(head, r.text) for r in results[:4]), [r.text for r in results]
    assert not re.match(head, results[4].text)  # the unguided row in the same batch is untouched
    assert any(len(r.text) > len(re.match(head, r.text).group(0)) for r in results[:4])  # free text follows


def test_llamacpp_in_process_backend_generates():
    llamacpp = build(ModelSpec(backend="llamacpp", model="embedded"), Transport())
    try:
        results = asyncio.run(llamacpp.generate([ask("What is the capital of France?", temperature=0), ask("Say hi.")]))
    finally:
        asyncio.run(llamacpp.aclose())
    assert all(r.ok and r.text and r.completion_tokens > 0 for r in results), results
    assert llamacpp.model == "SmolLM2-135M-Instruct"


def test_max_batch_is_a_hard_cap():
    capped = LocalBackend(max_batch=2)
    try:
        results = asyncio.run(capped.generate([ask(f"Count to {i}.", temperature=0, max_tokens=8) for i in range(5)]))
    finally:
        asyncio.run(capped.aclose())
    assert all(r.ok for r in results)
    assert capped.peak_batch == 2
