"""One error tree for hpcq.

Foreign errors (OSError from a subprocess, msgpack or aio-pika errors) are translated
once, at the edge where they happen, and chained (`raise ... from exc`). A bad kernel is
never an exception: it is an `EvalResult` with a status. Exceptions are for things the
caller must act on: bad input, bad configuration, a broken node.
"""

from __future__ import annotations


class HpcqError(Exception):
    """Base of every error hpcq raises on purpose."""


class ConfigError(HpcqError):
    """A setting or a config file is wrong; the message names the fix."""


class InputError(HpcqError):
    """Input from a user or a tool is unusable (missing file, binary source, unknown problem)."""


class UnknownProblemError(InputError):
    """The problem id is not defined under kernels/problems/."""


class InfraError(HpcqError):
    """The node cannot evaluate right now (sandbox missing, compiler broken, disk full).

    Never turned into a kernel's penalty: the evaluation engine reports it as the
    `infra_error` status, which carries no reward.
    """


class DecodeError(HpcqError):
    """A message on the wire could not be decoded or failed validation."""


class BrokerRefusedError(ConfigError):
    """RabbitMQ refused the login (ACCESS_REFUSED) or the virtual host (NOT_ALLOWED).

    Retrying cannot help, so it is raised at once; the message names the fix.
    """


class PoisonTaskError(HpcqError):
    """A task whose evaluation was running each time a consumer died, `crash_limit`
    times: it is parked in the dead-letter queue, not run again (hpcq.pipeline.journal)."""
