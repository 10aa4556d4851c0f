"""The live portal and worker of tests/e2e (no browser): portalctl runs as a subprocess
against them. Under a directory named e2e, so a run without bin/test's services or
without a sandbox skips these tests, saying why (tests/conftest.py)."""

from tests.e2e.conftest import e2e_server, portal, worker  # noqa: F401 (fixtures)
