"""The message-queue pipeline on RabbitMQ: wire records (`messages`, `codec`), the one
connection and publish path (`broker`), names and declarations (`topology`), what
becomes of each delivery (`fate`), the CPU-node `consumer` with its `slots` and crash
`journal`, the producer core (`producer`), `replay` and `status` of a namespace, and
the live `telemetry` and `watch` view. Imports `hpcq.eval` and the shared modules only.
"""
