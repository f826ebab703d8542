"""A `hpcq.train.policy.Policy` on transformers: any causal LM by hub id or local path, full
fine-tuning or a LoRA adapter (peft), on CPU or GPU.

Generation samples each prompt's G completions in one `generate` call (no padding
inside a prompt's batch). The log-probabilities returned with them, and those the update
uses, come from one plain forward pass over prompt + completion with the sampling
temperature applied, so pi_old is exactly the distribution the tokens were drawn from.
The reference model of the KL term is the initial weights: the base model with the
adapter switched off under LoRA, a frozen copy otherwise (only when beta > 0).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from bridges.grpo_loss import grpo_loss, token_weights, truncated_is_weights
from hpcq.train.policy import Sample, Scored, UpdateStats
from hpcq.train.prompts import Message
from hpcq.train.settings import PolicySettings


def _last_hidden(model: Any, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The decoder's final (normed) hidden states, (B, W, H): what the lm_head reads.

    A causal LM of transformers exposes its decoder through `get_decoder()`; under peft
    the LoRA layers are injected into it in place, so the adapter (or `disable_adapter`)
    applies here too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.get_decoder()(input_ids=ids, attention_mask=attn)
    hidden: torch.Tensor = out.last_hidden_state
    return hidden


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(model_path: str) -> Any:
    """The model's tokenizer. The bootstrap model's is loaded as what it is, a plain fast
    tokenizer: AutoTokenizer would pick Qwen2's class from config.json and replace its
    line-level pre-tokenizer with Qwen2's word-level one."""
    if (Path(model_path) / "bootstrap.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(model_path)
    return AutoTokenizer.from_pretrained(model_path)


def chat_ids(tokenizer: Any, messages: Sequence[Message], max_tokens: int) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[-max_tokens:]


class HFPolicy:
    def __init__(
        self, settings: PolicySettings, model_path: str, *, model: Any = None, tokenizer: Any = None
    ) -> None:
        """`model`/`tokenizer`: already built ones instead of loading `model_path` (the
        GPU check builds a randomly initialised 14B-shaped model in memory)."""
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.settings = settings
        self.model_path = model_path
        if settings.threads:
            torch.set_num_threads(settings.threads)
        torch.manual_seed(settings.seed)
        self.device = pick_device(settings.device)
        dtype = getattr(torch, settings.dtype)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model = cast(Any, model)
        self.model.to(self.device)
        if settings.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.ref: Any = None
        if settings.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=settings.lora_r,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=list(settings.lora_targets),
                task_type="CAUSAL_LM",
            )
            self.model = get_peft_model(self.model, lora)
        elif settings.beta > 0:
            self.ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
            self.ref.to(self.device).eval().requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=settings.lr, weight_decay=settings.weight_decay
        )
        self._version = 0
        self.end_ids = self._end_ids()

    def _end_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(gen_eos)
        return {i for i in ids if i is not None}

    @property
    def version(self) -> int:
        return self._version

    # --- sampling -------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[Message]], n: int) -> list[list[Sample]]:
        s = self.settings
        self.model.eval()
        out = []
        for messages in prompts:
            prompt = chat_ids(self.tokenizer, messages, s.max_prompt_tokens)
            ids = torch.tensor([prompt], device=self.device)
            seqs = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=0,
                max_new_tokens=s.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.end_ids),
            )
            completions = [self._cut(row[len(prompt) :].tolist()) for row in seqs]
            logps: list[list[float]] = []
            for k in range(0, n, s.micro_batch):  # (B, T, V) logits: bounded by micro_batch
                part = completions[k : k + s.micro_batch]
                lp = self.token_logprobs([(prompt, c) for c, _ in part], grad=False)[0]
                logps += [lp[i, : len(c)].tolist() for i, (c, _) in enumerate(part)]
            out.append(
                [
                    Sample(
                        prompt_ids=tuple(prompt),
                        completion_ids=tuple(c),
                        logprobs=tuple(logps[i]),
                        text=self.tokenizer.decode(c, skip_special_tokens=True),
                        truncated=truncated,
                        policy_version=self._version,
                    )
                    for i, (c, truncated) in enumerate(completions)
                ]
            )
        return out

    def _cut(self, tokens: list[int]) -> tuple[list[int], bool]:
        """Completion tokens up to and including the first end token; truncated if none."""
        for i, t in enumerate(tokens):
            if t in self.end_ids:
                return tokens[: i + 1], False
        return tokens, True

    def token_logprobs(
        self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], grad: bool, model: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(completion token | prefix) at the sampling temperature, with the
        entropy of each step's distribution: (B, T) each, plus the (B, T) mask.

        The (B, T, V) logits are never built whole: the decoder's last hidden states at
        the completion positions, (B, T, H), go through the lm_head `logprob_chunk_tokens`
        positions at a time, and under grad each chunk is recomputed in the backward pass
        (activation checkpointing), so only (B, chunk, V) exists at once. At 14B (V =
        152k, B = 8, T = 512) the full fp32 tensor would be 2.5 GB, twice over with its
        log-softmax."""
        model = model or self.model
        lengths = [len(p) + len(c) for p, c in pairs]
        width = max(lengths)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(pairs), width), pad, dtype=torch.long)
        attn = torch.zeros((len(pairs), width), dtype=torch.long)
        for b, (p, c) in enumerate(pairs):
            ids[b, : lengths[b]] = torch.tensor([*p, *c])
            attn[b, : lengths[b]] = 1
        t_max = max(len(c) for _, c in pairs)
        # Completion token j of row b sits at position len(p)+j; its logits at len(p)+j-1.
        start = torch.tensor([len(p) - 1 for p, _ in pairs])[:, None]  # (B, 1)
        offsets = torch.arange(t_max)[None, :]  # (1, T)
        mask = (offsets < torch.tensor([len(c) for _, c in pairs])[:, None]).float()  # (B, T)
        where = (start + offsets).clamp(max=width - 2)  # (B, T) logits positions
        ids, attn, where, mask = (x.to(self.device) for x in (ids, attn, where, mask))
        targets = torch.gather(ids, 1, where + 1)  # (B, T) the token each position predicts
        with torch.set_grad_enabled(grad):
            hidden = _last_hidden(model, ids, attn)  # (B, W, H)
            h = torch.gather(hidden, 1, where[:, :, None].expand(-1, -1, hidden.size(-1)))
            head = model.get_output_embeddings()
            chunk = self.settings.logprob_chunk_tokens or t_max
            logps, entropies = [], []
            for a in range(0, t_max, chunk):
                args = (h[:, a : a + chunk], targets[:, a : a + chunk])
                if grad:
                    lp, ent = checkpoint(self._head_logprobs, head, *args, use_reentrant=False)
                else:
                    lp, ent = self._head_logprobs(head, *args)
                logps.append(lp)
                entropies.append(ent)
            logp, entropy = torch.cat(logps, 1), torch.cat(entropies, 1)  # (B, T) each
        return logp * mask, entropy * mask, mask

    def _head_logprobs(
        self, head: Any, h: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, t, H) hidden states -> (B, t) log-probs of `targets` and entropies."""
        logits = head(h).float() / self.settings.temperature  # (B, t, V)
        logp_all = torch.log_softmax(logits, dim=-1)  # (B, t, V)
        logp = torch.gather(logp_all, 2, targets[:, :, None]).squeeze(2)  # (B, t)
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, t)
        return logp, entropy

    # --- learning -------------------------------------------------------------------

    def update(self, batch: Sequence[Scored]) -> UpdateStats:
        s = self.settings
        keep = [x for x in batch if not (s.mask_truncated and x.sample.truncated)]
        if not keep:
            return UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
        chunks = [keep[i : i + s.micro_batch] for i in range(0, len(keep), s.micro_batch)]
        pairs = [[(x.sample.prompt_ids, x.sample.completion_ids) for x in c] for c in chunks]
        self.model.eval()
        old, ref, is_w = [], [], []
        sampler_kl = is_clipped = weight_sum = 0.0
        for c, p in zip(chunks, pairs, strict=True):
            logp, _, mask = self.token_logprobs(p, grad=False)  # (B, T) pi_old
            old.append(logp)
            behaviour, have = self._behaviour_logprobs(c, logp)  # (B, T) mu, and where known
            d = (logp - behaviour) * have
            sampler_kl += float((torch.exp(d) - d - 1).sum())
            w, clipped = truncated_is_weights(logp, behaviour, have > 0, s.tis_cap)
            is_w.append(w)
            is_clipped += float((clipped * mask).sum())
            weight_sum += float((w * mask).sum())
            ref.append(self._ref_logprobs(p) if s.beta > 0 else None)
        n_seqs = len(keep)
        n_tokens = sum(len(x.sample.completion_ids) for x in keep)
        totals = {"loss": 0.0, "kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "entropy": 0.0}
        grad_norm = 0.0
        self.model.train()
        for _ in range(s.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for c, p, old_c, ref_c, w_c in zip(chunks, pairs, old, ref, is_w, strict=True):
                logp, entropy, mask = self.token_logprobs(p, grad=True)
                adv = torch.tensor([x.advantage for x in c], device=self.device)
                w = token_weights(s.loss_type, mask, n_seqs, n_tokens, s.max_new_tokens)
                loss, sums = grpo_loss(
                    logp, old_c, ref_c, adv, w, s.clip_low, s.clip_high, s.beta, is_weights=w_c
                )
                loss.backward()  # type: ignore[no-untyped-call]
                totals["loss"] += loss.item()
                totals["entropy"] += float(entropy.sum())
                for k, v in sums.items():
                    totals[k] += float(v)
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
            )
            self.optimizer.step()
        self._version += 1
        per_token = n_tokens * s.epochs
        return UpdateStats(
            loss=totals["loss"] / s.epochs,
            kl=totals["kl"] / per_token,
            clip_low=totals["clip_low"] / per_token,
            clip_high=totals["clip_high"] / per_token,
            entropy=totals["entropy"] / per_token,
            grad_norm=grad_norm,
            tokens=n_tokens,
            sampler_kl=sampler_kl / n_tokens,
            is_clip_frac=is_clipped / n_tokens,
            is_weight_mean=weight_sum / n_tokens,
        )

    def _behaviour_logprobs(
        self, chunk: Sequence[Scored], like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mu: the log-probs the sampler reported with each token, (B, T), and a (B, T)
        0/1 mask of the tokens that have one (a sampler may report fewer)."""
        behaviour = torch.zeros_like(like)
        have = torch.zeros_like(like)
        for b, x in enumerate(chunk):
            n = min(len(x.sample.logprobs), len(x.sample.completion_ids))
            behaviour[b, :n] = torch.tensor(x.sample.logprobs[:n], dtype=like.dtype)
            have[b, :n] = 1.0
        return behaviour, have

    @torch.no_grad()
    def _ref_logprobs(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> torch.Tensor:
        if self.ref is not None:
            return self.token_logprobs(pairs, grad=False, model=self.ref)[0]
        with self.model.disable_adapter():  # LoRA: the base weights are the reference
            return self.token_logprobs(pairs, grad=False)[0]

    # --- persistence ----------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / "model")
        self.tokenizer.save_pretrained(directory / "model")
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "version": self._version,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            directory / "trainer.pt",
        )

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        weights = directory / "model"
        if self.settings.lora_r > 0:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(weights / "adapter_model.safetensors"))
        else:
            fresh = AutoModelForCausalLM.from_pretrained(weights, dtype=self.model.dtype)
            self.model.load_state_dict(fresh.state_dict())
        state = torch.load(directory / "trainer.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self._version = int(state["version"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
