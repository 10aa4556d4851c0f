"""Symlinks planted by user code never make the root worker give away, or bind, a host
directory (portal.sandbox ``_own_dir`` and ``root_dir``; jobs.services.streams).

The owner's local clusters write the owner's streams root; before it was root's, their code
could plant ``job-<id>`` or ``checkpoint-<n>`` as a symlink to /etc, which the next run's
preparation would then have chowned to the owner's uid and bound writable.
"""

import os
import stat

import pytest

from clusters.backends.local import LocalBackend
from jobs.services import streams
from portal import sandbox as sb

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(os.geteuid() != 0, reason="ownership changes need the root worker"),
]

UID = sb.uid_for(4343)


@pytest.fixture
def target(tmp_path):
    """A host directory user code would like to own: root's, 0755, with a file."""
    path = tmp_path / "etc"
    path.mkdir()
    (path / "passwd").write_text("root:x:0:0\n")
    os.chmod(path, 0o755)
    return path


def owner_of(path):
    info = os.lstat(path)
    return info.st_uid, stat.S_IMODE(info.st_mode)


def test_a_symlink_in_place_of_a_writable_directory_is_refused(settings, tmp_path, target):
    settings.SANDBOX_ROOT = tmp_path / "sandboxes"
    planted = tmp_path / "views"
    planted.symlink_to(target)
    box = sb.Sandbox(
        sb.SandboxSpec(name=f"t-link-{os.getpid()}", uid=UID, writable=(str(planted),))
    )
    try:
        with pytest.raises(OSError):
            box.prepare()
    finally:
        box.destroy()
    assert owner_of(target) == (0, 0o755)


def test_root_dir_replaces_a_symlink_and_takes_a_directory_back(tmp_path, target):
    planted = tmp_path / "owner"
    planted.symlink_to(target)
    sb.root_dir(planted)
    assert not planted.is_symlink() and owner_of(planted) == (0, 0o755)
    assert owner_of(target) == (0, 0o755) and (target / "passwd").exists()
    os.chown(planted, UID, UID)
    os.chmod(planted, 0o700)
    sb.root_dir(planted)
    assert owner_of(planted) == (0, 0o755)


@pytest.mark.django_db
def test_preparing_a_stream_ignores_what_a_cluster_planted(settings, tmp_path, make_job, target):
    """The owner's streams root and job directory, once written by the owner's uid, hold a
    planted job directory and checkpoint symlink: preparation makes both parents root's,
    unlinks the links, and the run's sandbox owns only the real leaves."""
    settings.STREAMS_ROOT = tmp_path / "streams"
    settings.SANDBOX_ROOT = tmp_path / "sandboxes"
    job = make_job("trivial.ipynb", name="stream", continuous=True)
    owner_root = job.stream_dir.parent
    owner_root.mkdir(parents=True)
    os.chown(owner_root, UID, UID)  # as the cluster's sandbox used to leave it
    job.stream_dir.symlink_to(target)
    checkpoint, output = streams.prepare_stream_dirs(job)
    assert owner_of(owner_root) == (0, 0o755) and owner_of(job.stream_dir) == (0, 0o755)
    assert not job.stream_dir.is_symlink() and checkpoint.is_dir() and output.is_dir()
    assert owner_of(target) == (0, 0o755)
    # A leaf planted as a link (before the job's directory was root's) goes too.
    os.rmdir(checkpoint)
    checkpoint.symlink_to(target)
    streams.prepare_stream_dirs(job)
    assert checkpoint.is_dir() and not checkpoint.is_symlink()
    box = sb.Sandbox(
        sb.SandboxSpec(
            name=f"t-stream-{os.getpid()}", uid=UID, writable=(str(checkpoint), str(output))
        )
    )
    try:
        box.prepare()
        assert owner_of(checkpoint) == (UID, 0o700) and owner_of(job.stream_dir)[0] == 0
    finally:
        box.destroy()
    assert owner_of(target) == (0, 0o755)


@pytest.mark.django_db
def test_a_local_cluster_writes_the_streams_root_without_owning_it(settings, tmp_path, alice):
    from tests.clusters.test_gateway import make_cluster

    settings.STREAMS_ROOT = tmp_path / "streams"
    cluster = make_cluster(alice)
    spec = LocalBackend.sandbox(cluster).spec
    root = str(sb.streams_root(cluster.owner_id))
    assert root in spec.shared_writable and root not in spec.writable
