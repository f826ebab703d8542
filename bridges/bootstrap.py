"""`hpcq bootstrap-model`: the project's own small code model, built on a CPU in minutes.

1. A corpus of (prompt, answer) pairs: the prompt is exactly what the GRPO loop sends
   (hpcq.train.prompts) under constraints sampled like a stage's, the answer a fenced DGEMM
   variant that satisfies them (bridges.bootstrap_variants).
2. A byte-level BPE tokenizer trained on that corpus with the `tokenizers` library,
   wrapped as a transformers tokenizer with a ChatML-style chat template, so the loop
   treats it exactly like Qwen2.5-Coder's.
3. A small Qwen2ForCausalLM trained on the answers (prompt tokens are context, not
   targets) for a fixed budget of steps or minutes.
The directory it writes loads with `AutoModelForCausalLM.from_pretrained(DIR)`.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging as hf_logging

from bridges.bootstrap_variants import allowed, sample_constraints
from hpcq.eval.problems import catalogue, default_kernels_dir, load_problem
from hpcq.eval.settings import EngineSettings
from hpcq.eval.techniques import CATALOGUE
from hpcq.outcome import Constraints, EvalRequest, Status
from hpcq.train.extract import extract_code
from hpcq.train.prompts import DEFAULT_STAGE, Message, PromptStage, build_prompt, fenced
from hpcq.train.settings import PolicySettings

END = "<|im_end|>"
PAD = "<|endoftext|>"
START = "<|im_start|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class BootstrapSettings:
    samples: int = 3000
    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 512
    steps: int = 400
    max_minutes: float = 5.0
    """Training stops at `steps` or after this long, whichever comes first."""
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 30
    threads: int = 1
    seed: int = 0


def sqd_stages(seed: int = 0) -> list[PromptStage]:
    """The stages `hpcq sqd` can put in a prompt (listed, made at run time, final), as the
    producer sees them (`hpcq.sqd.client`: constraints plus the stage's text as hint).
    Made stages forbid the catalogue's techniques one, two or three at a time."""
    from hpcq.sqd.stages import default_config_path, load_config

    config = load_config(default_config_path(default_kernels_dir()))
    rng = random.Random(seed)
    out = []
    for schedule in config.schedules.values():
        raw = list(schedule.stages)
        if schedule.diversity:
            for index, technique in enumerate(CATALOGUE, start=len(raw)):
                extra = rng.sample([t for t in CATALOGUE if t != technique], rng.randint(0, 2))
                raw.append(schedule.made_stage(index, frozenset({technique, *extra}), technique))
            raw.append(schedule.final_stage(len(raw)))
        for st in raw:
            if allowed(st.constraints):
                out.append(PromptStage(st.name, st.constraints, st.prompt.strip()))
    return out


def corpus(n: int, seed: int) -> Iterator[tuple[tuple[Message, ...], str]]:
    """`n` (prompt, answer) pairs over the DGEMM problems: 60% under constraints sampled
    like a stage's (the fixed default stage among them), 40% under the SQD config's
    stages with their text."""
    rng = random.Random(seed)
    # Held-out problems never reach training data: evaluating on them measures generalisation.
    problems = [
        p
        for p in catalogue(default_kernels_dir()).values()
        if p.family == "dgemm" and not p.held_out
    ]
    stages = sqd_stages(seed)
    for _ in range(n):
        problem = rng.choice(problems)
        if stages and rng.random() < 0.4:
            stage = rng.choice(stages)
        else:
            stage = PromptStage(constraints=sample_constraints(rng))
        variant = rng.choice(allowed(stage.constraints))
        yield build_prompt(problem, stage, rng.choice((1, 1, 2, 4))), fenced(variant.source)


def render_prompt(messages: tuple[Message, ...]) -> str:
    """CHAT_TEMPLATE by hand (the tokenizer does not exist yet when it trains)."""
    body = "".join(f"{START}{m.role}\n{m.content}{END}\n" for m in messages)
    return body + f"{START}assistant\n"


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    # Pieces are whole lines (not words): merges may cross spaces, so a template line
    # of C becomes one to three tokens and a kernel about forty. Short sequences are
    # what lets a model this small learn the language in minutes.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="merged_with_previous"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, START, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=48,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=END, pad_token=PAD, additional_special_tokens=[START]
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _token_id(tok: PreTrainedTokenizerFast, token: str) -> int:
    found = tok.convert_tokens_to_ids(token)
    assert isinstance(found, int)
    return found


def _encode(
    tok: PreTrainedTokenizerFast, pairs: list[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    end = _token_id(tok, END)
    out = []
    for prompt, answer in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [end]
        out.append((p, a))
    return out


def _batch(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, ...]:
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[b, :n] = torch.tensor(p + a)
        labels[b, len(p) : n] = torch.tensor(a)  # only the answer is a target
        attn[b, :n] = 1
    return ids, labels, attn


def build(out: Path, s: BootstrapSettings, log: Any = print) -> dict[str, Any]:
    """Write tokenizer + model to `out`; returns the training summary (also bootstrap.json)."""
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    pairs = [(render_prompt(p), a) for p, a in corpus(s.samples, s.seed)]
    tok = train_tokenizer([p + a for p, a in pairs], s.vocab_size)
    data = _encode(tok, pairs)
    longest = max(len(p) + len(a) for p, a in data)
    if longest > s.max_positions:
        raise ValueError(f"a corpus sample has {longest} tokens > max_positions {s.max_positions}")
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=s.hidden_size,
        intermediate_size=4 * s.hidden_size,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=s.max_positions,
        tie_word_embeddings=True,
        bos_token_id=_token_id(tok, START),
        eos_token_id=_token_id(tok, END),
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.01)
    rng = random.Random(s.seed)
    t0 = time.monotonic()
    losses: list[float] = []
    step = 0
    model.train()
    while step < s.steps and time.monotonic() - t0 < 60 * s.max_minutes:
        lr = s.lr * min(1.0, (step + 1) / s.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * step / s.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, labels, attn = _batch(rng.sample(data, s.batch_size), tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            log(f"bootstrap step {step}: loss {sum(losses[-50:]) / 50:.3f}")
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    summary = {
        "settings": asdict(s),
        "steps": step,
        "train_s": round(time.monotonic() - t0, 1),
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "longest_sample_tokens": longest,
        "mean_answer_tokens": round(sum(len(a) for _, a in data) / len(data), 1),
    }
    (out / "bootstrap.json").write_text(json.dumps(summary, indent=2))
    return summary


async def check_step0(
    model_dir: Path, n: int, engine_settings: EngineSettings, problem_id: str = "dgemm-256"
) -> dict[str, Any]:
    """Sample `n` completions under the default stage (no RL yet) and judge each with the
    real engine on one core: the share of `ok` is the model's starting point."""
    from bridges.hf_policy import HFPolicy
    from hpcq.eval.engine import Engine

    policy = HFPolicy(PolicySettings(max_new_tokens=256, threads=1), str(model_dir))
    problem = load_problem(problem_id, engine_settings.kernels_dir or default_kernels_dir())
    samples = policy.generate([build_prompt(problem, DEFAULT_STAGE)], n)[0]
    engine = Engine(engine_settings)
    core = min(os.sched_getaffinity(0))
    statuses: Counter[str] = Counter()
    gflops = []
    for sample in samples:
        code = extract_code(sample.text, problem.entry)
        if code.source is None:
            statuses[str(Status.VIOLATION)] += 1
            continue
        request = EvalRequest(problem.id, code.source, Constraints(), (core,))
        result = await engine.evaluate(request)
        statuses[str(result.status)] += 1
        if result.gflops is not None:
            gflops.append(result.gflops)
    judged = n - statuses.get(str(Status.INFRA_ERROR), 0)
    return {
        "problem": problem.id,
        "samples": n,
        "ok_share": statuses.get(str(Status.OK), 0) / max(1, judged),
        "statuses": dict(statuses),
        "gflops_mean": sum(gflops) / len(gflops) if gflops else None,
        "gflops_best": max(gflops) if gflops else None,
    }
