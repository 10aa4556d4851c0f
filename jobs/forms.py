"""Forms of scheduled notebooks: the job form and the typed parameters form."""

import datetime as dt
import json

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator, validate_email

from jobs import notebooks, schedule
from jobs.models import Job
from jobs.services import JobSettings

PARAM_PREFIX = "param"


class ParametersForm(forms.Form):
    """One typed field per notebook parameter (from ``NotebookVersion.parameter_schema``).

    Field names are ``param-<name>``. ``json_values()`` returns the cleaned values in their
    JSON form (dates as YYYY-MM-DD, lists as lists).
    """

    def __init__(self, schema: dict, *args, values: dict | None = None, **kwargs):
        kwargs.setdefault("prefix", PARAM_PREFIX)
        super().__init__(*args, **kwargs)
        self.schema = schema
        values = values or {}
        for name, spec in schema.items():
            initial = values.get(name, spec.get("default"))
            help_text = spec.get("help") or f"{spec['type']}, default {spec.get('default')!r}"
            self.fields[name] = self._field(spec["type"], initial, help_text)
            self.fields[name].label = name

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

    def clean(self):
        cleaned = super().clean()
        for name, spec in self.schema.items():
            if spec["type"] == "list" and name in cleaned:
                try:
                    value = json.loads(cleaned[name])
                except json.JSONDecodeError:
                    self.add_error(name, 'Enter a JSON list, e.g. [1, 2] or ["a", "b"].')
                    continue
                if not isinstance(value, list):
                    self.add_error(name, "Enter a JSON list.")
                else:
                    cleaned[name] = value
        unknown = sorted(
            key[len(PARAM_PREFIX) + 1 :]
            for key in self.data
            if key.startswith(PARAM_PREFIX + "-")
            and key[len(PARAM_PREFIX) + 1 :] not in self.schema
        )
        if unknown:
            raise forms.ValidationError(
                f"The notebook has no parameter named {', '.join(unknown)}."
            )
        return cleaned

    def json_values(self) -> dict:
        out = {}
        for name in self.schema:
            value = self.cleaned_data.get(name)
            out[name] = value.isoformat() if isinstance(value, dt.date) else value
        return out


class JobForm(forms.Form):
    """Create or edit a job. On create a notebook file is required; on edit it is optional
    (a new file makes a new version)."""

    name = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    notebook = forms.FileField(
        required=False,
        help_text=(
            "A Jupyter notebook (.ipynb). Its 'parameters'-tagged cell becomes the form below."
        ),
    )
    schedule_kind = forms.ChoiceField(
        choices=Job.ScheduleKind.choices, initial=Job.ScheduleKind.DAILY, label="Schedule"
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
    cron = forms.CharField(
        required=False,
        max_length=120,
        help_text="5 fields: minute hour day month weekday, e.g. */15 8-18 * * 1-5",
    )
    timezone = forms.CharField(
        initial="UTC", max_length=64, help_text="IANA time zone, e.g. Europe/Berlin"
    )
    timeout_minutes = forms.IntegerField(min_value=1, initial=60, label="Timeout (minutes)")
    max_retries = forms.IntegerField(
        min_value=0, max_value=5, initial=1, label="Retries after infrastructure failures"
    )
    catchup = forms.ChoiceField(
        choices=Job.CatchUp.choices, initial=Job.CatchUp.LATEST, label="Missed slots"
    )
    overlap = forms.ChoiceField(
        choices=Job.Overlap.choices, initial=Job.Overlap.SKIP, label="Overlapping runs"
    )
    visibility = forms.ChoiceField(choices=Job.Visibility.choices, initial=Job.Visibility.PRIVATE)
    notify_on_failure = forms.CharField(
        required=False, label="E-mail on failure", help_text="Comma-separated addresses"
    )
    notify_on_success = forms.CharField(
        required=False, label="E-mail on success", help_text="Comma-separated addresses"
    )
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled (uncheck to pause)")
    spark_target = forms.ChoiceField(
        choices=Job.SparkTarget.choices,
        initial=Job.SparkTarget.LOCAL,
        required=False,
        label="Spark",
    )
    cluster = forms.ModelChoiceField(
        queryset=None,
        required=False,
        label="Cluster",
        help_text="For “one of my running clusters”.",
    )
    cluster_size = forms.IntegerField(
        min_value=1, initial=1, required=False, label="Workers of the fresh cluster"
    )

    def __init__(self, *args, job: Job | None = None, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.job = job
        limit = settings.JOB_MAX_TIMEOUT_SECONDS // 60
        self.fields["timeout_minutes"].validators.append(MaxValueValidator(limit))
        self.fields["timeout_minutes"].widget.attrs["max"] = limit
        self.parsed = None
        self.schema = job.latest_version().parameter_schema if job and job.latest_version() else {}
        self.params_form = None
        from clusters.models import Cluster

        owner = job.owner if job else user
        self.fields["cluster"].queryset = (
            Cluster.objects.filter(owner=owner).live() if owner else Cluster.objects.none()
        )
        self.fields["cluster_size"].max_value = settings.CLUSTER_MAX_SIZE
        self.fields["cluster_size"].validators.append(MaxValueValidator(settings.CLUSTER_MAX_SIZE))

    @classmethod
    def initial_for(cls, job: Job) -> dict:
        preset = (
            schedule.cron_to_preset(job.cron)
            if job.cron
            else {"kind": "manual", "minute": 0, "hour": 6, "weekday": 0, "day": 1}
        )
        kind = (
            job.schedule_kind
            if job.schedule_kind in (Job.ScheduleKind.CRON, Job.ScheduleKind.MANUAL)
            else preset["kind"]
        )
        return {
            "name": job.name,
            "description": job.description,
            "schedule_kind": kind,
            "at_time": dt.time(preset["hour"], preset["minute"]),
            "minute": preset["minute"],
            "weekday": preset["weekday"],
            "day": preset["day"],
            "cron": job.cron,
            "timezone": job.timezone,
            "timeout_minutes": max(1, job.timeout_seconds // 60),
            "max_retries": job.max_retries,
            "catchup": job.catchup,
            "overlap": job.overlap,
            "visibility": job.visibility,
            "notify_on_failure": job.notify_on_failure,
            "notify_on_success": job.notify_on_success,
            "enabled": job.enabled,
            "spark_target": job.spark_target,
            "cluster": job.cluster_id,
            "cluster_size": job.cluster_size,
        }

    def clean_notebook(self):
        upload = self.cleaned_data.get("notebook")
        if upload is None:
            if self.job is None:
                raise forms.ValidationError("Choose a notebook file (.ipynb).")
            return None
        if upload.size > settings.NOTEBOOK_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size / 1048576:.1f} MB; "
                f"notebooks may be at most {settings.NOTEBOOK_MAX_BYTES / 1048576:.1f} MB."
            )
        try:
            self.parsed = notebooks.read_notebook(upload.read())
            self.schema = notebooks.inspect_parameters(self.parsed.nb)
        except notebooks.NotebookError as exc:
            raise forms.ValidationError(str(exc)) from None
        upload.seek(0)
        return upload

    def clean_timezone(self):
        name = self.cleaned_data["timezone"].strip()
        try:
            schedule.validate_timezone(name)
        except schedule.ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def _clean_emails(self, field):
        items = [
            e.strip()
            for e in self.cleaned_data.get(field, "").replace(";", ",").split(",")
            if e.strip()
        ]
        for item in items:
            try:
                validate_email(item)
            except forms.ValidationError:
                raise forms.ValidationError(f"{item!r} is not an e-mail address.") from None
        return ", ".join(items)

    def clean_notify_on_failure(self):
        return self._clean_emails("notify_on_failure")

    def clean_notify_on_success(self):
        return self._clean_emails("notify_on_success")

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("schedule_kind")
        try:
            if kind == Job.ScheduleKind.CRON:
                cleaned["cron_expr"] = schedule.validate_cron(cleaned.get("cron") or "")
            elif kind == Job.ScheduleKind.MANUAL:
                cleaned["cron_expr"] = ""
            elif kind:
                at = cleaned.get("at_time") or dt.time(0, 0)
                minute = cleaned.get("minute") if kind == Job.ScheduleKind.HOURLY else at.minute
                cleaned["cron_expr"] = schedule.preset_to_cron(
                    kind,
                    minute=minute or 0,
                    hour=at.hour,
                    weekday=cleaned.get("weekday") or 0,
                    day=cleaned.get("day") or 1,
                )
        except schedule.ScheduleError as exc:
            self.add_error("cron" if kind == Job.ScheduleKind.CRON else "schedule_kind", str(exc))
        if cleaned.get("spark_target") == Job.SparkTarget.CLUSTER and not cleaned.get("cluster"):
            self.add_error("cluster", "Choose one of your running clusters.")
        values = self.job.parameters if self.job else {}
        self.params_form = ParametersForm(self.schema, self.data, values=values)
        if self.schema and not self.params_form.is_valid():
            for name, errors in self.params_form.errors.items():
                for error in errors:
                    self.add_error(
                        None, f"Parameter {name}: {error}" if name != "__all__" else error
                    )
        elif not self.schema:
            self.params_form.is_valid()
            if self.params_form.non_field_errors():
                self.add_error(None, self.params_form.non_field_errors()[0])
        return cleaned

    def job_settings(self) -> JobSettings:
        """The validated settings for ``jobs.services``."""
        c = self.cleaned_data
        parameters = self.params_form.json_values() if self.schema else {}
        return JobSettings(
            name=c["name"],
            description=c["description"],
            schedule_kind=c["schedule_kind"],
            cron=c["cron_expr"],
            timezone=c["timezone"],
            parameters=parameters,
            timeout_seconds=c["timeout_minutes"] * 60,
            max_retries=c["max_retries"],
            catchup=c["catchup"],
            overlap=c["overlap"],
            visibility=c["visibility"],
            notify_on_failure=c["notify_on_failure"],
            notify_on_success=c["notify_on_success"],
            enabled=c["enabled"],
            spark_target=c.get("spark_target") or Job.SparkTarget.LOCAL,
            cluster=c.get("cluster") if c.get("spark_target") == Job.SparkTarget.CLUSTER else None,
            cluster_size=c.get("cluster_size") or 1,
        )


class UploadVersionForm(forms.Form):
    notebook = forms.FileField(help_text="A new version of the notebook (.ipynb).")

    def clean_notebook(self):
        upload = self.cleaned_data["notebook"]
        if upload.size > settings.NOTEBOOK_MAX_BYTES:
            raise forms.ValidationError(
                f"Notebooks may be at most {settings.NOTEBOOK_MAX_BYTES / 1048576:.1f} MB."
            )
        data = upload.read()
        try:
            notebooks.read_notebook(data)
        except notebooks.NotebookError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.data_bytes = data
        return upload
