"""Adapters from hpcq's core to ML frameworks and telemetry (transformers, TRL, vLLM, MQTT).

Imported only by the producer side and by tools: a CPU benchmark node never needs it,
and `hpcq/` never imports from here.
"""
