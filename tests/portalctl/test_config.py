"""Where portalctl finds the portal and its token, and the progress line it shows."""

import io
import json
import stat
from datetime import UTC, datetime

import pytest
from rich.console import Console

from portalctl import config
from portalctl.progress import RunProgress, describe, format_elapsed
from tests.portalctl.conftest import URL, run_body

ME = {"id": 1, "email": "alice@example.com", "is_staff": False, "scopes": ["read", "run"]}


def test_login_checks_the_token_and_saves_it_for_the_owner_only(
    fake, portalctl, tmp_path, monkeypatch
):
    monkeypatch.delenv("PORTAL_URL")
    monkeypatch.delenv("PORTAL_TOKEN")
    path = tmp_path / "config.toml"
    fake.json("GET", "/api/me/", ME)
    # The token is prompted for on stderr, hidden (the test runner adds a newline on stdout
    # for the Enter a terminal would echo).
    result = portalctl("login", "--url", f"{URL}/", "--json", input="pap_secret\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == ME
    assert "pap_secret" not in result.output
    assert "API token" in result.stderr
    assert fake.requests[0].headers["Authorization"] == "Bearer pap_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load() == config.Config(url=URL, token="pap_secret")
    # Later commands use the file...
    assert portalctl("whoami").exit_code == 0
    assert fake.requests[-1].headers["Authorization"] == "Bearer pap_secret"
    # ...and the environment wins over it, value by value.
    monkeypatch.setenv("PORTAL_TOKEN", "pap_from_env")
    assert config.load() == config.Config(url=URL, token="pap_from_env")


def test_a_refused_login_saves_nothing(fake, portalctl, tmp_path):
    fake.json("GET", "/api/me/", {"code": "invalid_token", "detail": "Invalid token."}, status=401)
    result = portalctl("login", "--url", URL, "--token", "pap_bad")
    assert result.exit_code == 2
    assert "Invalid token. (invalid_token)" in result.stderr
    assert not (tmp_path / "config.toml").exists()


def test_saving_keeps_a_token_with_quotes_intact_and_tightens_an_old_files_mode(tmp_path):
    path = tmp_path / "portalctl" / "config.toml"
    path.parent.mkdir()
    path.write_text('url = "old"\n')
    path.chmod(0o644)
    saved = config.Config(url='http://a"b\\c', token="pap_x")
    config.save(saved, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.read_file(path) == {"url": 'http://a"b\\c', "token": "pap_x"}


def test_nothing_configured_exits_2_saying_what_to_set(portalctl, monkeypatch, tmp_path):
    monkeypatch.delenv("PORTAL_URL", raising=False)
    monkeypatch.setenv("PORTAL_TOKEN", "pap_x")
    monkeypatch.setenv("PORTALCTL_CONFIG", str(tmp_path / "none.toml"))
    result = portalctl("runs", "list")
    assert result.exit_code == 2
    assert "PORTAL_URL not set" in result.stderr and "portalctl login" in result.stderr


def test_a_broken_config_file_is_reported(portalctl, monkeypatch, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("url = \n")
    monkeypatch.setenv("PORTALCTL_CONFIG", str(path))
    monkeypatch.delenv("PORTAL_URL", raising=False)
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load()
    assert portalctl("whoami").exit_code == 2


def test_the_config_file_lives_under_xdg_config_home(monkeypatch, tmp_path):
    monkeypatch.delenv("PORTALCTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.config_path() == tmp_path / "portalctl" / "config.toml"


NOW = datetime(2026, 2, 1, 10, 0, 41, tzinfo=UTC)


@pytest.mark.parametrize(
    "fields, line",
    [
        ({}, "queued"),
        ({"state_reason": "waiting: 3 of 3 running"}, "queued (waiting: 3 of 3 running)"),
        ({"state": "RUNNING", "started_at": "2026-02-01T10:00:39Z"}, "starting the kernel · 0:02"),
        (
            {"state": "RUNNING", "started_at": "2026-02-01T10:00:00Z", "done": 2, "total": 12},
            "cell 3 of 12 · 0:41",
        ),
        (
            {"state": "RUNNING", "done": 2, "total": 12, "duration_seconds": 7.9},
            "cell 3 of 12 · 0:07",
        ),
        (
            {
                "state": "TIMED_OUT",
                "started_at": "2026-02-01T08:00:00Z",
                "done": 1,
                "total": 2,
                "finished_at": "2026-02-01T09:02:03Z",
            },
            "timed out, cell 1 of 2 · 1:02:03",
        ),
    ],
)
def test_the_progress_line(fields, line):
    assert describe(run_body(**fields), NOW) == line


def test_elapsed_time_format():
    assert [format_elapsed(s) for s in (0, 41, 725, 3723, -5)] == [
        "0:00",
        "0:41",
        "12:05",
        "1:02:03",
        "0:00",
    ]


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(terminal):
    out = io.StringIO()
    view = RunProgress(Console(file=out, force_terminal=terminal, width=100), 42)
    for seconds in (40, 41):  # only the clock changed: no new line in a log
        view.update(run_body(state="RUNNING", done=2, total=12, duration_seconds=seconds), NOW)
    view.update(run_body(state="SUCCEEDED", done=12, total=12, duration_seconds=50), NOW)
    view.close()
    text = out.getvalue()
    # A terminal's bar is redrawn by a timer (what it showed between updates is not
    # determined); its last state is.
    assert "succeeded, cell 12 of 12 · 0:50" in text
    if terminal:
        assert "run 42" in text and "━" in text
    else:
        assert text.splitlines() == [
            "run 42: cell 3 of 12 · 0:40",
            "run 42: succeeded, cell 12 of 12 · 0:50",
        ]
