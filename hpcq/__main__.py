"""`python -m hpcq` is the `hpcq` command."""

from __future__ import annotations

import sys

from hpcq.cli import main

sys.exit(main())
