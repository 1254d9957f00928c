"""Sample-and-rank (METHOD.md §6): how the model answers. Pure torch (no Django); the Django
side, which apps call, is ``trainer.inference``.

1. The prompt ``CONTEXT<sentinel>`` is encoded once; its key/value cache is copied to
   ``n`` rows (16) and each row samples a response independently with top-k (k = 40, no
   temperature) until ``<eos>`` or ``max_new_tokens``. The log-probability of each sampled token
   under the model (not the top-k renormalised one) is summed as it goes.
2. Scoring an attribute reuses that cache: after the sampling, row ``i`` holds its context and
   response (positions ``< prompt + length_i``) followed by the tokens of rows that ran longer.
   One forward of one token per row, ``<ATTRIBUTE>`` at position ``prompt + length_i`` with the
   positions after the response masked (``position_ids`` of the model), gives P(``<1>``) against
   ``<0>`` (only those two logits are computed); the attribute token goes into one free
   position after a copy of the cache, never into the cache, and the next attribute overwrites
   it. Four attributes cost four one-token forwards instead of re-encoding the 16 sequences.
3. Ranking: a pre-trained model ranks by ``log_likelihood / length ** length_penalty`` (1.0: the
   mean token log-likelihood, ``<eos>`` included). A fine-tuned model (with discriminators) drops
   candidates whose P(UNSAFE = 0) is under ``safety_threshold`` and ranks the rest by
   3·P(SENSIBLE) + P(SPECIFIC) + P(INTERESTING); when none is safe enough, none is chosen
   (``Answer.chosen`` is None) and the caller sends a safe fallback reply instead.

P(rating) is normalised over the two rating tokens, so a small model that puts mass elsewhere
after ``<ATTRIBUTE>`` still gives a probability between 0 and 1.

The candidates, the settings and ``rank`` are ``trainer.ranking``'s (imported from here). Any
causal LM the trainer loads samples and scores here (``trainer.causal_lm``): ours, and imported
transformers models such as GPT-2 and Llama, whose absolute or rotary positions are given as each
row's real position (``position_ids``) wherever padding would move them.

Several contexts are answered in one batch (``respond_batch``, what an evaluation runs): their
prompts are padded on the left to the longest and masked, so every row's response starts at the
same cache position and step 2 works unchanged (the padding stays masked). One context is a batch
of one, with no padding: chats and evaluations run the same code with the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from trainer import causal_lm, formats
from trainer.kv_cache import OneFreePosition, OneMoreToken, SharedPromptCache
from trainer.ranking import RANKED_ATTRIBUTES, Answer, Candidate, Settings, rank
from trainer.tokenizer import ATTRIBUTE_TOKENS, EOS, RATING_TOKENS, RESEARCH_USER, TS, special_id

# Control characters (a byte-level model can sample any byte, NUL included) never reach a turn.
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\n\t")


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of sampled ids: special tokens and control characters dropped, rule 1's space off."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True).translate(_CONTROL)
    return text[1:] if text.startswith(" ") else text


@dataclass
class Sampled:
    """What ``Scorer.sample_batch`` sampled: each prompt's candidates, and the cache (every row's
    prompt, left-padded to ``prompt_length``, then its response: a ``SharedPromptCache`` for our
    model, a ``DynamicCache`` for another; None when each prompt was sampled alone) with the
    padding mask of each row (None when no prompt was padded), and the prompts as encoded."""

    candidates: list[list[Candidate]]
    cache: SharedPromptCache | DynamicCache | None
    prompt_length: int
    prompt_mask: torch.Tensor | None
    prompts: list[list[int]] = field(default_factory=list)


@dataclass
class Research:
    """The research loop's trace (METHOD.md §7): queries, what the toolset answered, the result."""

    base: str
    steps: list[dict[str, str]]  # [{"query", "title", "url", "snippet"}]
    response: str
    capped: bool  # the query cap forced the answer


class Scorer:
    """A model with its tokenizer, ready to sample and score (``model.eval()``): ours or an
    imported transformers model (``trainer.causal_lm``). Every tensor made here is on the
    model's device (``model.device``).

    Our model samples into a ``SharedPromptCache``; another into a ``DynamicCache``, with each
    row's real positions (``position_ids``) when prompts are padded. Scoring reuses the sampling
    cache when the model allows it (``causal_lm.reuses_cache``; ``reuse_cache=False`` turns it
    off) and otherwise encodes each sequence with its attribute token: the same probabilities.
    A model that takes no ``position_ids`` samples each prompt of a padded batch alone."""

    def __init__(
        self, model: Any, tokenizer: Any, *, discriminators: bool, reuse_cache: bool | None = None
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.discriminators = discriminators
        self.device = causal_lm.device_of(model)
        self.groundwork = causal_lm.is_groundwork(model)
        self.positions = causal_lm.accepts_position_ids(model)
        self.reuse_cache = causal_lm.reuses_cache(model) if reuse_cache is None else reuse_cache
        self.eos = special_id(tokenizer, EOS)
        # Padding is masked or after a row's end, never read: a tokenizer without a pad token
        # pads with <eos>.
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.rating = (special_id(tokenizer, RATING_TOKENS[0]), special_id(tokenizer, RATING_TOKENS[1]))
        self.attribute_ids = {
            name: special_id(tokenizer, ATTRIBUTE_TOKENS[name]) for name in RANKED_ATTRIBUTES
        }
        self.ts = special_id(tokenizer, TS)
        self.user = special_id(tokenizer, RESEARCH_USER)

    # --- sampling ---------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self, prompt: Sequence[int], settings: Settings, generator: torch.Generator | None = None
    ) -> tuple[list[Candidate], SharedPromptCache, int]:
        """``settings.candidates`` responses to ``prompt``; the cache holds prompt + responses.
        One context of ``sample_batch``: the same code answers one context or many."""
        sampled = self.sample_batch([prompt], settings, generator)
        return sampled.candidates[0], sampled.cache, sampled.prompt_length

    @torch.no_grad()
    def sample_batch(
        self, prompts: Sequence[Sequence[int]], settings: Settings, generator: torch.Generator | None = None
    ) -> Sampled:
        """``settings.candidates`` responses to each of ``prompts``, all in one batch.

        The prompts are padded on the left to the longest (masked: a row never attends to its
        padding; position bias is relative, so padding does not move a token), encoded once, and
        each prompt's cache is copied to its ``n`` rows; every row then samples top-k as ``sample``
        does, until every row of the batch has ended or ``max_new_tokens``. One prompt has no
        padding and no mask: exactly the one-context path. Row ``b * n + i`` is candidate ``i``
        of prompt ``b``."""
        n = settings.candidates
        rows = [list(prompt)[-settings.max_prompt_tokens :] for prompt in prompts]
        if not rows:
            raise ValueError("no prompt to sample from")
        width = max(len(row) for row in rows)
        padded = any(len(row) < width for row in rows)
        if padded and not self.positions:
            # Without position_ids, left padding would move every token of a short prompt.
            alone = [self.sample_batch([row], settings, generator) for row in rows]
            return Sampled([one.candidates[0] for one in alone], None, 0, None, rows)
        device = self.device
        prompt_ids = torch.full((len(rows), width), self.pad, dtype=torch.long, device=device)  # (B, W)
        prompt_mask = (
            torch.zeros((len(rows), width), dtype=torch.long, device=device) if padded else None
        )  # (B, W)
        for b, row in enumerate(rows):
            prompt_ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long, device=device)
            if prompt_mask is not None:
                prompt_mask[b, width - len(row) :] = 1
        cache: SharedPromptCache | DynamicCache
        if self.groundwork:
            cache = SharedPromptCache(settings.max_new_tokens, self.model.config.num_hidden_layers)
        else:
            cache = DynamicCache(config=self.model.config)
        # Our positions are relative: padding moves nothing. Others: each row's real positions.
        absolute = prompt_mask is not None and not self.groundwork
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0) if absolute else None  # (B, W)
        logits = self._last_logits(prompt_ids, cache, prompt_mask, positions)  # (B, V)
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)  # (B*n, V)
        row_mask = None if prompt_mask is None else prompt_mask.repeat_interleave(n, dim=0)  # (B*n, W)
        prompt_rows = row_mask
        # The position of each row's next token (absolute positions only).
        following = row_mask.sum(-1, keepdim=True) if absolute and row_mask is not None else None  # (B*n, 1)
        total = logits.shape[0]
        log_likelihood = torch.zeros(total, device=device)
        lengths = torch.zeros(total, dtype=torch.long, device=device)
        finished = torch.zeros(total, dtype=torch.bool, device=device)
        sampled: list[torch.Tensor] = []
        fed = 0  # how many sampled steps are in the cache
        for _ in range(settings.max_new_tokens):
            log_probs = torch.log_softmax(logits, dim=-1)  # (B*n, V)
            top_values, top_ids = logits.topk(min(settings.top_k, logits.shape[-1]), dim=-1)  # (B*n, k)
            pick = torch.multinomial(torch.softmax(top_values, dim=-1), 1, generator=generator)  # (B*n, 1)
            token = top_ids.gather(1, pick).squeeze(1)  # (B*n,)
            token = torch.where(finished, torch.full_like(token, self.pad), token)
            log_likelihood += torch.where(finished, 0.0, log_probs.gather(1, token[:, None]).squeeze(1))
            ended = ~finished & (token == self.eos)
            lengths += (~finished & ~ended).long()
            finished |= ended
            sampled.append(token)
            if finished.all():
                break
            row_mask = self._extend(row_mask)
            logits = self._last_logits(token[:, None], cache, row_mask, following)
            following = None if following is None else following + 1
            fed += 1
        if fed < len(sampled):  # rows cut at max_new_tokens: put their last token in the cache too
            self._last_logits(sampled[-1][:, None], cache, self._extend(row_mask), following)
        # (B*n, S)
        steps = (
            torch.stack(sampled, dim=1)
            if sampled
            else torch.zeros((total, 0), dtype=torch.long, device=device)
        )
        groups: list[list[Candidate]] = []
        for b in range(len(rows)):
            group = []
            for i in range(n):
                row = b * n + i
                ids = steps[row, : lengths[row]].tolist()
                group.append(
                    Candidate(
                        index=i,
                        text=decode(self.tokenizer, ids),
                        ids=ids,
                        length=int(lengths[row]),
                        finished=bool(finished[row]),
                        log_likelihood=float(log_likelihood[row]),
                    )
                )
            groups.append(group)
        return Sampled(groups, cache, width, prompt_rows, rows)

    def _last_logits(
        self,
        ids: torch.Tensor,
        cache: SharedPromptCache | DynamicCache,
        mask: torch.Tensor | None,
        positions: torch.Tensor | None,
    ) -> torch.Tensor:
        """The next-token logits (rows, V) after ``ids``, written into ``cache``; ``positions``
        only when the model needs them (a padded batch of a model with absolute positions)."""
        extra = {} if positions is None else {"position_ids": positions}
        return self.model(ids, cache=cache, attention_mask=mask, **extra).logits[:, -1].float()

    @staticmethod
    def _extend(mask: torch.Tensor | None) -> torch.Tensor | None:
        """The attention mask with one more position, seen by its row (a new token)."""
        if mask is None:
            return None
        return torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)

    # --- scoring ----------------------------------------------------------------------------

    @torch.no_grad()
    def score_with_cache(
        self,
        cache: DynamicCache | SharedPromptCache,
        prompt_length: int,
        lengths: Sequence[int],
        attributes: Sequence[str],
        prompt_mask: torch.Tensor | None = None,
    ) -> dict[str, list[float]]:
        """P(attribute = 1) of each row, reusing the sampling cache (one token per attribute);
        ``prompt_mask`` (rows, prompt_length) is a batch's left padding (``Sampled.prompt_mask``).

        The cache is read, never changed: each layer's keys and values are copied once into a
        buffer with one free position, where every attribute's one-token forward puts its own.
        The token's position: for our model its cache index right after the response (positions
        are relative, ``GroundworkModel.compute_bias``); for another, its real position, the
        number of positions it sees before it."""
        total = cache.get_seq_length()
        device = self.device
        ends = torch.tensor([prompt_length + length for length in lengths], device=device)  # (n,)
        positions = torch.arange(total + 1, device=device)[None, :]  # (1, total + 1)
        mask = ((positions < ends[:, None]) | (positions == total)).long()  # (n, total + 1)
        if prompt_mask is not None:
            mask[:, :prompt_length] *= prompt_mask  # a row's padding stays unseen
        where = ends[:, None] if self.groundwork else mask[:, :total].sum(-1, keepdim=True)  # (n, 1)
        slot = OneMoreToken(cache) if isinstance(cache, SharedPromptCache) else OneFreePosition(cache)
        out: dict[str, list[float]] = {}
        for name in attributes:
            token = torch.full((len(lengths), 1), self.attribute_ids[name], device=device)
            hidden = causal_lm.hidden_states(
                self.model, token, cache=slot, attention_mask=mask, position_ids=where
            )
            out[name] = self._p_one(hidden[:, -1])
        return out

    @torch.no_grad()
    def score_by_reencoding(
        self, prompt: Sequence[int], responses: Sequence[Sequence[int]], attributes: Sequence[str]
    ) -> dict[str, list[float]]:
        """The same probabilities without the sampling cache: each ``prompt + response`` encoded
        once, all in one right-padded batch (hidden states only: the real tokens never see the
        padding after them), and every attribute read from that encoding as ``score_with_cache``
        reads it from the sampling cache. What cache reuse saves, and the reference it must equal;
        dataset builds score their examples with it (``prompt`` empty). A model whose cache cannot
        be reused (``reuse_cache`` off) encodes each sequence with each attribute token instead."""
        rows = [[*prompt, *response] for response in responses]
        if not self.reuse_cache:
            return self._score_each(rows, attributes)
        lengths = [len(row) for row in rows]
        ids = self._right_padded(rows)
        cache = DynamicCache(config=self.model.config)
        causal_lm.hidden_states(self.model, ids, cache=cache)
        return self.score_with_cache(cache, 0, lengths, attributes)

    def _score_each(self, rows: Sequence[Sequence[int]], attributes: Sequence[str]) -> dict[str, list[float]]:
        """P(attribute = 1) of each row with no cache at all: per attribute, one right-padded batch
        of ``row + <ATTRIBUTE>`` (a causal model never sees the padding after a row)."""
        out: dict[str, list[float]] = {}
        ends = torch.tensor([len(row) for row in rows], device=self.device)  # the attribute token's index
        for name in attributes:
            ids = self._right_padded([[*row, self.attribute_ids[name]] for row in rows])
            hidden = causal_lm.hidden_states(self.model, ids, use_cache=False)  # (n, T, C)
            out[name] = self._p_one(hidden[torch.arange(len(rows), device=self.device), ends])
        return out

    def _right_padded(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """(n, longest) ids, each row padded on the right; a row of 0 tokens is all padding."""
        ids = torch.full((len(rows), max([1, *(len(row) for row in rows)])), self.pad, device=self.device)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=self.device)
        return ids

    def _p_one(self, hidden: torch.Tensor) -> list[float]:
        """P(``<1>``) against ``<0>`` from the final hidden states (n, C): only the two rating
        tokens' logits are computed, not the whole vocabulary's."""
        head = self.model.get_output_embeddings()
        rating = list(self.rating)
        pair = hidden @ head.weight[rating].T  # (n, 2): <0>, <1>
        if getattr(head, "bias", None) is not None:
            pair = pair + head.bias[rating]
        return torch.softmax(pair.float(), dim=-1)[:, 1].tolist()

    # --- sample and rank --------------------------------------------------------------------

    def prompt(self, context: Sequence[tuple[str, str]]) -> list[int]:
        return formats.generation_prompt(self.tokenizer, context)

    def respond(
        self, context: Sequence[tuple[str, str]], settings: Settings | None = None, seed: int | None = None
    ) -> Answer:
        """Sample-and-rank one context: ``respond_batch`` of one (no padding)."""
        return self.respond_batch([context], settings, seed)[0]

    def respond_batch(
        self,
        contexts: Sequence[Sequence[tuple[str, str]]],
        settings: Settings | None = None,
        seed: int | None = None,
    ) -> list[Answer]:
        """Sample-and-rank several contexts at once (``sample_batch``): each context's candidates
        are scored (with discriminators) and ranked exactly as one context's are; the answers in
        the contexts' order. With ``seed`` the same contexts give the same answers."""
        settings = settings or Settings()
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        sampled = self.sample_batch([self.prompt(context) for context in contexts], settings, generator)
        if self.discriminators:
            rows = [candidate for group in sampled.candidates for candidate in group]
            if self.reuse_cache and sampled.cache is not None:
                scores = self.score_with_cache(
                    sampled.cache,
                    sampled.prompt_length,
                    [c.length for c in rows],
                    RANKED_ATTRIBUTES,
                    prompt_mask=sampled.prompt_mask,
                )
            else:
                scores = {name: [] for name in RANKED_ATTRIBUTES}
                for prompt, group in zip(sampled.prompts, sampled.candidates, strict=True):
                    alone = self.score_by_reencoding(prompt, [c.ids for c in group], RANKED_ATTRIBUTES)
                    for name in RANKED_ATTRIBUTES:
                        scores[name] += alone[name]
            for row, candidate in enumerate(rows):
                candidate.scores = {name: scores[name][row] for name in RANKED_ATTRIBUTES}
        return [
            rank(group, discriminators=self.discriminators, settings=settings) for group in sampled.candidates
        ]

    # --- likelihood of given responses --------------------------------------------------------

    @torch.no_grad()
    def response_log_likelihoods(
        self,
        pairs: Sequence[tuple[Sequence[tuple[str, str]], str]],
        *,
        max_tokens: int = 512,
        batch_tokens: int = 4096,
    ) -> list[float]:
        """The mean token log-likelihood of each ``(context, response)``'s response (its tokens and
        ``<eos>``) after its context, rendered as a generative example (``formats.generative``);
        a long example loses its context from the left, never its response. Batched right-padded
        (a causal model never sees the padding after a row), at most ``batch_tokens`` a batch."""
        examples = []
        for context, response in pairs:
            example = formats.generative(self.tokenizer, context, response)
            examples.append((example.ids[-max_tokens:], example.loss_mask[-max_tokens:]))
        out = [0.0] * len(examples)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(examples[order[end]][0]) <= batch_tokens:
                end += 1
            chunk = order[start:end]
            width = len(examples[chunk[-1]][0])
            ids = self._right_padded([examples[index][0] for index in chunk])  # (b, T)
            loss = torch.zeros((len(chunk), width), dtype=torch.bool, device=self.device)  # (b, T): predicted
            for row, index in enumerate(chunk):
                row_mask = examples[index][1]
                loss[row, : len(row_mask)] = torch.tensor(row_mask, dtype=torch.bool, device=self.device)
            logits = self.model(ids, use_cache=False).logits.float()  # (b, T, V)
            # Position t predicts token t + 1.
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)
            targets = loss[:, 1:]  # (b, T - 1)
            means = (log_probs * targets).sum(dim=1) / targets.sum(dim=1).clamp(min=1)
            for row, index in enumerate(chunk):
                out[index] = float(means[row])
            start = end
        return out

    # --- the research loop (METHOD.md §7) ----------------------------------------------------

    @torch.no_grad()
    def continue_text(
        self, prefix: Sequence[int], settings: Settings, generator: torch.Generator | None = None
    ) -> str:
        """One top-k sampled continuation of ``prefix`` up to ``<eos>``, decoded (rule 1's space off)."""
        cache = DynamicCache(config=self.model.config)
        start = torch.tensor([list(prefix)[-settings.max_prompt_tokens :]], device=self.device)
        logits = self.model(start, cache=cache).logits[:, -1]
        ids: list[int] = []
        for _ in range(settings.max_new_tokens):
            top_values, top_ids = logits.float().topk(min(settings.top_k, logits.shape[-1]), dim=-1)
            token = int(
                top_ids[0, torch.multinomial(torch.softmax(top_values[0], dim=-1), 1, generator=generator)]
            )
            if token == self.eos:
                break
            ids.append(token)
            logits = self.model(torch.tensor([[token]], device=self.device), cache=cache).logits[:, -1]
        return decode(self.tokenizer, ids)

    @torch.no_grad()
    def research(
        self,
        context: Sequence[tuple[str, str]],
        base: str,
        ask: Callable[[str], Mapping[str, str]],
        *,
        max_queries: int = 4,
        settings: Settings | None = None,
        generator: torch.Generator | None = None,
    ) -> Research:
        """After the base response the model says ``<TS> query`` (``ask`` gives the toolset's
        answer, ``{"title", "url", "snippet"}``, appended for the next step as the training
        formats render it: ``formats.research_prefix``) or ``<User> response`` (the end). At
        ``max_queries`` queries it is made to answer."""
        settings = settings or Settings()
        steps: list[dict[str, str]] = []
        while True:
            prefix = formats.research_prefix(
                self.tokenizer,
                context,
                base,
                [formats.Step(s["query"], s["title"], s["url"], s["snippet"]) for s in steps],
            )
            capped = len(steps) >= max_queries
            if capped:
                speaker = self.user
            else:
                logits = self.model(
                    torch.tensor([prefix[-settings.max_prompt_tokens :]], device=self.device), use_cache=False
                ).logits
                speaker = self.ts if logits[0, -1, self.ts] > logits[0, -1, self.user] else self.user
            text = self.continue_text([*prefix, speaker], settings, generator).strip()
            if speaker == self.user or not text:
                return Research(base=base, steps=steps, response=text or base, capped=capped)
            result = ask(text)
            steps.append(
                {"query": text, **{key: str(result.get(key) or "") for key in ("title", "url", "snippet")}}
            )
