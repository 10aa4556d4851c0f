"""A deleted continuous job's checkpoints and sinks are removed by the streams worker: at
once after the deletion (task ``remove_stream_dirs``) and by the hourly sweep
(``prune_stream_dirs``), never following a symlink the owner's clusters may plant."""

import os
import subprocess
import sys
import textwrap

import pytest

from jobs import services, tasks
from jobs.models import Job
from jobs.services import streams
from portal import sandbox as sb
from portal.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(settings, tmp_path):
    settings.STREAMS_ROOT = tmp_path / "streams"
    return settings.STREAMS_ROOT


@pytest.fixture
def stream_job(make_job, root):
    return make_job("trivial.ipynb", name="stream", continuous=True)


@pytest.fixture
def outside(tmp_path):
    """A directory outside STREAMS_ROOT with a file that must survive."""
    path = tmp_path / "outside"
    (path / "checkpoint-1").mkdir(parents=True)
    (path / "keep").write_text("mine")
    (path / "checkpoint-1" / "keep").write_text("mine")
    return path


def filled(job: Job) -> Job:
    """``job`` with its current checkpoint and sink directories holding a file each."""
    for path in streams.prepare_stream_dirs(job):
        (path / "part-0").write_text("0")
    return job


def intact(outside) -> bool:
    return (outside / "keep").exists() and (outside / "checkpoint-1" / "keep").exists()


@pytest.fixture
def sent(monkeypatch):
    """The (args) of each ``remove_stream_dirs`` message sent."""
    messages = []
    monkeypatch.setattr(
        tasks.remove_stream_dirs,
        "apply_async",
        lambda args, kwargs=None, **kw: messages.append(args),
    )
    return messages


def test_deleting_a_continuous_job_queues_the_removal_on_the_streams_queue(
    stream_job, sent, django_capture_on_commit_callbacks
):
    filled(stream_job)
    stream_dir, owner_dir = stream_job.stream_dir, stream_job.stream_dir.parent
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_job(stream_job)
    assert sent == [(stream_job.owner_id, stream_job.pk, "")]  # (no S3 prefix)
    assert stream_dir.is_dir()  # the web process leaves them to the streams worker
    assert app.amqp.router.route({}, "jobs.tasks.remove_stream_dirs")["queue"].name == "clusters"

    assert tasks.remove_stream_dirs(*sent[0]) is True
    assert not stream_dir.exists() and owner_dir.is_dir()
    assert tasks.remove_stream_dirs(*sent[0]) is False  # a duplicate delivery: nothing


def test_a_job_that_was_continuous_once_gets_its_removal_and_a_batch_job_none(
    stream_job, make_job, sent, django_capture_on_commit_callbacks
):
    streams.supervise_streams()  # a continuous run
    Job.objects.filter(pk=stream_job.pk).update(continuous=False)
    batch = make_job("trivial.ipynb", name="batch")
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_job(Job.objects.get(pk=stream_job.pk))
        services.delete_job(batch)
    assert sent == [(stream_job.owner_id, stream_job.pk, "")]  # (no S3 prefix)


def test_the_removal_task_leaves_an_existing_jobs_directories(stream_job):
    filled(stream_job)
    assert tasks.remove_stream_dirs(stream_job.owner_id, stream_job.pk) is False
    assert stream_job.checkpoint_dir.joinpath("part-0").exists()


def test_the_sweep_removes_orphans_and_keeps_live_and_turned_off_jobs(
    stream_job, make_job, bob, root
):
    live = filled(stream_job)
    off = filled(make_job("trivial.ipynb", name="off", continuous=True))
    Job.objects.filter(pk=off.pk).update(continuous=False, enabled=False)
    deleted = filled(make_job("trivial.ipynb", name="deleted", continuous=True))
    orphan_dir = deleted.stream_dir
    Job.objects.filter(pk=deleted.pk).delete()
    # A live job's id under another owner's directory is no job's directory.
    misplaced = root / str(bob.pk) / f"job-{live.pk}" / "checkpoint-1"
    misplaced.mkdir(parents=True)
    strangers = [root / "README", root / str(live.owner_id) / "job-x", root / "notes" / "job-1"]
    for path in strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not ours")

    assert streams.prune_stream_dirs() == 2
    assert not orphan_dir.exists() and not misplaced.parent.exists()
    assert live.checkpoint_dir.joinpath("part-0").exists()
    assert off.output_dir.joinpath("part-0").exists()  # turning it on again resumes
    assert all(path.exists() for path in strangers)
    assert streams.prune_stream_dirs() == 0


def test_a_planted_job_symlink_is_unlinked_not_followed(alice, root, outside):
    owner_dir = root / str(alice.pk)
    owner_dir.mkdir(parents=True)
    (owner_dir / "job-9001").symlink_to(outside)
    (owner_dir / "job-9002").symlink_to(outside)
    (owner_dir / "job-9003").mkdir()
    (owner_dir / "job-9003" / "link").symlink_to(outside)

    assert streams.prune_stream_dirs() == 3
    assert not os.path.lexists(owner_dir / "job-9001")
    assert not os.path.lexists(owner_dir / "job-9002")
    assert not os.path.lexists(owner_dir / "job-9003")
    assert intact(outside)


def test_a_symlinked_owner_directory_is_refused(root, outside):
    root.mkdir()
    (outside / "job-9001").mkdir()
    (outside / "job-9001" / "keep").write_text("mine")
    (root / "77").symlink_to(outside)
    with pytest.raises(OSError):
        streams.remove_stream_dirs(77, 9001)
    assert streams.prune_stream_dirs() == 0
    assert (outside / "job-9001" / "keep").exists()
    with pytest.raises(ValueError):
        streams.remove_stream_dirs(0, 1)


def test_preparing_a_run_unlinks_planted_symlinks_instead_of_following_them(stream_job, outside):
    stream_dir = stream_job.stream_dir
    stream_dir.parent.mkdir(parents=True)
    stream_dir.symlink_to(outside)  # outside/checkpoint-1 would be the run's checkpoint
    checkpoint, output = streams.prepare_stream_dirs(stream_job)
    assert not stream_dir.is_symlink() and checkpoint.is_dir() and output.is_dir()
    assert intact(outside)

    output.rmdir()
    output.symlink_to(outside)
    stream_job = streams.reset_checkpoint(stream_job)  # checkpoint-1 is now an old one
    (stream_dir / "output-2").symlink_to(outside)
    assert streams.prepare_stream_dirs(stream_job) == (
        stream_job.checkpoint_dir,
        stream_job.output_dir,
    )
    assert sorted(p.name for p in stream_dir.iterdir()) == ["checkpoint-2", "output-2"]
    assert not stream_job.output_dir.is_symlink()
    assert intact(outside)


def write_as_sandbox(job: Job) -> None:
    """Fill ``job``'s current directories from a real sandbox of its owner, as a run does:
    files and directories the worker does not own, some with no permissions at all, and
    a symlink to /etc."""
    dirs = streams.prepare_stream_dirs(job)
    box = sb.Sandbox(
        sb.SandboxSpec(
            name=f"t-sdirs-{os.getpid()}",
            uid=sb.uid_for(job.owner_id),
            writable=tuple(str(p) for p in dirs),
        )
    ).prepare()
    code = textwrap.dedent(
        """
        import os, sys
        for path in sys.argv[1:]:
            os.makedirs(f"{path}/offsets/deep")
            with open(f"{path}/offsets/deep/0", "w") as f:
                f.write("x")
            os.chmod(f"{path}/offsets/deep/0", 0)
            os.chmod(f"{path}/offsets/deep", 0)
            os.chmod(f"{path}/offsets", 0o500)
            os.symlink("/etc", f"{path}/etc")
        """
    )
    try:
        proc = box.popen(
            [sys.executable, "-c", code, *map(str, dirs)],
            {"PATH": os.defpath},
            stderr=subprocess.PIPE,
        )
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    finally:
        box.destroy()
    for path in dirs:
        assert (path / "offsets").stat().st_uid == sb.uid_for(job.owner_id)


@pytest.mark.sandbox
def test_files_a_sandbox_wrote_go_at_a_reset_and_at_a_deletion(
    stream_job, sent, django_capture_on_commit_callbacks
):
    if not sb.enabled():
        pytest.skip("KERNEL_SANDBOX=none: the files would be the worker's own")
    write_as_sandbox(stream_job)
    first = (stream_job.checkpoint_dir, stream_job.output_dir)
    stream_job = streams.reset_checkpoint(stream_job)
    streams.prepare_stream_dirs(stream_job)
    assert not any(os.path.lexists(p) for p in first)

    write_as_sandbox(stream_job)
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_job(stream_job)
    assert tasks.remove_stream_dirs(*sent[0]) is True
    assert not os.path.lexists(stream_job.stream_dir)
    assert os.path.exists("/etc/passwd")
