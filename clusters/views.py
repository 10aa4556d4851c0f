"""Views of clusters and SSH keys: parse a form, call a service, redirect.

Objects are fetched only through the scoped helpers below: others' clusters and keys are
404. No backend call happens here; services enqueue tasks.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clusters import gateway, keys, services
from clusters.forms import ClusterForm, ExtendForm, SSHKeyForm
from clusters.models import Cluster, SSHKey
from portal.htmx import refresh_page
from quotas.limits import LimitExceeded


class AuthenticatedRequest(HttpRequest):
    """A request of a signed-in user: LoginRequiredMiddleware admits no other here."""

    user: User


def cluster_for_user(user: User, pk: int) -> Cluster:
    """The cluster ``pk`` if ``user`` owns it (or is staff), else Http404."""
    return get_object_or_404(
        Cluster.objects.visible_to(user).select_related("owner", "ssh_key"), pk=pk
    )


def key_for_user(user: User, pk: int) -> SSHKey:
    """The SSH key ``pk`` if ``user`` owns it, else Http404 (staff use the admin)."""
    return get_object_or_404(SSHKey, pk=pk, owner=user)


@require_GET
def cluster_list(request: AuthenticatedRequest) -> HttpResponse:
    mine = Cluster.objects.filter(owner=request.user).select_related("ssh_key")
    return render(
        request,
        "clusters/cluster_list.html",
        {
            "live": mine.live(),
            "past": mine.exclude(state__in=Cluster.LIVE_STATES)[:50],
            "price": settings.CLUSTER_PRICE_PER_NODE_HOUR,
        },
    )


@require_http_methods(["GET", "POST"])
def cluster_create(request: AuthenticatedRequest) -> HttpResponse:
    has_key = SSHKey.objects.filter(owner=request.user).exists()
    if request.method == "POST":
        form = ClusterForm(request.POST, user=request.user)
        if form.is_valid():
            c = form.cleaned_data
            spec = services.ClusterSpec(
                name=c["name"],
                backend=c["backend"],
                size=c["size"],
                lifetime_hours=c["lifetime_hours"],
                release=c["emr_release"].label
                if c.get("emr_release") and c["backend"] == Cluster.Backend.EMR
                else "",
                ssh_key=c.get("ssh_key"),
            )
            try:
                cluster = services.launch_cluster(request.user, spec)
            except services.ClusterError as exc:
                form.add_error(None, str(exc))
            except LimitExceeded as exc:  # the monthly budget
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Cluster “{cluster.name}” is starting.")
                return redirect(cluster)
    else:
        if request.GET.get("backend") == Cluster.Backend.EMR and not has_key:
            messages.info(request, "EMR clusters need an SSH key: add one first.")
            return redirect(f"{_url('keys-new')}?next={_url('clusters-new')}")
        last_key = SSHKey.objects.filter(owner=request.user).order_by("-created_at").first()
        form = ClusterForm(
            user=request.user,
            initial={
                "name": services.suggest_name(request.user),
                "ssh_key": last_key,
                "backend": settings.CLUSTER_BACKENDS[0],
            },
        )
    return render(
        request,
        "clusters/cluster_form.html",
        {"form": form, "has_key": has_key, "backends": settings.CLUSTER_BACKENDS},
    )


def _url(name: str, *args) -> str:
    return reverse(name, args=args)


@require_GET
def cluster_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    cluster = cluster_for_user(request.user, pk)
    return render(
        request,
        "clusters/cluster_detail.html",
        {
            "cluster": cluster,
            "extend_form": ExtendForm(),
            "max_extension": settings.CLUSTER_MAX_EXTENSION_HOURS,
            "runs": cluster.runs.select_related("job").order_by("-created_at")[:20],
            "gateway": gateway_context(request.user, cluster),
        },
    )


def gateway_context(user: User, cluster: Cluster) -> dict | None:
    """What the page shows of the Spark Connect gateway: to the cluster's owner only (not
    even staff: the string runs code as the owner), once the gateway routes to it.
    ``{"url", "fingerprint"}``; the fingerprint is "" with a configured certificate."""
    if user.pk != cluster.owner_id or not gateway.is_published(cluster):
        return None
    return {
        "url": gateway.connection_string(cluster),
        "fingerprint": gateway.certificate_fingerprint() if gateway.self_signed() else "",
    }


@require_GET
def cluster_status(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """htmx: the live status block; asks for a reload when the state changes."""
    cluster = cluster_for_user(request.user, pk)
    if request.GET.get("state") and request.GET["state"] != cluster.state:
        return refresh_page()
    return render(request, "clusters/_status.html", {"cluster": cluster})


@require_POST
def cluster_extend(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    cluster = cluster_for_user(request.user, pk)
    form = ExtendForm(request.POST)
    if form.is_valid():
        try:
            cluster = services.extend_cluster(cluster, form.cleaned_data["hours"], request.user)
            messages.success(
                request, f"Extended: it now expires at {cluster.expires_at:%Y-%m-%d %H:%M} UTC."
            )
        except services.ClusterError as exc:
            messages.error(request, str(exc))
        except LimitExceeded as exc:  # the monthly budget
            messages.error(request, exc.message)
    else:
        messages.error(
            request, f"Enter a whole number of hours, 1 to {settings.CLUSTER_MAX_EXTENSION_HOURS}."
        )
    return redirect(cluster)


@require_http_methods(["GET", "POST"])
def cluster_terminate(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    cluster = cluster_for_user(request.user, pk)
    if request.method == "POST":
        services.request_termination(cluster)
        messages.success(request, f"Cluster “{cluster.name}” is terminating.")
        return redirect(cluster)
    return render(request, "clusters/cluster_terminate.html", {"cluster": cluster})


@require_POST
def cluster_rotate_token(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Rotate the cluster's gateway token: its owner only, everyone else (staff too) 404."""
    cluster = get_object_or_404(Cluster, pk=pk, owner=request.user)
    try:
        services.rotate_connect_token(cluster, request.user)
    except services.ClusterError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, "New token: the old connection string stops working within seconds."
        )
    return redirect(cluster.get_absolute_url() + "#connect")


@require_GET
def key_list(request: AuthenticatedRequest) -> HttpResponse:
    return render(
        request, "clusters/key_list.html", {"keys": SSHKey.objects.filter(owner=request.user)}
    )


@require_http_methods(["GET", "POST"])
def key_create(request: AuthenticatedRequest) -> HttpResponse:
    if request.method == "POST":
        form = SSHKeyForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                key = services.add_ssh_key(
                    request.user, form.cleaned_data["title"], form.cleaned_data["raw"]
                )
            except keys.SSHKeyError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Key “{key.title}” added ({key.fingerprint}).")
                next_url = request.POST.get("next") or ""
                return redirect(
                    next_url
                    if next_url.startswith("/") and not next_url.startswith("//")
                    else "keys-list"
                )
    else:
        form = SSHKeyForm()
    return render(
        request, "clusters/key_form.html", {"form": form, "next": request.GET.get("next", "")}
    )


@require_http_methods(["GET", "POST"])
def key_delete(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    key = key_for_user(request.user, pk)
    if request.method == "POST":
        key.delete()
        messages.success(request, f"Key “{key.title}” deleted.")
        return redirect("keys-list")
    return render(request, "clusters/key_delete.html", {"key": key})
