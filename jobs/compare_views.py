"""Pages comparing two runs (``jobs.compare``).

Both runs are fetched through ``run_for_viewer``: a run the user may not see is a 404,
never a 403. Parameters are shown on the portal page (escaped by the template); the cells,
untrusted notebook source and output, only in the sandboxed frame on the user-content
origin, like every run's output.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from jobs import compare
from jobs.views import job_for_viewer, run_for_viewer
from portal.usercontent import comparison_url


@require_GET
def run_compare(request, pk, other):
    """Run ``pk`` (A) beside run ``other`` (B)."""
    a = run_for_viewer(request.user, pk)
    b = run_for_viewer(request.user, other)
    comparison = compare.compare_runs(a, b)
    frame_url, unavailable = "", comparison.unavailable
    if comparison.cells is not None:
        try:
            key = compare.comparison_page_key(comparison)
        except compare.OutputUnavailable as exc:
            unavailable = str(exc)
        else:
            frame_url = comparison_url(key, a.pk, a.attempt, b.pk, b.attempt)
    cells = comparison.cells or []
    return render(
        request,
        "jobs/compare.html",
        {
            "a": a,
            "b": b,
            "comparison": comparison,
            "frame_url": frame_url,
            "unavailable": unavailable,
            "values_changed": sum(1 for row in comparison.values if row.changed),
            "counts": {
                status: sum(1 for row in cells if row.status == status)
                for status in (compare.CHANGED, compare.ADDED, compare.REMOVED, compare.UNCHANGED)
            },
        },
    )


@require_GET
def job_compare_pick(request, pk):
    """The job page's picker (a GET form): redirect to the comparison of the two chosen
    runs of the job, or back to the job saying what is wrong."""
    job = job_for_viewer(request.user, pk)
    try:
        ids = [int(request.GET.get(side, "")) for side in ("a", "b")]
    except ValueError:
        ids = []
    if len(ids) != 2 or job.runs.filter(pk__in=ids).count() != len(set(ids)):
        messages.error(request, "Choose two runs of this job to compare.")
        return redirect(job)
    if ids[0] == ids[1]:
        messages.error(request, "Choose two different runs to compare.")
        return redirect(job)
    return redirect("runs-compare", ids[0], ids[1])
