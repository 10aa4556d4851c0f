"""Forms of scheduled notebooks: the job form and the typed parameters form."""

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from clusters.models import Cluster
from jobs import notebooks, schedule
from jobs.models import MAX_RETRIES, Job
from jobs.validators import split_addresses, validate_recipient_count

PARAM_PREFIX = "param"
#: Blank rows of free parameters the form offers (the page's script adds more).
FREE_BLANK_ROWS = 3
_FREE_KEY = re.compile(r"free-(\d{1,6})-(name|type|value)")


@dataclass(frozen=True)
class NotebookUpload:
    """A validated notebook upload: its file name and the parsed notebook (outputs dropped,
    parameters read), which the services take as it is (``services.create_job``)."""

    name: str
    parsed: notebooks.ParsedNotebook


def too_large_message(size: int, limit: int) -> str:
    """The error of a file of ``size`` bytes over the ``limit`` (bytes) of a notebook."""
    return (
        f"The file is larger than {_megabytes(limit)} ({_megabytes(size)}): notebooks may be "
        f"at most {_megabytes(limit)}. Clear its outputs in Jupyter and upload it again."
    )


def _megabytes(n: int) -> str:
    mb = n / 1048576
    return f"{mb:.0f} MB" if mb == int(mb) else f"{mb:.1f} MB"


class NotebookField(forms.FileField):
    """A notebook file (.ipynb), checked for size (NOTEBOOK_MAX_BYTES) before it is read
    and then parsed and validated once (``notebooks.read_notebook``). Cleans to a
    ``NotebookUpload``, or None when the field is optional and empty.

    A file past the size was never stored whole: ``jobs.uploads.NotebookSizeLimit`` stops
    keeping it at the limit and hands over an empty file of the size that was sent.
    """

    default_error_messages = {"required": "Choose a notebook file (.ipynb)."}

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if not upload:
            return None
        limit = settings.NOTEBOOK_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(too_large_message(upload.size, limit), code="too_big")
        upload.seek(0)
        raw = upload.read(limit + 1)
        if len(raw) > limit:  # a file that said it was smaller
            raise forms.ValidationError(too_large_message(len(raw), limit), code="too_big")
        try:
            parsed = notebooks.read_notebook(raw)
        except notebooks.NotebookError as exc:
            raise forms.ValidationError(str(exc), code="notebook") from None
        return NotebookUpload(name=upload.name, parsed=parsed)


class ParametersForm(forms.Form):
    """One typed field per notebook parameter (from ``NotebookVersion.parameter_schema``).

    Field names are ``param-<name>``. ``json_values()`` returns the cleaned values in their
    JSON form (dates as YYYY-MM-DD, lists as lists).

    With ``free`` (a notebook without a ``parameters`` cell, whose runs take any
    parameters, injected at the top) the form has rows of free parameters instead: fields
    ``free-<i>-name``, ``free-<i>-type`` (one of ``notebooks.PARAMETER_TYPES``) and
    ``free-<i>-value`` (text, converted to the type); a row without name or value is
    ignored. Unbound, the rows are ``values`` (typed by ``notebooks.free_type``) and
    FREE_BLANK_ROWS blank ones; bound, the rows the data holds. Without ``free``, posted
    rows are unknown names, refused.

    With ``continuous`` (the job is, or is being made, continuous) the declared parameters
    of ``notebooks.STREAM_PARAMETERS`` are disabled fields showing the directory the portal
    sets instead (``job``'s own, when the job exists: ``stream_directory``), and
    ``json_values`` leaves them out; a free row naming one is refused. Either way their
    inputs carry ``data-stream-parameter``, ``data-portal-value`` and ``data-own-value``
    (the notebook's or the job's value) for the page's script, which toggles them with the
    continuous checkbox (static/jobs/stream-parameters.js).
    """

    def __init__(
        self,
        schema: dict,
        *args,
        values: dict | None = None,
        free: bool = False,
        continuous: bool = False,
        job: Job | None = None,
        **kwargs,
    ):
        kwargs.setdefault("prefix", PARAM_PREFIX)
        super().__init__(*args, **kwargs)
        self.schema = schema
        self.free = free
        self.continuous = continuous
        self.free_values: dict[str, Any] = {}
        values = values or {}
        for name, spec in schema.items():
            initial = values.get(name, spec.get("default"))
            help_text = spec.get("help") or f"{spec['type']}, default {spec.get('default')!r}"
            if name in notebooks.STREAM_PARAMETERS:
                self.fields[name] = self._stream_field(name, spec["type"], initial, help_text, job)
            else:
                self.fields[name] = self._field(spec["type"], initial, help_text)
            self.fields[name].label = name
        self._free_indices: list[int] = []
        if free:
            given = [(n, v) for n, v in values.items() if n not in schema]
            if self.is_bound:
                self._free_indices = sorted(
                    {int(m[1]) for key in self.data if (m := _FREE_KEY.fullmatch(self._bare(key)))}
                )
            else:
                self._free_indices = list(range(len(given) + FREE_BLANK_ROWS))
            for i in self._free_indices:
                name, value = given[i] if i < len(given) else ("", None)
                self._add_free_row(i, name, value)

    def _bare(self, key: str) -> str:
        """A data key without this form's prefix ("" for another form's key)."""
        start = f"{self.prefix}-"
        return key[len(start) :] if key.startswith(start) else ""

    def _add_free_row(self, i: int, name: str, value: Any) -> None:
        kind = notebooks.free_type(value) if name else "str"
        if value is None:
            shown = ""
        elif isinstance(value, (bool, list)):
            shown = json.dumps(value)
        else:
            shown = str(value)
        self.fields[f"free-{i}-name"] = forms.CharField(
            required=False,
            initial=name,
            max_length=100,
            label="Name",
            widget=forms.TextInput(attrs={"aria-label": "Parameter name", "autocomplete": "off"}),
        )
        self.fields[f"free-{i}-type"] = forms.ChoiceField(
            choices=[(t, t) for t in notebooks.PARAMETER_TYPES],
            initial=kind,
            label="Type",
            widget=forms.Select(attrs={"aria-label": "Parameter type"}),
        )
        self.fields[f"free-{i}-value"] = forms.CharField(
            required=False,
            strip=False,
            initial=shown,
            label="Value",
            widget=forms.TextInput(attrs={"aria-label": "Parameter value"}),
        )

    @property
    def free_rows(self) -> list[tuple]:
        """(name, type, value) bound fields of each row of free parameters."""
        return [
            tuple(self[f"free-{i}-{part}"] for part in ("name", "type", "value"))
            for i in self._free_indices
        ]

    def _stream_field(
        self, name: str, kind: str, initial: Any, help_text: str, job: Job | None
    ) -> forms.Field:
        """The field of the stream parameter ``name``: disabled, showing the portal's
        directory, when the job is continuous; else the ordinary field of its type."""
        portal = stream_directory(name, job)
        own = json.dumps(initial) if isinstance(initial, list) else str(initial or "")
        if self.continuous:
            field: forms.Field = forms.CharField(
                initial=portal,
                required=False,
                disabled=True,
                help_text=stream_help(name, job),
            )
        else:
            field = self._field(
                kind,
                initial,
                f"{help_text.rstrip('.')}. For a continuous job the portal sets it to the "
                "job's own durable directory.",
            )
        field.widget.attrs.update(
            {
                "data-stream-parameter": name,
                "data-portal-value": portal,
                "data-own-value": own,
            }
        )
        if self.continuous:
            field.widget.attrs["placeholder"] = "Set by the portal"
        return field

    @staticmethod
    def _field(kind, initial, help_text):
        if kind == "int":
            return forms.IntegerField(initial=initial, help_text=help_text)
        if kind == "float":
            return forms.FloatField(initial=initial, help_text=help_text)
        if kind == "bool":
            return forms.BooleanField(initial=bool(initial), required=False, help_text=help_text)
        if kind == "date":
            return forms.DateField(
                initial=initial, help_text=help_text, widget=forms.DateInput(attrs={"type": "date"})
            )
        if kind == "list":
            return forms.CharField(
                initial=json.dumps(initial) if initial is not None else "[]",
                help_text=help_text + " (a JSON list)",
            )
        return forms.CharField(initial=initial, required=False, strip=False, help_text=help_text)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        for name, spec in self.schema.items():
            if spec["type"] == "list" and name in cleaned:
                try:
                    cleaned[name] = notebooks.json_list(cleaned[name])
                except ValueError as exc:
                    self.add_error(name, f"Enter a JSON list: {exc}.")
        unknown = set()
        for key in self.data:
            bare = self._bare(key)
            if not bare or bare in self.schema:
                continue
            row = _FREE_KEY.fullmatch(bare)
            if row is None:
                unknown.add(bare)
            elif not self.free and row[2] == "name" and self.data.get(key, "").strip():
                unknown.add(self.data[key].strip())
        if unknown:
            raise forms.ValidationError(
                f"The notebook has no parameter named {', '.join(sorted(unknown))}."
            )
        if self.free:
            self._clean_free_rows()
        return cleaned

    def _clean_free_rows(self) -> None:
        """Fill ``free_values`` from the rows, or add an error naming the row's parameter."""
        if len(self._free_indices) > notebooks.MAX_PARAMETERS:
            self.add_error(None, f"At most {notebooks.MAX_PARAMETERS} parameters are allowed.")
            return
        for number, i in enumerate(self._free_indices, 1):
            name = (self.cleaned_data.get(f"free-{i}-name") or "").strip()
            kind = self.cleaned_data.get(f"free-{i}-type") or "str"
            text = self.cleaned_data.get(f"free-{i}-value") or ""
            if not name:
                if text.strip():
                    self.add_error(None, f"Parameter row {number}: enter a name for {text!r}.")
                continue
            if name in self.free_values:
                self.add_error(None, f"Parameter {name} is given twice.")
                continue
            if self.continuous and name in notebooks.STREAM_PARAMETERS:
                self.add_error(
                    None,
                    f"Parameter {name} is set by the portal for a continuous job: remove it.",
                )
                continue
            if kind != "str":
                text = text.strip()
            try:
                self.free_values.update(
                    notebooks.coerce_parameters({name: {"type": kind}}, {name: text})
                )
            except notebooks.ParameterError as exc:
                self.add_error(None, f"Parameter {exc}.")

    def json_values(self) -> dict:
        """The cleaned values by name in their JSON form, without the stream parameters
        the portal sets (``continuous``)."""
        out = {}
        for name in self.schema:
            if self.continuous and name in notebooks.STREAM_PARAMETERS:
                continue
            value = self.cleaned_data.get(name)
            out[name] = value.isoformat() if isinstance(value, dt.date) else value
        out.update(self.free_values)
        return out


#: What each of ``notebooks.STREAM_PARAMETERS`` is, in the job form's words.
_STREAM_DIRECTORY_WORDS = {
    "checkpoint_dir": "checkpoint directory",
    "output_dir": "output directory",
}


def stream_directory(name: str, job: Job | None) -> str:
    """Where the portal points the stream parameter ``name`` in ``job``'s continuous runs
    (``Job.stream_locations``: a path on the worker host's disk, or an S3 URI for a job on
    EMR), or "" before the job exists."""
    if job is None or job.pk is None:
        return ""
    return dict(zip(notebooks.STREAM_PARAMETERS, job.stream_locations(), strict=True))[name]


def stream_help(name: str, job: Job | None) -> str:
    """The help text of the read-only field of the stream parameter ``name``."""
    where = stream_directory(name, job) or f"the job's own {_STREAM_DIRECTORY_WORDS[name]}"
    return (
        f"Set by the portal for a continuous job: {where}, a durable location kept across "
        "restarts. The notebook's own default is for development."
    )


class JobForm(forms.ModelForm):
    """Create or edit a job: a ModelForm of ``Job.SETTINGS_FIELDS``, whose validators
    (cron, time zone, addresses, retries) sit on the model fields.

    Beyond the model's fields: the notebook (required on create; on edit a new file makes a
    new version), the schedule presets (``at_time``, ``minute``, ``weekday``, ``day``) that
    ``clean`` turns into ``cron``, the timeout in minutes, and the typed parameters form of
    the notebook (``params_form``: for an unbound form of an existing job, its values;
    bound, the posted ones, built by ``clean``). ``save(commit=False)`` returns the job
    with every setting applied, for ``services.create_job`` or ``services.update_job``.

    For a continuous job (as posted when bound, else as stored) the parameters
    ``notebooks.STREAM_PARAMETERS`` are read-only and not kept in ``Job.parameters``: the
    portal injects the job's own directories into its runs (``Run.injected_parameters``).
    """

    notebook = NotebookField(
        required=False,
        help_text=(
            "A Jupyter notebook (.ipynb). Its 'parameters'-tagged cell becomes the form below."
        ),
    )
    at_time = forms.TimeField(
        initial="06:00",
        required=False,
        label="At",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    minute = forms.IntegerField(
        min_value=0, max_value=59, initial=0, required=False, label="Minute past the hour"
    )
    weekday = forms.TypedChoiceField(
        choices=list(enumerate(schedule.WEEKDAYS)),
        coerce=int,
        initial=0,
        required=False,
        label="On",
    )
    day = forms.IntegerField(
        min_value=1, max_value=31, initial=1, required=False, label="Day of the month"
    )
    timeout_minutes = forms.IntegerField(min_value=1, initial=60, label="Timeout (minutes)")

    class Meta:
        model = Job
        fields = [f for f in Job.SETTINGS_FIELDS if f not in ("parameters", "timeout_seconds")]
        labels = {
            "schedule_kind": "Schedule",
            "max_retries": "Retries after infrastructure failures",
            "catchup": "Missed slots",
            "overlap": "Overlapping runs",
            "notify_on_failure": "E-mail on failure",
            "notify_on_success": "E-mail on success",
            "enabled": "Enabled (uncheck to pause)",
            "spark_target": "Spark",
            "cluster_size": "Workers of the fresh cluster",
            "expected_duration_seconds": "Expected duration (seconds)",
            "continuous": "Continuous: keep one run going (no schedule)",
            "stream_max_failures": "Pause after this many failures",
            "stream_failure_window_minutes": "…within (minutes)",
        }
        help_texts = {
            "cron": "5 fields: minute hour day month weekday, e.g. */15 8-18 * * 1-5",
            "timezone": "IANA time zone, e.g. Europe/Berlin",
            "notify_on_failure": "Comma-separated addresses",
            "notify_on_success": "Comma-separated addresses",
            "cluster": "For “one of my running clusters”.",
            "expected_duration_seconds": "A run going past it notifies the targets that chose "
            "“ran longer than expected”, once per run. Empty: never.",
            "continuous": "For streaming queries: the notebook blocks until stopped "
            "(telemetry.streaming.run_until_stopped). A failed or lost run is restarted from "
            "its checkpoint (the parameter checkpoint_dir), with backoff. Choose “Manual "
            "only” as the schedule.",
            "stream_max_failures": "Then the job is paused; you are e-mailed, and its chat "
            "and webhook targets told, once.",
        }
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "notify_on_failure": forms.TextInput,
            "notify_on_success": forms.TextInput,
        }

    def __init__(
        self,
        data=None,
        files=None,
        *,
        instance: Job | None = None,
        user=None,
        initial: dict[str, Any] | None = None,
    ):
        creating = instance is None
        job = (
            Job(owner=user, schedule_kind=Job.ScheduleKind.DAILY) if instance is None else instance
        )
        initial = {**self._preset_initial(job), **(initial or {})}
        super().__init__(data, files, instance=job, initial=initial)
        self.creating = creating
        self.fields["notebook"].required = creating
        limit = settings.JOB_MAX_TIMEOUT_SECONDS // 60
        self.fields["timeout_minutes"].validators.append(MaxValueValidator(limit))
        self.fields["timeout_minutes"].widget.attrs["max"] = limit
        retries = cast(forms.IntegerField, self.fields["max_retries"])
        retries.min_value = 0
        retries.widget.attrs.update(min=0, max=MAX_RETRIES)
        self.fields["spark_target"].required = False
        # Offer only the per-run clusters this portal can start (Job.check_spark_target).
        target = cast(forms.ChoiceField, self.fields["spark_target"])
        target.choices = [
            (value, label)
            for value, label in Job.SparkTarget.choices
            if Job.RUN_CLUSTER_BACKENDS.get(value) in (None, *settings.CLUSTER_BACKENDS)
        ]
        cast(forms.ModelChoiceField, self.fields["cluster"]).queryset = (
            Cluster.objects.filter(owner_id=job.owner_id).live()
            if job.owner_id
            else Cluster.objects.none()
        )
        size = cast(forms.IntegerField, self.fields["cluster_size"])
        size.required = False
        size.min_value = 1
        size.widget.attrs.update(min=1, max=settings.CLUSTER_MAX_SIZE)
        size.validators.append(MaxValueValidator(settings.CLUSTER_MAX_SIZE))
        for name in ("stream_max_failures", "stream_failure_window_minutes"):
            self.fields[name].required = False  # the model's default when left empty
        latest = None if creating else job.latest_version()
        self.schema: dict[str, dict] = latest.parameter_schema if latest else {}
        #: Whether the notebook takes free parameters (it has no parameters cell).
        self.free = bool(latest and not latest.has_parameters_cell)
        self.params_form: ParametersForm | None = None
        if latest is not None and not self.is_bound:
            self.params_form = ParametersForm(
                self.schema,
                values=job.parameters,
                free=self.free,
                continuous=job.continuous,
                job=job,
            )

    @staticmethod
    def _preset_initial(job: Job) -> dict:
        """Initial values of the fields that are not the model's: the schedule shown as
        its preset, and the timeout in minutes."""
        preset: dict[str, Any] = (
            schedule.cron_to_preset(job.cron)
            if job.cron
            else {"kind": job.schedule_kind, "minute": 0, "hour": 6, "weekday": 0, "day": 1}
        )
        kind = (
            job.schedule_kind
            if job.schedule_kind in (Job.ScheduleKind.CRON, Job.ScheduleKind.MANUAL)
            else preset["kind"]
        )
        return {
            "schedule_kind": kind,
            "at_time": dt.time(preset["hour"], preset["minute"]),
            "minute": preset["minute"],
            "weekday": preset["weekday"],
            "day": preset["day"],
            "timeout_minutes": max(1, job.timeout_seconds // 60),
        }

    def clean_notebook(self):
        upload = self.cleaned_data.get("notebook")
        if upload is not None:
            self.schema = upload.parsed.parameter_schema
            self.free = not upload.parsed.has_parameters_cell
        return upload

    def clean_timezone(self):
        return self.cleaned_data["timezone"].strip()

    def _clean_addresses(self, field: str) -> str:
        return ", ".join(split_addresses(self.cleaned_data.get(field, "")))

    def clean_notify_on_failure(self):
        return self._clean_addresses("notify_on_failure")

    def clean_notify_on_success(self):
        return self._clean_addresses("notify_on_success")

    def clean_spark_target(self):
        return self.cleaned_data.get("spark_target") or Job.SparkTarget.LOCAL

    def clean_cluster_size(self):
        return self.cleaned_data.get("cluster_size") or 1

    def clean_stream_max_failures(self):
        return self.cleaned_data.get("stream_max_failures") or self.instance.stream_max_failures

    def clean_stream_failure_window_minutes(self):
        value = self.cleaned_data.get("stream_failure_window_minutes")
        return value or self.instance.stream_failure_window_minutes

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        kind = cleaned.get("schedule_kind")
        try:
            if kind == Job.ScheduleKind.CRON:
                cleaned["cron"] = schedule.validate_cron(cleaned.get("cron") or "")
            elif kind == Job.ScheduleKind.MANUAL:
                cleaned["cron"] = ""
            elif kind:
                at = cleaned.get("at_time") or dt.time(0, 0)
                minute = cleaned.get("minute") if kind == Job.ScheduleKind.HOURLY else at.minute
                cleaned["cron"] = schedule.preset_to_cron(
                    kind,
                    minute=minute or 0,
                    hour=at.hour,
                    weekday=cleaned.get("weekday") or 0,
                    day=cleaned.get("day") or 1,
                )
        except schedule.ScheduleError as exc:
            self.add_error("cron" if kind == Job.ScheduleKind.CRON else "schedule_kind", str(exc))
        if not {"notify_on_failure", "notify_on_success"} & set(self.errors):
            try:
                validate_recipient_count(
                    cleaned.get("notify_on_failure", ""), cleaned.get("notify_on_success", "")
                )
            except forms.ValidationError as exc:
                self.add_error(None, exc)
        if cleaned.get("spark_target") == Job.SparkTarget.CLUSTER:
            if not cleaned.get("cluster"):
                self.add_error("cluster", "Choose one of your running clusters.")
        else:
            cleaned["cluster"] = None
        values = self.instance.parameters if not self.creating else {}
        params = self.params_form = ParametersForm(
            self.schema,
            self.data,
            values=values,
            free=self.free,
            continuous=bool(cleaned.get("continuous")),
            job=None if self.creating else self.instance,
        )
        if (self.schema or self.free) and not params.is_valid():
            for name, errors in params.errors.items():
                for error in errors:
                    self.add_error(
                        None, f"Parameter {name}: {error}" if name != "__all__" else error
                    )
        elif not self.schema:
            params.is_valid()
            if params.non_field_errors():
                self.add_error(None, params.non_field_errors()[0])
        return cleaned

    def save(self, commit: bool = False) -> Job:
        """The job with every setting of the form applied (parameters and timeout too).
        Never saves: the services validate against the notebook and write."""
        if commit:
            raise ValueError("Save a job through jobs.services, not the form.")
        job = super().save(commit=False)
        job.timeout_seconds = self.cleaned_data["timeout_minutes"] * 60
        params = self.params_form
        takes = self.schema or self.free
        job.parameters = params.json_values() if takes and params is not None else {}
        return job


class UploadVersionForm(forms.Form):
    notebook = NotebookField(help_text="A new version of the notebook (.ipynb).")


class InspectForm(forms.Form):
    """The notebook file the job form sends to read its parameters (htmx)."""

    notebook = NotebookField()
