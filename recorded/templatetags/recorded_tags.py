"""``{% recorded_values run %}``: the run page's recorded values; ``{% recorded_chart job %}``:
the job page's chart of a numeric value across its runs. The views have already checked
that the user may see the run or job."""

from typing import Any

from django import template

from recorded.models import RecordedValue

register = template.Library()

#: Runs of a job whose numbers are charted: the latest by logical date.
CHART_RUNS = 200


@register.inclusion_tag("recorded/_run_values.html")
def recorded_values(run) -> dict[str, Any]:
    """The values of ``run`` in the order the notebook recorded them; ``full`` when the
    run holds as many as a run may keep (RECORDED_MAX_VALUES: later ones were dropped)."""
    from django.conf import settings

    values = list(run.recorded_values.all())
    return {
        "run": run,
        "values": values,
        "full": len(values) >= settings.RECORDED_MAX_VALUES,
    }


def chart_series(job) -> dict[str, list[dict[str, Any]]]:
    """``{name: [{"x": logical date (ISO 8601, UTC), "y": number, "run": id}, ...]}`` for
    every numeric value of ``job``'s latest CHART_RUNS runs that recorded numbers, each
    series in logical-date order; names sorted."""
    runs = list(
        RecordedValue.objects.numbers_of_job(job)
        .values_list("run_id", "run__scheduled_for", "run__created_at")
        .order_by()  # no default ordering columns in the DISTINCT: one row per run
        .distinct()
    )
    dated = sorted(((slot or created, run_id) for run_id, slot, created in runs), reverse=True)
    when = {run_id: at for at, run_id in dated[:CHART_RUNS]}
    series: dict[str, list[dict[str, Any]]] = {}
    points = RecordedValue.objects.numbers_of_job(job).filter(run_id__in=list(when))
    for name, number, run_id in points.values_list("name", "number", "run_id"):
        series.setdefault(name, []).append(
            {"x": when[run_id].isoformat(), "y": number, "run": run_id}
        )
    for items in series.values():
        items.sort(key=lambda p: (p["x"], p["run"]))
    return dict(sorted(series.items()))


@register.inclusion_tag("recorded/_job_chart.html")
def recorded_chart(job) -> dict[str, Any]:
    """The job page's chart of one numeric value across the job's runs (x = the run's
    logical date), with a choice of the job's numeric names; nothing when it has none."""
    series = chart_series(job)
    return {"series": series, "names": list(series)}
