"""``python -m telemetry.stream --landing DIR --every 5 [--batches N] [--seed S] [--retain
SECONDS]``: write a batch of pings into DIR every 5 seconds, deleting the batch files
more than SECONDS (default 86400) of event time older than the newest (see
``telemetry.landing``)."""

import sys

from telemetry.landing import main

sys.exit(main())
