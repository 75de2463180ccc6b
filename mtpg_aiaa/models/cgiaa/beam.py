"""ClipCap's beam search, as CG-IAA's released generator runs it, in two implementations.

Semantics (ClipCap ``generate_beam``; beam 5, 67 steps, stop token "." in the release):

- step 1: the ``beam`` best first tokens of ``softmax(logits / T).log()``;
- later steps: a stopped beam may only continue with token 0 at log-prob 0; every
  candidate is ranked by (summed log-prob) / (its beam's length), where a beam's length
  counts its generated tokens and stops growing once the beam has stopped; the ranking
  picks ``beam`` candidates over all beams at once; the running sum is recovered as
  ``average * length`` (the release's arithmetic, kept so ties break the same way);
- the search ends when every beam has stopped or after ``max_steps`` tokens;
- the beams are returned best first by average score, each cut to its length.

``literal_beam_search`` transcribes that loop for one prefix (the whole sequence re-run
each step) and is the reference the tests hold ``beam_search`` to. ``beam_search`` runs many
prefixes at once with GPT-2's key/value cache and drops finished prefixes from the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, GPT2LMHeadModel

RELEASED_BEAM_SIZE = 5
RELEASED_MAX_STEPS = 67


@dataclass
class BeamResult:
    """The beams of one prefix, best first: ``tokens[i]`` (cut to its length) and ``scores[i]``
    (the length-averaged log-probability)."""

    tokens: list[list[int]]
    scores: list[float]

    @property
    def best(self) -> list[int]:
        return self.tokens[0]


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    # softmax followed by log, not log_softmax: the release's arithmetic (their roundings differ)
    return (logits / (temperature if temperature > 0 else 1.0)).softmax(-1).log()


@torch.no_grad()
def literal_beam_search(
    gpt: GPT2LMHeadModel,
    prefix: torch.Tensor,
    stop_token: int,
    beam_size: int = RELEASED_BEAM_SIZE,
    max_steps: int = RELEASED_MAX_STEPS,
    temperature: float = 1.0,
) -> BeamResult:
    """ClipCap's loop step for step, for one prefix ``[1, P, D]`` (no cache)."""
    device = prefix.device
    lengths = torch.ones(beam_size, device=device)
    stopped = torch.zeros(beam_size, device=device, dtype=torch.bool)
    sequence, tokens, scores = prefix, None, None
    for _ in range(max_steps):
        log_probs = _log_probs(gpt(inputs_embeds=sequence).logits[:, -1, :], temperature)
        if scores is None:
            scores, next_tokens = log_probs.topk(beam_size, -1)
            sequence = sequence.expand(beam_size, *sequence.shape[1:])
            next_tokens, scores = next_tokens.permute(1, 0), scores.squeeze(0)
            tokens = next_tokens
        else:
            log_probs[stopped] = -float("inf")
            log_probs[stopped, 0] = 0
            summed = scores[:, None] + log_probs
            lengths[~stopped] += 1
            averaged, flat = (summed / lengths[:, None]).view(-1).topk(beam_size, -1)
            source = flat // summed.shape[1]
            lengths = lengths[source]
            next_tokens = (flat % summed.shape[1]).unsqueeze(1)
            tokens = torch.cat((tokens[source], next_tokens), dim=1)
            sequence = sequence[source]
            scores = averaged * lengths
            stopped = stopped[source]
        embedded = gpt.transformer.wte(next_tokens.squeeze()).view(sequence.shape[0], 1, -1)
        sequence = torch.cat((sequence, embedded), dim=1)
        stopped = stopped + next_tokens.eq(stop_token).squeeze()
        if stopped.all():
            break
    averages = scores / lengths
    order = averages.argsort(descending=True)
    rows = tokens.tolist()
    return BeamResult(
        tokens=[rows[i][: int(lengths[i])] for i in order.tolist()],
        scores=[float(averages[i]) for i in order.tolist()],
    )


class _Search:
    """The state of a batched search: ``[N, beam]`` per-beam tensors for the N unfinished prefixes."""

    def __init__(self, first: torch.Tensor, beam_size: int, stop_token: int):
        # first: [N, V] log-probs after the prefix
        self.scores, next_tokens = first.topk(beam_size, -1)  # [N, beam]
        self.tokens = next_tokens.unsqueeze(-1)  # [N, beam, steps]
        self.lengths = torch.ones_like(self.scores)
        self.stopped = next_tokens.eq(stop_token)
        self.last = next_tokens

    def step(self, log_probs: torch.Tensor, stop_token: int) -> None:
        """Advance with ``log_probs [N, beam, V]``; reorders the beams (``self.source``)."""
        n, beam, vocab = log_probs.shape
        log_probs = log_probs.masked_fill(self.stopped.unsqueeze(-1), -float("inf"))
        log_probs[..., 0] = torch.where(self.stopped, torch.zeros_like(self.scores), log_probs[..., 0])
        summed = self.scores.unsqueeze(-1) + log_probs
        lengths = self.lengths + (~self.stopped).to(self.lengths.dtype)
        averaged, flat = (summed / lengths.unsqueeze(-1)).view(n, beam * vocab).topk(beam, -1)
        source = flat // vocab
        self.source = source
        self.lengths = lengths.gather(1, source)
        self.last = flat % vocab
        self.tokens = torch.cat((self.tokens.gather(1, source.unsqueeze(-1).expand_as(self.tokens)),
                                 self.last.unsqueeze(-1)), dim=-1)  # fmt: skip
        self.scores = averaged * self.lengths
        self.stopped = self.stopped.gather(1, source) | self.last.eq(stop_token)

    def results(self, rows: torch.Tensor) -> list[BeamResult]:
        averages = self.scores[rows] / self.lengths[rows]
        out = []
        for averaged, lengths, tokens in zip(averages, self.lengths[rows], self.tokens[rows].tolist()):
            order = averaged.argsort(descending=True).tolist()
            out.append(BeamResult([tokens[i][: int(lengths[i])] for i in order], [float(averaged[i]) for i in order]))
        return out

    def keep(self, rows: torch.Tensor) -> None:
        for name in ("scores", "tokens", "lengths", "stopped", "last"):
            setattr(self, name, getattr(self, name)[rows])


@torch.no_grad()
def beam_search(
    gpt: GPT2LMHeadModel,
    prefixes: torch.Tensor,
    stop_token: int,
    beam_size: int = RELEASED_BEAM_SIZE,
    max_steps: int = RELEASED_MAX_STEPS,
    temperature: float = 1.0,
    use_cache: bool = True,
) -> list[BeamResult]:
    """The released beam search for a batch of prefixes ``[N, P, D]``, with a key/value cache.

    Gives the tokens of ``literal_beam_search`` run on each prefix alone (up to floating-point
    differences between cached and full attention, which do not change a ranking unless two
    candidates tie to ~1e-6). ``use_cache=False`` re-runs the sequences each step (for checks).
    Returns one :class:`BeamResult` per prefix, in order.
    """
    count, device = prefixes.shape[0], prefixes.device
    results: list[BeamResult | None] = [None] * count
    cache = DynamicCache() if use_cache else None
    output = gpt(inputs_embeds=prefixes, past_key_values=cache, use_cache=use_cache, logits_to_keep=1)
    search = _Search(_log_probs(output.logits[:, -1, :], temperature), beam_size, stop_token)
    active = torch.arange(count, device=device)  # original index of each row of the search
    # the uncached path keeps every beam's whole input sequence; the cached one only the cache
    sequence = None if use_cache else prefixes.repeat_interleave(beam_size, dim=0)
    if use_cache:
        cache.batch_repeat_interleave(beam_size)
    for step in range(1, max_steps + 1):
        done = search.stopped.all(-1)
        if step == max_steps or bool(done.any()):
            finished = torch.arange(len(active), device=device) if step == max_steps else done.nonzero().squeeze(-1)
            for row, result in zip(finished.tolist(), search.results(finished)):
                results[int(active[row])] = result
            if step == max_steps or bool(done.all()):
                break
            kept = (~done).nonzero().squeeze(-1)
            search.keep(kept)
            active = active[kept]
            beam_rows = (kept.unsqueeze(-1) * beam_size + torch.arange(beam_size, device=device)).view(-1)
            if use_cache:
                cache.batch_select_indices(beam_rows)
            else:
                sequence = sequence[beam_rows]
        embedded = gpt.transformer.wte(search.last.reshape(-1, 1))  # [n * beam, 1, D]
        if use_cache:
            logits = gpt(inputs_embeds=embedded, past_key_values=cache, use_cache=True).logits[:, -1, :]
        else:
            sequence = torch.cat((sequence, embedded), dim=1)
            logits = gpt(inputs_embeds=sequence, logits_to_keep=1).logits[:, -1, :]
        search.step(_log_probs(logits, temperature).view(len(active), beam_size, -1), stop_token)
        beam_rows = (torch.arange(len(active), device=device).unsqueeze(-1) * beam_size + search.source).view(-1)
        if use_cache:
            cache.reorder_cache(beam_rows)
        else:
            sequence = sequence[beam_rows]
    return results  # type: ignore[return-value]
