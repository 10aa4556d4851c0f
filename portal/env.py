"""Small, strict helpers that read settings from the environment.

Each helper raises ``ImproperlyConfigured`` on a value it cannot parse, so a typo in a
deployment fails at start-up rather than silently falling back to a default.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    """Return ``$name`` or ``default``."""
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    """Return ``$name`` parsed as a boolean (1/true/yes/on, 0/false/no/off; any case).

    Raises ImproperlyConfigured for anything else, e.g. ``DEBUG=ture``.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    """Return ``$name`` parsed as an integer; raises ImproperlyConfigured if it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    """Return ``$name`` parsed as a float; raises ImproperlyConfigured if it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(text: str) -> int:
    """Parse a size such as ``512m``, ``4g``, ``4GiB`` or ``1048576`` into bytes (binary
    units, as the JVM's ``-Xmx`` reads them). Raises ValueError for anything else."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = (value[:-1], value[-1]) if value[-1:] in _SIZE_UNITS else (value, "")
    amount = float(number)
    if amount <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return int(amount * _SIZE_UNITS[unit])


def env_bytes(name: str, default: str) -> int:
    """Return ``$name`` (or ``default``) as a number of bytes (see ``parse_bytes``);
    raises ImproperlyConfigured if it is not a size."""
    raw = os.environ.get(name) or default
    try:
        return parse_bytes(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a size (e.g. 512m or 4g)") from None


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """Return ``$name`` split on commas, items stripped, empty items dropped."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, default: str | None = None) -> str | None:
    """Return a secret from ``$NAME_FILE`` (a path, e.g. a Docker secret) or ``$NAME``.

    The file wins when both are set. Raises ImproperlyConfigured if ``$NAME_FILE`` names a
    file that cannot be read, so a mounted secret that went missing is noticed.
    """
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from None
    return os.environ.get(name, default)
