"""The sandbox itself (portal.sandbox): what a process inside can and cannot do.

These run real bubblewrap sandboxes (marker ``sandbox``: skipped, with the reason, where
this host cannot make one, e.g. a laptop without bubblewrap; CI always can).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from portal import sandbox as sb

pytestmark = pytest.mark.sandbox


@pytest.fixture
def make(settings):
    """Factory of prepared sandboxes, destroyed at teardown."""
    made = []

    def make_one(name="t-probe", uid=None, **spec):
        box = sb.Sandbox(
            sb.SandboxSpec(name=f"{name}-{os.getpid()}", uid=uid or sb.uid_for(4242), **spec)
        ).prepare()
        made.append(box)
        return box

    yield make_one
    for box in made:
        box.destroy()


def run_python(box, code, timeout=60, env=None):
    """Run ``code`` with the venv's Python in ``box``; return its last stdout line as JSON."""
    proc = box.popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env or {"PATH": os.defpath},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def test_the_sandbox_is_unprivileged_on_the_host_not_only_inside(make, settings):
    shared = settings.DATA_DIR / "planted"  # bound read-only into the sandbox, as a data root is
    shared.mkdir(exist_ok=True)
    shared.chmod(0o755)
    secret = shared / "root-only"
    secret.write_text("root's secret")
    secret.chmod(0o600)
    box = make(read_only=(str(shared),))
    seen = run_python(
        box,
        f"""
        import json, os
        def attempt(path):
            try:
                open(path).read()
                return "read"
            except OSError as exc:
                return type(exc).__name__
        print(json.dumps({{
            "uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
            "root_only": attempt({str(secret)!r}), "shadow": attempt("/etc/shadow"),
        }}))
    """,
    )
    assert seen["root_only"] == "PermissionError" and seen["shadow"] == "PermissionError"
    assert seen["uid"] == seen["euid"] == sb.uid_for(4242) and seen["groups"] == []


def test_the_sandbox_sees_nothing_of_the_data_dir_or_the_repository(make, settings):
    from django.conf import settings as django_settings

    (django_settings.DATA_DIR / "secret_key_probe").write_text("x")
    box = make()
    seen = run_python(
        box,
        f"""
        import json, os
        data = {str(django_settings.DATA_DIR)!r}
        base = {str(django_settings.BASE_DIR)!r}
        print(json.dumps({{
            "data_dir": [p for p in ("secret_key_probe", "storage", "sandbox")
                         if os.path.exists(os.path.join(data, p))],
            "repo": [p for p in (".git", "portal/settings.py", "manage.py", "requirements.txt",
                                 "telemetry/__init__.py")
                     if os.path.exists(os.path.join(base, p))],
            "root_home": os.access("/root", os.R_OK),
            "writable_usr": os.access("/usr/bin", os.W_OK),
            "home": os.getcwd(), "tmp_writable": os.access("/tmp", os.W_OK),
        }}))
    """,
    )
    assert seen["data_dir"] == ["sandbox"]  # only the way to its own scratch directory
    assert seen["repo"] == ["telemetry/__init__.py"]  # of the repository, only the dataset package
    assert seen["root_home"] is False and seen["writable_usr"] is False
    assert seen["home"] == str(box.home) and seen["tmp_writable"] is True


def test_the_sandbox_has_its_own_processes_and_no_network(make):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        box = make()
        seen = run_python(
            box,
            f"""
            import json, os, socket
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2)
                reach = "connected"
            except OSError as exc:
                reach = type(exc).__name__
            try:
                open("/proc/1/environ").read()
                environ = "read"
            except OSError as exc:
                environ = type(exc).__name__
            print(json.dumps({{"pids": pids, "reach": reach, "environ": environ}}))
        """,
        )
    finally:
        listener.close()
    assert os.getpid() not in seen["pids"] and max(seen["pids"]) < 100
    assert seen["reach"] == "ConnectionRefusedError"
    assert seen["environ"] == "PermissionError"


def test_the_environment_is_exactly_what_the_caller_gave(make, monkeypatch):
    monkeypatch.setenv("PORTAL_PROBE_SECRET", "must-not-leak")
    box = make()
    seen = run_python(
        box,
        "import json, os; print(json.dumps(dict(os.environ)))",
        env={"PATH": os.defpath, "ONLY": "this"},
    )
    assert "PORTAL_PROBE_SECRET" not in seen and seen["ONLY"] == "this"
    assert seen["HOME"] == str(box.home) and seen["TMPDIR"] == "/tmp"


def test_the_memory_limit_kills_inside_the_sandbox_only(make):
    box = make(limits=sb.Limits(memory_bytes=256 * 2**20, pids=64))
    if box.cgroup is None:
        pytest.skip("no cgroup on this host")
    proc = box.popen(
        [sys.executable, "-c", "b = bytearray(1024 * 2**20); print('allocated')"],
        {"PATH": os.defpath},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=60)
    assert b"allocated" not in out and proc.returncode != 0
    assert box.oom_killed()


def test_a_fork_bomb_is_contained_and_destroy_ends_it(make):
    box = make(limits=sb.Limits(pids=64))
    proc = box.popen(
        ["sh", "-c", "f() { f | f & }; f; sleep 30"],
        {"PATH": os.defpath},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    uid = box.spec.uid
    mine = [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
    ]
    assert 0 < len(mine) <= 64 + 2
    box.destroy([proc.pid])
    proc.wait(timeout=10)
    left = [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
    ]
    assert left == []


def test_the_forwarder_reaches_exactly_one_endpoint(make):
    target, other = socket.socket(), socket.socket()
    for s in (target, other):
        s.bind(("127.0.0.1", 0))
        s.listen()
    box = make(forward_port=15002)
    box.relay("127.0.0.1", target.getsockname()[1])
    try:
        seen = run_python(
            box,
            f"""
            import json, socket, time
            for _ in range(50):
                try:
                    c = socket.create_connection(("localhost", 15002), timeout=2)
                    c.sendall(b"hello")
                    ok = True
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                ok = False
            try:
                socket.create_connection(("127.0.0.1", {other.getsockname()[1]}), timeout=2)
                other = "connected"
            except OSError as exc:
                other = type(exc).__name__
            print(json.dumps({{"forwarded": ok, "other": other}}))
        """,
        )
        target.settimeout(5)
        conn, _ = target.accept()
        assert conn.recv(5) == b"hello"
        conn.close()
    finally:
        target.close()
        other.close()
    assert seen == {"forwarded": True, "other": "ConnectionRefusedError"}


def test_a_published_port_is_reached_through_the_sandboxs_socket_only(make):
    """The sandbox's own socat publishes a port of its loopback on ``publish_socket``:
    0600, of the sandbox's uid, in its 0700 ipc directory; nothing listens on the host."""
    with socket.socket() as probe:  # a port nothing on the host listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = make(publish_port=port)
    server = box.popen(
        [
            sys.executable,
            "-c",
            "import socket\n"
            f"s = socket.create_server(('127.0.0.1', {port}))\n"
            "c, _ = s.accept()\n"
            "c.sendall(b'from inside ' + c.recv(5))\n",
        ],
        {"PATH": os.defpath},
    )
    try:
        deadline = time.monotonic() + 30
        while not box.publish_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        info = box.publish_socket.lstat()
        assert (info.st_uid, info.st_mode & 0o777) == (box.spec.uid, 0o600)
        assert box.ipc.stat().st_mode & 0o777 == 0o700
        answer = b""
        while not answer and time.monotonic() < deadline:  # until the server inside listens
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(box.publish_socket))
                client.sendall(b"hello")
                client.settimeout(5)
                answer = client.recv(100)
            if not answer:
                time.sleep(0.1)
        assert answer == b"from inside hello"
        with socket.socket() as host, pytest.raises(ConnectionRefusedError):
            host.connect(("127.0.0.1", port))
    finally:
        server.kill()
        server.wait()


def test_names_and_uids_are_checked(settings):
    with pytest.raises(ValueError):
        sb.SandboxSpec(name="../etc", uid=1000)
    with pytest.raises(ValueError):
        sb.SandboxSpec(name="ok", uid=0)
    settings.SANDBOX_UID_BASE = 2**31 - 10
    with pytest.raises(ValueError, match="SANDBOX_UID_BASE"):
        sb.uid_for(20)


def test_without_bubblewrap_the_reason_says_what_to_do(monkeypatch):
    monkeypatch.setattr(sb, "_probe", None)
    monkeypatch.setattr(sb.shutil, "which", lambda name: None)
    reason = sb.unavailable_reason()
    monkeypatch.setattr(sb, "_probe", None)
    assert "bwrap" in reason and "bubblewrap" in reason and "KERNEL_SANDBOX=none" in reason
    with pytest.raises(sb.SandboxUnavailable, match="no notebook runs"):
        monkeypatch.setattr(sb, "_probe", (time.monotonic(), reason))
        sb.require()


def test_cgroups_of_sandboxes_whose_directory_is_gone_are_swept(make):
    first = make(name="t-left")
    if first.cgroup is None:
        pytest.skip("no cgroup on this host")
    import shutil

    shutil.rmtree(first.dir)  # as a killed worker would leave it: a cgroup, no directory
    assert first.cgroup.exists()
    make(name="t-next")
    assert not first.cgroup.exists()
