"""Pages of a job's notification targets: parse the form, call a service, redirect.

Targets belong to a job: only who may change the job (its owner, staff) sees or changes
them, through ``target_for_owner``, which answers 404 for everyone else's.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from jobs.models import Job
from jobs.views import job_for_owner
from notify import services
from notify.forms import TargetForm
from notify.models import NotificationTarget
from quotas.limits import LimitExceeded


def target_for_owner(user, pk) -> NotificationTarget:
    """The target ``pk`` if ``user`` may change its job (owner or staff), else Http404."""
    return get_object_or_404(
        NotificationTarget.objects.filter(job__in=Job.objects.owned_by(user)).select_related("job"),
        pk=pk,
    )


def _save(request, form: TargetForm, job: Job):
    """Save a valid ``form`` through the service; the response, or None (errors on form)."""
    target = form.save(commit=False)
    target.job = job
    try:
        target, secret = services.save_target(target)
    except ValidationError as exc:
        form.add_error(None, exc)
        return None
    except LimitExceeded as exc:
        form.add_error(exc.field, exc.message)
        return None
    if secret:
        return _show_secret(request, target, secret)
    messages.success(request, "Notification target saved.")
    return redirect(job)


@require_http_methods(["GET", "POST"])
def target_new(request, pk):
    job = job_for_owner(request.user, pk)
    form = TargetForm(request.POST or None, instance=NotificationTarget(job=job))
    if request.method == "POST" and form.is_valid():
        response = _save(request, form, job)
        if response is not None:
            return response
    return render(request, "notify/target_form.html", {"form": form, "job": job})


@require_http_methods(["GET", "POST"])
def target_edit(request, pk):
    target = target_for_owner(request.user, pk)
    form = TargetForm(request.POST or None, instance=target)
    if request.method == "POST" and form.is_valid():
        response = _save(request, form, target.job)
        if response is not None:
            return response
    return render(
        request, "notify/target_form.html", {"form": form, "job": target.job, "target": target}
    )


@require_http_methods(["GET", "POST"])
def target_delete(request, pk):
    target = target_for_owner(request.user, pk)
    if request.method == "POST":
        job = target.job
        services.delete_target(target)
        messages.success(request, "Notification target removed.")
        return redirect(job)
    return render(request, "notify/target_delete.html", {"target": target, "job": target.job})


@require_POST
def target_secret(request, pk):
    """Give a webhook a new signing secret and show it, once."""
    target = target_for_owner(request.user, pk)
    try:
        secret = services.regenerate_secret(target)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect(target.job)
    return _show_secret(request, target, secret)


def _show_secret(request, target: NotificationTarget, secret: str):
    """The page that shows a webhook's secret, once: never cached."""
    response = render(request, "notify/target_secret.html", {"target": target, "secret": secret})
    add_never_cache_headers(response)
    return response
