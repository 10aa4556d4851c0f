"""Write the deterministic telemetry sample: ``telemetry.sample``'s command line.

    python examples/generate_pings.py --out var/sample/pings [--json] [--talos]

is ``python -m telemetry.sample ...``; see telemetry/sample.py for the data and options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from telemetry import sample  # noqa: E402

if __name__ == "__main__":
    sys.exit(sample.main())
