"""Pages of backfills and sweeps (``jobs.services.groups``): the forms that start them on
a job's page, and the group page with its progress, its runs, Cancel all and Retry
failed. Who may do what: starting and acting need the job's owner (or staff); the group
page is seen by whoever sees the job."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from jobs import notebooks
from jobs.forms import ParametersForm
from jobs.models import Job, Run, RunGroup
from jobs.services import groups
from jobs.views import job_for_owner
from quotas.limits import LimitExceeded
from recorded.models import RecordedValue

#: How many runs a group page lists in its table (the progress counts all of them).
TABLE_ROWS = 500


class GroupLimitsForm(forms.Form):
    """What backfills and sweeps share: how many of their runs run at once."""

    max_concurrent = forms.IntegerField(
        min_value=1,
        initial=2,
        label="Runs at a time",
        help_text="At most this many of its runs are queued or running at once.",
    )


class BackfillForm(GroupLimitsForm):
    """A backfill's range (wall times in the job's time zone) and its choice for slots
    that already have a run."""

    start = forms.DateTimeField(
        label="From", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    end = forms.DateTimeField(
        label="To (included)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    rerun_existing = forms.BooleanField(
        required=False,
        label="Re-run slots that already have a run",
        help_text="Otherwise they are skipped. A re-run is a new run of the slot; the "
        "slot's own run stays as it was.",
    )


class SweepForm(GroupLimitsForm):
    """A sweep: for each parameter of the notebook, the values to try (blank: the job's
    value), and how they combine.

    A notebook without a parameters cell (``free``) takes any parameters: the form then
    offers the job's own parameters (``free_values``) and FREE_SWEEP_ROWS blank rows, each
    a name (``sweep-free-<i>-name``) and its values (``sweep-free-<i>-values``); the
    values are typed as a free parameter's (``notebooks.free_value``) when the sweep is
    created."""

    combine = forms.ChoiceField(choices=RunGroup.Combine.choices, initial=RunGroup.Combine.GRID)

    def __init__(
        self,
        schema: dict,
        *args: Any,
        free: bool = False,
        free_values: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.schema = dict(schema)
        if free:  # the job's own parameters, typed by their stored values
            for name, value in (free_values or {}).items():
                self.schema[name] = {"type": notebooks.free_type(value)}
        for name, spec in self.schema.items():
            self.fields[f"sweep-{name}"] = forms.CharField(
                required=False,
                label=name,
                help_text=f"{spec['type']}: values separated by commas, e.g. "
                f"{_example(spec['type'])}",
            )
        self.free_rows = FREE_SWEEP_ROWS if free else 0
        for i in range(self.free_rows):
            self.fields[f"sweep-free-{i}-name"] = forms.CharField(
                required=False, label="Another parameter", help_text="Its name."
            )
            self.fields[f"sweep-free-{i}-values"] = forms.CharField(
                required=False,
                label="Its values",
                help_text='Separated by commas: JSON (1, 0.5, true, "text") or text.',
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for i in range(self.free_rows):
            name = data.get(f"sweep-free-{i}-name", "").strip()
            if name and not data.get(f"sweep-free-{i}-values", "").strip():
                self.add_error(f"sweep-free-{i}-values", f"Give the values of {name}.")
            if name in self.schema:
                self.add_error(f"sweep-free-{i}-name", f"{name} has its own field above.")
        return data

    def axes(self) -> dict[str, list]:
        """The swept parameters and their values (JSON where the text is JSON, else the
        text itself), in the notebook's order, then the free rows'."""
        axes = {}
        for name in self.schema:
            text = self.cleaned_data.get(f"sweep-{name}", "").strip()
            if text:
                axes[name] = [_value(part.strip()) for part in text.split(",")]
        for i in range(self.free_rows):
            name = self.cleaned_data.get(f"sweep-free-{i}-name", "").strip()
            text = self.cleaned_data.get(f"sweep-free-{i}-values", "").strip()
            if name and text:
                axes[name] = [_value(part.strip()) for part in text.split(",")]
        return axes


#: Blank rows of new parameters the sweep form offers for a notebook without a
#: parameters cell.
FREE_SWEEP_ROWS = 2


def _example(kind: str) -> str:
    return {
        "int": "1, 2, 5",
        "float": "0.01, 0.1, 1.0",
        "bool": "true, false",
        "date": "2026-01-01, 2026-02-01",
    }.get(kind, "a, b, c")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _form_error(form: forms.Form, exc: Exception) -> None:
    messages_ = getattr(exc, "message", None) or str(exc)
    form.add_error(None, messages_)


@require_http_methods(["GET", "POST"])
def backfill_new(request, pk):
    """The backfill form of job ``pk`` (owner or staff); a valid POST starts it and goes
    to its page."""
    job = job_for_owner(request.user, pk)
    if not job.cron:
        raise Http404("This job has no schedule to backfill.")
    version = job.latest_version()
    schema = version.parameter_schema or {}
    form = BackfillForm(request.POST or None)
    params = ParametersForm(schema, request.POST or None, values=job.parameters)
    if request.method == "POST" and form.is_valid() and params.is_valid():
        data = form.cleaned_data
        try:
            group = groups.create_backfill(
                job,
                request.user,
                data["start"].replace(tzinfo=None),
                data["end"].replace(tzinfo=None),
                parameters=params.json_values(),
                max_concurrent=data["max_concurrent"],
                rerun_existing=data["rerun_existing"],
            )
        except (groups.GroupError, notebooks.ParameterError, LimitExceeded) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Backfill started: {group.runs.count()} runs.")
            return redirect(group)
    return render(
        request,
        "jobs/group_form.html",
        {"job": job, "form": form, "params": params, "kind": "backfill"},
    )


@require_http_methods(["GET", "POST"])
def sweep_new(request, pk):
    """The sweep form of job ``pk`` (owner or staff); a valid POST starts it and goes to
    its page."""
    job = job_for_owner(request.user, pk)
    version = job.latest_version()
    schema = version.parameter_schema or {}
    free = not version.has_parameters_cell
    if not schema and not free:
        raise Http404("This notebook has no parameters to sweep.")
    form = SweepForm(schema, request.POST or None, free=free, free_values=job.parameters)
    if request.method == "POST" and form.is_valid():
        try:
            group = groups.create_sweep(
                job,
                request.user,
                form.axes(),
                combine=form.cleaned_data["combine"],
                max_concurrent=form.cleaned_data["max_concurrent"],
            )
        except (groups.GroupError, notebooks.ParameterError, LimitExceeded) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Sweep started: {group.runs.count()} runs.")
            return redirect(group)
    return render(request, "jobs/group_form.html", {"job": job, "form": form, "kind": "sweep"})


def group_for_viewer(user, pk) -> RunGroup:
    """Group ``pk`` if ``user`` may see its job, else Http404."""
    return get_object_or_404(
        RunGroup.objects.select_related("job").filter(job__in=Job.objects.visible_to(user)), pk=pk
    )


def group_for_owner(user, pk) -> RunGroup:
    """Group ``pk`` if ``user`` may act on its job (owner or staff), else Http404."""
    return get_object_or_404(
        RunGroup.objects.select_related("job").filter(job__in=Job.objects.owned_by(user)), pk=pk
    )


def recorded_by_run(runs: list[Run]) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """The names of the numbers and texts ``runs`` recorded (sorted), and each run's
    ``{name: value}``."""
    values: dict[int, dict[str, Any]] = {}
    names: set[str] = set()
    kinds = (RecordedValue.Kind.NUMBER, RecordedValue.Kind.TEXT)
    for run_id, name, kind, number, text in RecordedValue.objects.filter(
        run__in=runs, kind__in=kinds
    ).values_list("run_id", "name", "kind", "number", "text"):
        values.setdefault(run_id, {})[name] = number if kind == RecordedValue.Kind.NUMBER else text
        names.add(name)
    return sorted(names), values


def group_context(group: RunGroup, user) -> dict[str, Any]:
    """What the group page and its polled part show: progress and the newest run of each
    item (at most TABLE_ROWS), with the swept parameters' values and the recorded values
    of each; for a sweep, the chart's data (``chart``: the swept names, the numeric
    recorded names, and one point per finished run)."""
    runs = groups.latest_runs(group)
    shown = runs[:TABLE_ROWS]
    swept = list(group.parameters) if group.kind == RunGroup.Kind.SWEEP else []
    names, recorded = recorded_by_run(shown)
    rows = [
        (
            run,
            [run.parameters.get(name) for name in swept],
            [recorded.get(run.pk, {}).get(name) for name in names],
        )
        for run in shown
    ]
    chart = None
    if swept:
        numeric = sorted(
            {n for v in recorded.values() for n, x in v.items() if isinstance(x, float)}
        )
        chart = {
            "parameters": swept,
            "values": numeric,
            "points": [
                {
                    "run": run.pk,
                    "parameters": {name: run.parameters.get(name) for name in swept},
                    "values": {
                        n: x for n, x in recorded.get(run.pk, {}).items() if isinstance(x, float)
                    },
                }
                for run in shown
                if run.pk in recorded
            ],
        }
    return {
        "group": group,
        "job": group.job,
        "progress": groups.progress(group, runs),
        "rows": rows,
        "swept": swept,
        "recorded_names": names,
        "chart": chart,
        "cut": max(len(runs) - TABLE_ROWS, 0),
        "can_change": group.job.can_change(user),
    }


def group_detail(request, pk):
    """The page of group ``pk``; its runs table alone for htmx polls (``HX-Request``)."""
    group = group_for_viewer(request.user, pk)
    context = group_context(group, request.user)
    if request.headers.get("HX-Request"):
        return render(request, "jobs/_group_runs.html", context)
    return render(request, "jobs/group_detail.html", context)


@require_POST
def group_cancel(request, pk) -> HttpResponse:
    """Cancel every active run of group ``pk``."""
    group = group_for_owner(request.user, pk)
    count = groups.cancel_group(group, request.user)
    messages.success(request, f"Cancelled {count} run{'s' if count != 1 else ''}.")
    return redirect(group)


@require_POST
def group_retry(request, pk) -> HttpResponse:
    """Start a new run for each failed item of group ``pk``."""
    group = group_for_owner(request.user, pk)
    try:
        count = groups.retry_failed(group, request.user)
    except LimitExceeded as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Retrying {count} failed run{'s' if count != 1 else ''}.")
    return redirect(group)
