"""portalctl: the Analysis Portal's command-line client, on its REST API (docs/api.md).

Modules: ``config`` (where the URL and token come from), ``client`` (httpx, retries,
JSON errors), ``progress`` (the live "cell i of N" line) and ``cli`` (the typer commands).
"""
