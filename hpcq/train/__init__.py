"""Online GRPO on the producer, without an ML framework: the `loop` over the `policy`
protocol, `prompts` from a problem and its stage, `extract` of C from completions,
`rollout` through the pipeline, `advantages`, `checkpoint`, `metrics`, the run `report`,
`settings` and the GPU `memory_plan`; `evaluate/` measures models on problem suites.
The backends that import torch live in `bridges/`.
"""
