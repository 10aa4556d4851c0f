"""Every page of the admin console opens for staff: lists, the change page of an object
of each model, and the add page where adding there is allowed (else 403)."""

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.contrib import admin
from django.urls import reverse

from api.models import ApiToken
from clusters import services as cluster_services
from clusters.models import EMRRelease
from jobs import services
from notify.models import Delivery, NotificationTarget
from recorded.models import RecordedValue

pytestmark = pytest.mark.django_db

NOT_ADDED_IN_THE_ADMIN = {
    "jobs.job",
    "jobs.notebookversion",
    "jobs.run",
    "clusters.cluster",
    "clusters.sshkey",
    "api.apitoken",
    "notify.notificationtarget",
    "notify.delivery",
    "recorded.recordedvalue",
}


@pytest.fixture
def objects(make_job, alice):
    job = make_job("trivial.ipynb", cron="0 6 * * *")
    run = services.run_now(job, alice, enqueue=False)
    services.cancel_run(run, alice)
    cluster_services.launch_cluster(alice, cluster_services.ClusterSpec(name="adminview"))
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    cluster_services.add_ssh_key(alice, "laptop", public + " alice@laptop")
    EMRRelease.objects.get_or_create(label="emr-7.5.0", defaults={"spark_version": "3.5.2"})
    ApiToken.issue(alice, "CI", ["read"])
    target = NotificationTarget.objects.create(
        job=job, kind="webhook", url="http://127.0.0.1:9/hook", events=["run.failed"]
    )
    Delivery.objects.create(target=target, job=job, event="run.failed", key="k", body="{}")
    RecordedValue.objects.create(run=run, name="precision", kind="number", number=0.9)


def test_every_admin_page_opens(client, staff, objects):
    client.force_login(staff)
    for model in admin.site._registry:
        opts = model._meta
        label = f"{opts.app_label}.{opts.model_name}"
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert client.get(changelist).status_code == 200, label
        add = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        assert add.status_code == (403 if label in NOT_ADDED_IN_THE_ADMIN else 200), label
        obj = model._default_manager.first()
        if obj is not None:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            assert client.get(change).status_code == 200, label


def test_cancel_action_counts_only_runs_that_were_active(client, staff, make_job, alice):
    job = make_job("trivial.ipynb")
    queued = services.run_now(job, alice, enqueue=False)
    ended = services.run_now(job, alice, enqueue=False)
    services.cancel_run(ended, alice)
    client.force_login(staff)
    response = client.post(
        reverse("admin:jobs_run_changelist"),
        {"action": "cancel", "_selected_action": [queued.pk, ended.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "Asked 1 run(s) to cancel. 1 had already ended." in text


def test_admin_job_edits_are_validated_and_move_the_next_slot(client, staff, make_job):
    from jobs.models import Job

    job = make_job("trivial.ipynb", cron="0 6 * * *")
    client.force_login(staff)
    url = reverse("admin:jobs_job_change", args=[job.pk])
    page = client.get(url).context
    form = page["adminform"].form
    data = {
        k: v for k, v in form.initial.items() if v is not None and not isinstance(v, (list, dict))
    }
    for inline in page["inline_admin_formsets"]:  # the inlines' management forms and rows
        formset = inline.formset
        data[f"{formset.prefix}-TOTAL_FORMS"] = formset.total_form_count()
        data[f"{formset.prefix}-INITIAL_FORMS"] = formset.initial_form_count()
        for row in formset.forms:
            data[f"{row.prefix}-id"] = row.instance.pk
            data[f"{row.prefix}-job"] = job.pk
    data.update(parameters=json.dumps(job.parameters), owner=job.owner_id)
    data.pop("cluster", None)
    bad = client.post(url, {**data, "cron": "0 0 30 2 *"})
    assert bad.status_code == 200 and "never fires" in bad.content.decode()
    good = client.post(url, {**data, "cron": "15 7 * * *", "timezone": "UTC"})
    assert good.status_code == 302, (
        good.context["adminform"].form.errors,
        [f.formset.errors for f in good.context["inline_admin_formsets"]],
        [f.formset.non_form_errors() for f in good.context["inline_admin_formsets"]],
    )
    job = Job.objects.get(pk=job.pk)
    assert (job.next_run_at.hour, job.next_run_at.minute) == (7, 15)
