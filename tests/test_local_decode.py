"""The embedded model's decoder: prompt-prefix reuse that never changes an output, and
grammar-checked sampling that never leaves the grammar.

The chunking tests are pure. Tests marked ``local_model`` load the real default GGUF (CI
installs the ``[local]`` extra) and compare the logits of a cold cache with those of a cache
holding another request's prefix, bit for bit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from agentkit.models._llama_decode import Sampling, chunk_bounds
from agentkit.models.local import LoadedModel, LoadedModels, LoadKey
from agentkit.models.weights import DEFAULT_LOCAL_MODEL, resolve_model_path

S = 99  # the start-of-message token in the pure tests


def test_chunks_start_at_each_message_and_split_every_n_batch() -> None:
    tokens = [S, 1, 2, S, 3, 4, 5, 6, 7, 8, S, 9]
    assert chunk_bounds(tokens, S, n_batch=4) == [3, 7, 10, 12]
    assert chunk_bounds(tokens, None, n_batch=5) == [5, 10, 12]
    assert chunk_bounds([], S, n_batch=4) == [0]


def test_prompts_sharing_a_prefix_share_its_chunk_bounds() -> None:
    """What reuse rests on: a bound depends only on the tokens before it."""
    shared = [S, 1, 2, 3, 4, 5, 6, S, 8, 9]
    a = chunk_bounds([*shared, 10, 11, S, 12], S, n_batch=4)
    b = chunk_bounds([*shared, 20, S, 21, 22, 23, 24, 25], S, n_batch=4)
    inside = [x for x in a if x <= len(shared)]
    assert inside == [x for x in b if x <= len(shared)] == [4, 7]


# ---------------------------------------------------------------------------------------------
# The real default model


@pytest.fixture(scope="module")
def loaded() -> Iterator[LoadedModel]:
    registry = LoadedModels()
    try:
        yield registry.get(LoadKey(str(resolve_model_path(DEFAULT_LOCAL_MODEL)), 2048, 2))
    finally:
        registry.unload_all()


SYSTEM = ("You are one agent of a team. Answer with Python code that prints the result. "
          "Keep the code short. ") * 6


def _prompt(model: LoadedModel, *turns: tuple[str, str]) -> str:
    chat = [{"role": "system", "content": SYSTEM}, *({"role": r, "content": c} for r, c in turns)]
    return str(model.formatter(messages=chat).prompt)


def _run(model: LoadedModel, prompt: str, grammar: str = "", *, seed: int = 3,
         max_tokens: int = 24) -> tuple[str, int, np.ndarray]:
    """Text, cached prompt tokens, and the logits the context holds afterwards (a copy)."""
    gen = model.decoder.generate(prompt, grammar, Sampling(max_tokens, 0.7, 0.95, seed, ()),
                                 threading.Event())
    lib, llm = model.lib, model.llm
    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    return gen.text, gen.cached_tokens, logits.copy()


@pytest.mark.local_model
def test_a_cached_prefix_changes_neither_logits_nor_output(loaded: LoadedModel) -> None:
    """The same request cold, after a request sharing only the system prompt, after a longer
    conversation it is the start of, and after itself: the same bits every time."""
    question = ("user", "Print the sum of the squares of 1 to 20.")
    target = _prompt(loaded, question)
    others = [_prompt(loaded, ("user", "Print the first ten primes.")),
              _prompt(loaded, question, ("assistant", "print(sum(i*i for i in range(1, 21)))"),
                      ("user", "Output: 2870. Now print it doubled.")),
              target]
    loaded.decoder.forget()
    cold_text, cold_cached, cold_logits = _run(loaded, target)
    assert cold_cached == 0 and cold_text
    for other in others:
        _run(loaded, other)
        text, cached, logits = _run(loaded, target)
        assert cached > 100  # at least the system prompt came from the cache
        assert text == cold_text
        assert np.array_equal(logits, cold_logits)


@pytest.mark.local_model
def test_identical_requests_reuse_all_but_the_assistant_header(loaded: LoadedModel) -> None:
    prompt = _prompt(loaded, ("user", "Print 6 times 7."))
    n = len(loaded.llm.tokenize(prompt.encode(), add_bos=True, special=True))
    _run(loaded, prompt, seed=1)
    _, cached, _ = _run(loaded, prompt, seed=2)
    assert n - 5 <= cached < n


@pytest.mark.local_model
def test_a_refused_token_is_sampled_again_under_the_grammar(loaded: LoadedModel) -> None:
    """The model's own first choice ("42") is outside the grammar; every seed lands inside."""
    prompt = _prompt(loaded, ("user", "What is 6 times 7? Reply with the number only."))
    free, _, _ = _run(loaded, prompt, seed=0, max_tokens=4)
    assert free.strip().startswith("42")
    outputs = {_run(loaded, prompt, 'root ::= "7" | "8" | "9"', seed=s, max_tokens=4)[0]
               for s in range(6)}
    assert outputs <= {"7", "8", "9"} and outputs
