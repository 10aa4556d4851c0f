"""Where portalctl finds the portal and its token.

Each value comes from the environment first (``PORTAL_URL``, ``PORTAL_TOKEN``), then from
the config file: ``$PORTALCTL_CONFIG`` if set, else ``$XDG_CONFIG_HOME/portalctl/config.toml``
(``~/.config/portalctl/config.toml``). The file is TOML with two keys::

    url = "https://portal.example.org"
    token = "pap_..."

``portalctl login`` writes it with mode 0600, since the token is a password.
"""

import json
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """The URL or token is missing, or the config file cannot be read."""


@dataclass(frozen=True)
class Config:
    """The portal's base URL (no trailing slash) and a personal API token (``pap_...``)."""

    url: str
    token: str


def config_path() -> Path:
    """The config file's path (it may not exist)."""
    explicit = os.environ.get("PORTALCTL_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "portalctl" / "config.toml"


def read_file(path: Path | None = None) -> dict[str, str]:
    """The config file's string values; empty if there is no file.

    Raises ConfigError if the file exists but is not valid TOML.
    """
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def load() -> Config:
    """The configuration: environment over file. Raises ConfigError if a value is missing."""
    file = read_file()
    url = os.environ.get("PORTAL_URL") or file.get("url", "")
    token = os.environ.get("PORTAL_TOKEN") or file.get("token", "")
    missing = [name for name, value in (("PORTAL_URL", url), ("PORTAL_TOKEN", token)) if not value]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: export {missing[0]}, or run `portalctl login` "
            f"(it writes {config_path()})"
        )
    return Config(url=url.rstrip("/"), token=token)


def save(config: Config, path: Path | None = None) -> Path:
    """Write ``config`` to the config file, readable by its owner only (mode 0600); return
    the path. The file is created with that mode, so the token is never readable by
    others, even for a moment."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # JSON's string escapes are valid TOML basic strings.
    text = f"url = {json.dumps(config.url)}\ntoken = {json.dumps(config.token)}\n"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # an older tmp file may have kept its mode
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path
