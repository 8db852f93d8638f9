"""Decoding for the embedded llama.cpp model: prompt-prefix reuse and grammar-checked sampling.

Two costs dominated a quickstart run on two cores, and both are cut here without giving up
reproducibility (the same request with the same seed gives the same output, whatever ran
before it):

**Prompt prefix reuse.** Requests of one run share long prefixes: every worker's system
prompt, the samples of a node (identical prompts), a conversation's earlier turns. The KV
cache keeps what the last request evaluated. A prompt is evaluated in *chunks whose bounds
depend on the prompt alone*: one chunk per chat message (a message starts at the template's
start-of-message token), split further every ``n_batch`` tokens from the message's start. A
new request keeps the cached prefix up to the last chunk bound that both requests evaluated
and that lies within their common tokens, and evaluates the rest chunk by chunk. Its final
chunk (the assistant header) is always evaluated, so the logits sampled first come from a
live decode. A cold request runs the very same decodes on the very same cache contents (freed
cells are refilled from the first freed one, as on a fresh cache), so reuse changes nothing
but the time.

**Grammar-checked sampling.** llama-cpp-python applies the grammar to the whole vocabulary
(~150k tokens for Qwen) before every sampled token, which ran generation at about half its
free speed. As llama.cpp's own sampler does: sample without the grammar, then ask the grammar
about that one token; only when it is refused, sample again with the grammar applied to every
candidate. Seeded, so still reproducible.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Decoder", "Generation", "Sampling", "chunk_bounds"]

#: `min_p` and `top_k` as llama-cpp-python's `create_completion` defaults them
_MIN_P = 0.05
_TOP_K = 40


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    #: prompt tokens taken from the KV cache instead of being evaluated
    cached_tokens: int = 0


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: Sequence[str]


def chunk_bounds(tokens: Sequence[int], start_token: int | None, n_batch: int) -> list[int]:
    """Chunk ends of `tokens`: before every `start_token`, and every `n_batch` tokens after.

    Every bound depends only on the tokens before it, so two prompts sharing a prefix share
    the bounds within it.
    """
    bounds: list[int] = []
    begin = 0
    for i, token in enumerate(tokens):
        if (i > begin and token == start_token) or i - begin == n_batch:
            bounds.append(i)
            begin = i
    bounds.append(len(tokens))
    return bounds


class Decoder:
    """One llama.cpp context's KV cache and sampling loop (used from one thread at a time)."""

    def __init__(self, llm: Any, lib: Any, start_token: int | None) -> None:
        self._llm = llm
        self._lib = lib
        self._start_token = start_token
        self._vocab = lib.llama_model_get_vocab(llm.model)
        #: chunk ends of the tokens the KV cache holds, each evaluated as one decode
        self._evaluated: list[int] = []

    def forget(self) -> None:
        """Treat the KV cache as empty: the next prompt is evaluated whole (benchmarks)."""
        self._evaluated = []
        self._llm.n_tokens = 0

    def generate(self, prompt: str, grammar: str, sampling: Sampling,
                 cancel: threading.Event) -> Generation:
        llm = self._llm
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) >= llm.n_ctx():
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of "
                             f"{llm.n_ctx()}")
        cached = self._evaluate(tokens)
        budget = min(sampling.max_tokens, llm.n_ctx() - len(tokens))
        samplers = _Samplers(self._lib, self._vocab, grammar, sampling)
        try:
            out, finish = self._sample(samplers, budget, sampling.stop, cancel)
        finally:
            samplers.free()
        text = llm.detokenize(out).decode("utf-8", errors="ignore")
        for stop in sampling.stop:
            if stop and stop in text:
                text, finish = text[:text.index(stop)], "stop"
        return Generation(text=text, prompt_tokens=len(tokens), completion_tokens=len(out),
                          finish_reason=finish, cached_tokens=cached)

    def _evaluate(self, tokens: list[int]) -> int:
        """Bring the KV cache to `tokens` chunk by chunk; return how many came from the cache."""
        llm = self._llm
        bounds = chunk_bounds(tokens, self._start_token, llm.n_batch)
        held = llm.input_ids[:llm.n_tokens]
        common = 0
        for a, b in zip(held, tokens, strict=False):
            if a != b:
                break
            common += 1
        evaluated = set(self._evaluated)
        keep = max((b for b in bounds[:-1] if b <= common and b in evaluated), default=0)
        self._evaluated = [b for b in self._evaluated if b <= keep]
        llm.n_tokens = keep
        begin = keep
        for end in bounds:
            if end > keep:
                llm.eval(tokens[begin:end])  # ≤ n_batch tokens: one decode
                self._evaluated.append(end)
                begin = end
        return keep

    def _sample(self, samplers: _Samplers, budget: int, stops: Sequence[str],
                cancel: threading.Event) -> tuple[list[int], str]:
        llm, lib = self._llm, self._lib
        out: list[int] = []
        tail = b""
        needles = [s.encode("utf-8") for s in stops if s]
        while len(out) < budget:
            if cancel.is_set():
                return out, "stop"
            token = samplers.sample(llm.ctx)
            if lib.llama_vocab_is_eog(self._vocab, token):
                return out, "stop"
            out.append(token)
            tail = (tail + llm.detokenize([token]))[-256:]
            if any(n in tail for n in needles):
                return out, "stop"
            llm.eval([token])
        return out, "length"


class _Samplers:
    """A free sampler chain and, with a grammar, the same chain behind the grammar."""

    def __init__(self, lib: Any, vocab: Any, grammar: str, sampling: Sampling) -> None:
        self._lib = lib
        self.grammar: Any = None
        if grammar:
            self.grammar = lib.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not self.grammar:
                raise ValueError("llama.cpp refused the output grammar")
        self.free_chain = self._chain(sampling, [])
        self.full_chain = self._chain(sampling, [self.grammar] if self.grammar else [])

    def _chain(self, sampling: Sampling, first: list[Any]) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        members = [*first]
        if sampling.temperature <= 0:
            members.append(lib.llama_sampler_init_greedy())
        else:
            members += [lib.llama_sampler_init_top_k(_TOP_K),
                        lib.llama_sampler_init_top_p(sampling.top_p, 1),
                        lib.llama_sampler_init_min_p(_MIN_P, 1),
                        lib.llama_sampler_init_temp(sampling.temperature),
                        lib.llama_sampler_init_dist(sampling.seed)]
        for member in members:
            lib.llama_sampler_chain_add(chain, member)
        return chain

    def sample(self, ctx: Any) -> int:
        lib = self._lib
        token = int(lib.llama_sampler_sample(self.free_chain, ctx, -1))
        if self.grammar is None:
            return token
        one = lib.llama_token_data(token, 1.0, 0.0)
        candidates = lib.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        if math.isinf(one.logit):  # refused: sample again, the grammar over every candidate
            return int(lib.llama_sampler_sample(self.full_chain, ctx, -1))
        lib.llama_sampler_accept(self.grammar, token)
        return token

    def free(self) -> None:
        """Free both chains (each owns its members; the grammar belongs to the full chain)."""
        self._lib.llama_sampler_free(self.free_chain)
        self._lib.llama_sampler_free(self.full_chain)
