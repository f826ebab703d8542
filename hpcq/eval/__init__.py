"""The evaluation engine: one untrusted candidate source in, one honest verdict out.

`engine` runs the steps; `build` compiles in the `sandbox` after the `static_checks`;
`judging` runs the trusted judge of `harness`; `reward` turns a measurement into a scalar
against the node's `peak`; `cache` keeps verdicts; `problems` and `settings` are its data.
`techniques` (with `packing` and the `csource` model of C) names what a kernel does;
`elf` and `object_checks` read the compiled object. Imports only the top-level shared
modules (errors, outcome), never the pipeline, training or SQD packages.
"""
