"""Will this training configuration fit on the GPU? A memory table, per GPU, by term.

The producer prints it at start (and `hpcq memory-plan` without a GPU) and refuses a
configuration whose peak exceeds the device, naming the fix. Terms, in bytes, for a
decoder of P parameters, L layers, hidden H, MLP width I, vocabulary V, micro-batch B,
sequence T = prompt + completion tokens, C = `logprob_chunk_tokens`:

    weights        P x dtype bytes (LoRA: base in dtype + adapter in fp32; FSDP: fp32
                   master weights / N plus one gathered layer in bf16)
    gradients      trainable x 4 (fp32 adapter or master) or x dtype bytes (pure bf16)
    optimizer      AdamW's two moments: trainable x 2 x the same bytes
    reference      beta > 0 and no adapter: a frozen copy, P x dtype bytes (/ N sharded);
                   LoRA: 0, the base with the adapter disabled is the reference
    activations    gradient checkpointing: L x B x T x 1.7 H elements (layer inputs) +
                   one layer recomputed, B x T x (10 H + 4.5 I); without: L x B x T x
                   (10 H + 4.5 I). Counted from torch's saved tensors on a Qwen2 model
                   (tests/train/test_memory_plan.py measures them on the small model).
    log-probs      the lm_head chunk by chunk: B x C x V x (dtype + 3 x 4) bytes (logits,
                   fp32 copy, log-softmax, exp for the entropy)
    sampler        vLLM colocated: its `gpu_memory_utilization` share of the device
                   (weights P x 2 and the KV cache inside it); HF generate: the KV cache
                   2 L kv_heads head_dim x dtype bytes per token, G x T tokens

The peak is the larger of the two phases: generation (resident + sampler) and the
update (resident + gradients + activations + log-probs, + the sampler unless vLLM
sleeps). Estimates, not measurements: allocator fragmentation and the CUDA context
(~1 GiB) are covered by keeping 8% of the device free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcq.errors import ConfigError
from hpcq.train.settings import TrainSettings

GIB = 1024**3
HEADROOM = 0.92  # share of the device a plan may use
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def _proj(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of a decoder layer."""
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def params(self) -> int:
        kv = self.kv_heads * self.head_dim
        linear = sum(a * b for a, b in self._proj().values())
        biases = self.hidden + 2 * kv  # Qwen2: q, k, v have biases
        per_layer = linear + biases + 2 * self.hidden  # + two RMSNorms
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embed + self.hidden

    def lora_params(self, r: int, targets: tuple[str, ...]) -> int:
        proj = self._proj()
        return self.layers * sum(r * (a + b) for t, (a, b) in proj.items() if t in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    @classmethod
    def from_config(cls, name: str, cfg: dict[str, Any]) -> ModelShape:
        try:
            return cls(
                name=name,
                hidden=int(cfg["hidden_size"]),
                layers=int(cfg["num_hidden_layers"]),
                heads=int(cfg["num_attention_heads"]),
                kv_heads=int(cfg.get("num_key_value_heads", cfg["num_attention_heads"])),
                intermediate=int(cfg["intermediate_size"]),
                vocab=int(cfg["vocab_size"]),
                tied=bool(cfg.get("tie_word_embeddings", False)),
            )
        except KeyError as e:
            raise ConfigError(f"{name}: config.json lacks {e.args[0]}") from e


# The published configs (config.json on the hub) of the models the paper and our device
# check use, so a plan needs no download.
KNOWN = {
    "Qwen/Qwen2.5-Coder-14B-Instruct": ModelShape(
        "Qwen2.5-Coder-14B", 5120, 48, 40, 8, 13824, 152064, False
    ),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": ModelShape(
        "Qwen2.5-Coder-1.5B", 1536, 28, 12, 2, 8960, 151936, True
    ),
}
KNOWN["Qwen/Qwen2.5-Coder-14B"] = KNOWN["Qwen/Qwen2.5-Coder-14B-Instruct"]
KNOWN["Qwen/Qwen2.5-Coder-1.5B"] = KNOWN["Qwen/Qwen2.5-Coder-1.5B-Instruct"]


def shape_of(model: str) -> ModelShape | None:
    """A local model directory's config.json, or a known hub id; None if neither."""
    config = Path(model) / "config.json"
    if config.is_file():
        return ModelShape.from_config(Path(model).name, json.loads(config.read_text()))
    return KNOWN.get(model)


@dataclass(frozen=True)
class Layout:
    """Where the run lives. `train_gpus` > 1 means a sharded engine (FSDP full shard or
    DeepSpeed ZeRO-3) with fp32 master weights; the sampler then has its own GPUs."""

    train_gpus: int = 1
    gpu_bytes: int = 0
    """Memory of one GPU; 0: unknown (CPU runs): the table is printed, nothing refused."""


@dataclass(frozen=True)
class Row:
    term: str
    bytes: int
    note: str


@dataclass(frozen=True)
class MemoryPlan:
    shape: ModelShape
    rows: tuple[Row, ...]
    generate_peak: int
    update_peak: int
    gpu_bytes: int
    problems: tuple[str, ...]

    @property
    def peak(self) -> int:
        return max(self.generate_peak, self.update_peak)

    def table(self) -> str:
        out = [f"memory plan per GPU, {self.shape.name} ({self.shape.params() / 1e9:.2f} B params)"]
        out += [f"  {r.term:<12} {r.bytes / GIB:8.2f} GiB  {r.note}" for r in self.rows]
        out.append(
            f"  {'peak':<12} {self.peak / GIB:8.2f} GiB  generation {self.generate_peak / GIB:.2f},"
            f" update {self.update_peak / GIB:.2f}"
        )
        if self.gpu_bytes:
            use = self.peak / self.gpu_bytes
            out.append(f"  {'device':<12} {self.gpu_bytes / GIB:8.2f} GiB  {use:.0%} of it planned")
        else:
            out.append("  device       unknown (no GPU): nothing checked")
        out += [f"  REFUSED: {p}" for p in self.problems]
        return "\n".join(out)

    def check(self) -> None:
        if self.problems:
            raise ConfigError("this configuration cannot run:\n" + self.table())


def plan(shape: ModelShape, train: TrainSettings, layout: Layout) -> MemoryPlan:
    p = train.policy
    n = layout.train_gpus
    dtype_b = DTYPE_BYTES.get(p.dtype, 4)
    params = shape.params()
    T = p.max_prompt_tokens + p.max_new_tokens
    B = p.micro_batch
    rows: list[Row] = []
    problems: list[str] = []

    if p.lora_r > 0:
        trainable = shape.lora_params(p.lora_r, p.lora_targets)
        weights = params * dtype_b + trainable * 4
        state_b = 4
        rows.append(Row("weights", weights, f"base in {p.dtype}, rank-{p.lora_r} adapter fp32"))
    elif n > 1:
        trainable = params // n
        layer = (params - shape.vocab * shape.hidden) // shape.layers
        weights = trainable * 4 + 2 * layer * 2
        state_b = 4
        rows.append(Row("weights", weights, f"fp32 master / {n} GPUs + 2 gathered bf16 layers"))
    else:
        trainable = params
        weights = params * dtype_b
        state_b = dtype_b
        rows.append(Row("weights", weights, f"all {params / 1e9:.2f} B in {p.dtype}"))
        if dtype_b < 4:
            problems.append(
                f"full fine-tuning in pure {p.dtype} keeps no fp32 master weights: an Adam "
                f"step of lr={p.lr:g} on weights of ~1e-2 is below {p.dtype}'s rounding "
                "and is lost; set lora_r (one GPU) or use the FSDP launch with fp32 "
                "master weights (docs/training.md, 8 GPUs), or dtype = float32"
            )
    grads = trainable * state_b
    optim = 2 * trainable * state_b
    rows.append(Row("gradients", grads, "trainable parameters"))
    rows.append(Row("optimizer", optim, "AdamW moments"))
    ref = 0
    if p.beta > 0 and p.lora_r == 0:
        ref = params * 2 // n if n > 1 else params * dtype_b
        rows.append(Row("reference", ref, "frozen copy for the KL term"))
    elif p.beta > 0:
        rows.append(Row("reference", 0, "the base with the adapter disabled"))

    h, i = shape.hidden, shape.intermediate
    act_b = dtype_b if n == 1 else 2
    layer_work = B * T * (10 * h + 4.5 * i) * act_b
    if p.gradient_checkpointing:
        acts = int(shape.layers * B * T * 1.7 * h * act_b + layer_work)
        act_note = f"checkpointed, B={B} x T={T}"
    else:
        acts = int(shape.layers * layer_work)
        act_note = f"not checkpointed, B={B} x T={T}: set gradient_checkpointing"
    rows.append(Row("activations", acts, act_note))
    chunk = min(p.logprob_chunk_tokens or p.max_new_tokens, p.max_new_tokens)
    logps = B * chunk * shape.vocab * (act_b + 12)
    rows.append(Row("log-probs", logps, f"(B, {chunk}, V={shape.vocab}) at a time"))

    resident = weights + optim + ref
    update = grads + acts + logps
    sampler, sampler_note, sleeps = _sampler(shape, train, layout, dtype_b, problems)
    rows.append(Row("sampler", sampler, sampler_note))
    generate_peak = resident + sampler
    update_peak = resident + update + (0 if sleeps else sampler)
    if layout.gpu_bytes and max(generate_peak, update_peak) > HEADROOM * layout.gpu_bytes:
        problems.append(_fix(train, layout, max(generate_peak, update_peak)))
    return MemoryPlan(
        shape, tuple(rows), generate_peak, update_peak, layout.gpu_bytes, tuple(problems)
    )


def _sampler(
    shape: ModelShape, train: TrainSettings, layout: Layout, dtype_b: int, problems: list[str]
) -> tuple[int, str, bool]:
    """Bytes the sampler holds on a training GPU, a note, and whether it sleeps."""
    p, lp = train.policy, train.loop
    T = p.max_prompt_tokens + p.max_new_tokens
    kv_tok = shape.kv_bytes_per_token(2 if p.backend == "vllm" else dtype_b)
    if p.backend == "hf":
        kv = kv_tok * lp.group_size * T  # HFPolicy samples one prompt's G at a time
        return kv, f"HF generate: KV cache of G={lp.group_size} x {T} tokens", False
    if p.vllm_mode == "server" or layout.train_gpus > 1:
        return 0, "vLLM server on its own GPU(s)", True
    if not layout.gpu_bytes:
        share = 0
    else:
        share = int(p.vllm_gpu_memory_utilization * layout.gpu_bytes)
        kv_room = share - shape.params() * 2 - GIB
        need = kv_tok * lp.group_size * lp.prompts_per_step * T
        if kv_room < kv_tok * T:
            problems.append(
                f"vllm_gpu_memory_utilization={p.vllm_gpu_memory_utilization} leaves "
                f"{kv_room / GIB:.1f} GiB for the KV cache, less than one sequence of {T} "
                "tokens: raise vllm_gpu_memory_utilization"
            )
        elif kv_room < need:
            problems.append(
                f"vLLM's KV cache ({kv_room / GIB:.1f} GiB) holds fewer than the "
                f"{lp.group_size * lp.prompts_per_step} sequences of a step "
                f"({need / GIB:.1f} GiB): raise vllm_gpu_memory_utilization"
            )
    sleep = "; sleeps during the update" if p.vllm_sleep else ""
    note = f"vLLM colocated: {p.vllm_gpu_memory_utilization:.0%} of the device{sleep}"
    return share, note, p.vllm_sleep


def _fix(train: TrainSettings, layout: Layout, peak: int) -> str:
    p = train.policy
    what = f"peak {peak / GIB:.1f} GiB > {HEADROOM:.0%} of {layout.gpu_bytes / GIB:.1f} GiB"
    if p.lora_r == 0 and layout.train_gpus == 1:
        return f"{what}: use a LoRA adapter (lora_r = 64, ops/configs/qwen2.5-coder-14b-h200.toml)"
    if p.backend == "vllm" and p.vllm_mode == "colocate" and not p.vllm_sleep:
        return f"{what}: set vllm_sleep = true (the engine frees its memory during the update)"
    if not p.gradient_checkpointing:
        return f"{what}: set gradient_checkpointing = true"
    return f"{what}: lower micro_batch ({p.micro_batch}) or max_new_tokens ({p.max_new_tokens})"
