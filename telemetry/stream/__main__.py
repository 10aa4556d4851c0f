"""``python -m telemetry.stream --landing DIR --every 5 [--batches N] [--seed S]``: write
a batch of pings into DIR every 5 seconds (see ``telemetry.landing``)."""

import sys

from telemetry.landing import main

sys.exit(main())
