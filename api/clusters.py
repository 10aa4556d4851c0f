"""Clusters and SSH keys in the API: the same rules as the pages.

Objects are fetched through the pages' scoped helpers (``clusters.views.cluster_for_user``
and ``key_for_user``: others' objects are 404; staff see every cluster, but only their own
keys). Every change goes through ``clusters.services``, and a launch is checked by the
launch form (``clusters.forms.ClusterForm``) first, so the API refuses what the pages
refuse, with the same messages:

- invalid input, and a ClusterError (a bound, a missing key, a name in use): 400 ``invalid``;
- a ClusterError that frees up as clusters end (a per-user or per-host cap) and the monthly
  budget (LimitExceeded): 403 ``limit_exceeded``;
- extending a cluster that is no longer live: 409 ``conflict``.
"""

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib.auth.models import User
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import ApiErrorSerializer, Conflict
from clusters import emr_logs, gateway, keys, services
from clusters.forms import ClusterForm
from clusters.models import Cluster, SSHKey
from clusters.views import cluster_for_user, key_for_user
from jobs.emr_runner import s3_client
from quotas.limits import LimitExceeded

#: Largest size, lifetime or extension the API takes, whoever asks: the columns are small
#: integers. Staff may pass the site's bounds (CLUSTER_MAX_*), not this one.
MAX_HOURS_OR_WORKERS = 32767
State = Cluster.State


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI responses of the error ``codes`` (HTTP statuses), all in the error shape."""
    described = {
        400: "Invalid input, or a launch or extension the site does not allow (code invalid).",
        401: "No token, or a bad, expired or revoked one.",
        403: "A missing scope, or a per-user limit or budget (code limit_exceeded).",
        404: "No such object among those the caller may see.",
        409: "The cluster is no longer live.",
    }
    return {code: OpenApiResponse(ApiErrorSerializer, described[code]) for code in codes}


# --- Serializers ------------------------------------------------------------------------


class ClusterAccessSerializer(serializers.Serializer):
    """How to reach a READY cluster (empty strings where the backend has no such address)."""

    master_url = serializers.CharField(help_text="spark:// URL of the master (local).")
    ui_url = serializers.CharField(help_text="Spark master web UI (local).")
    app_ui_url = serializers.CharField(help_text="Web UI of the Spark Connect application.")
    connect_url = serializers.CharField(help_text="sc:// URL of the Spark Connect server.")
    master_address = serializers.CharField(help_text="Public DNS name of the EMR master.")
    connect_token = serializers.CharField(
        allow_null=True,
        help_text="Token the Spark Connect server requires (append ;token=... to connect_url). "
        "Only the owner gets it, and only from a browser session or a token with the "
        "clusters scope (it runs code on the cluster); null otherwise.",
    )
    gateway_url = serializers.CharField(
        allow_null=True,
        help_text="Connection string of the cluster through the portal's Spark Connect "
        "gateway, with TLS and the cluster's gateway token, for a pyspark anywhere: "
        "sc://HOST:PORT/;use_ssl=true;token=... (local clusters). Given as connect_token "
        "is; null otherwise.",
    )
    gateway_ca_pem = serializers.CharField(
        allow_null=True,
        help_text="The gateway's self-signed certificate (PEM), for the client to trust "
        "(GRPC_DEFAULT_SSL_ROOTS_FILE_PATH); null when the site has a configured one.",
    )


class ClusterLogSerializer(serializers.Serializer):
    """One log object EMR wrote for a cluster (``clusters.emr_logs``)."""

    path = serializers.CharField(
        help_text="Relative to the cluster's log location: steps/<step id>/stderr.gz, "
        "containers/application_.../container_.../stderr.gz, node/<instance id>/..."
    )
    bytes = serializers.IntegerField(help_text="Size in S3 (compressed for .gz).")
    modified = serializers.DateTimeField(help_text="When EMR wrote it (UTC).")


class ClusterLogsSerializer(serializers.Serializer):
    """Where EMR writes a cluster's logs, and the log objects there."""

    location = serializers.CharField(help_text="s3://bucket/prefix/<job flow id>/")
    logs = ClusterLogSerializer(many=True)
    cut = serializers.BooleanField(
        help_text=f"True when there were more than {emr_logs.MAX_LISTED} (only those are listed)."
    )


class LogsUnavailable(APIException):
    """502 ``logs_unavailable``: S3 did not list an EMR cluster's logs."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "S3 did not list the logs."
    default_code = "logs_unavailable"


class ClusterSerializer(serializers.ModelSerializer):
    """A cluster: times in UTC, node-hours so far, and `access` once it is READY."""

    owner = serializers.IntegerField(source="owner_id", read_only=True, help_text="User id.")
    ssh_key = serializers.IntegerField(
        source="ssh_key_id", read_only=True, allow_null=True, help_text="SSH key id (EMR)."
    )
    node_hours = serializers.FloatField(read_only=True, help_text="Node-hours used so far.")
    estimated_cost = serializers.FloatField(read_only=True, help_text="node_hours × price.")
    access = serializers.SerializerMethodField()

    class Meta:
        model = Cluster
        fields = [
            "id",
            "owner",
            "name",
            "backend",
            "size",
            "lifetime_hours",
            "release",
            "ssh_key",
            "state",
            "state_reason",
            "created_at",
            "started_at",
            "ready_at",
            "expires_at",
            "terminated_at",
            "extension_count",
            "workers_registered",
            "cores",
            "memory_mb",
            "node_hours",
            "estimated_cost",
            "access",
        ]
        read_only_fields = fields

    @extend_schema_field(ClusterAccessSerializer(allow_null=True))
    def get_access(self, cluster: Cluster) -> dict[str, Any] | None:
        """The addresses of a READY cluster, else None (not up yet, or gone)."""
        if cluster.state != State.READY:
            return None
        may_connect = self._may_connect(cluster)
        return {
            "master_url": cluster.master_url,
            "ui_url": cluster.ui_url,
            "app_ui_url": cluster.app_ui_url,
            "connect_url": cluster.connect_url,
            "master_address": cluster.master_address,
            "connect_token": cluster.connect_token if may_connect else None,
            "gateway_url": gateway.connection_string(cluster)
            if may_connect and gateway.is_published(cluster)
            else None,
            "gateway_ca_pem": gateway.self_signed_pem() if gateway.is_published(cluster) else None,
        }

    def _may_connect(self, cluster: Cluster) -> bool:
        """The Spark Connect token runs code as the owner: never to anyone else (staff
        included), and not to a token that may only read."""
        request = self.context.get("request")
        if request is None or request.user.pk != cluster.owner_id:
            return False
        token = request.auth
        return not hasattr(token, "scopes") or "clusters" in token.scopes


class ClusterLaunchSerializer(serializers.Serializer):
    """What a launch asks for; omitted fields take the launch form's defaults. Checked by
    the launch form (ClusterForm), so the messages are the page's."""

    name = serializers.CharField(
        required=False,
        max_length=60,
        help_text="Letters, digits and dashes, unique among your live clusters; "
        "default: a free name such as “curie”.",
    )
    backend = serializers.ChoiceField(
        choices=Cluster.Backend.choices,
        required=False,
        help_text="One of the backends this site enables; default: the first of them.",
    )
    size = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_HOURS_OR_WORKERS,
        help_text="Workers (core nodes on EMR), 1 to the site's CLUSTER_MAX_SIZE; default 1.",
    )
    lifetime_hours = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_HOURS_OR_WORKERS,
        help_text="Hours until it is terminated, up to the site's CLUSTER_MAX_LIFETIME_HOURS; "
        "default CLUSTER_DEFAULT_LIFETIME_HOURS.",
    )
    release = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=40,
        help_text="EMR release label offered by the site (emr only), e.g. emr-7.5.0.",
    )
    ssh_key = serializers.IntegerField(
        required=False, allow_null=True, help_text="Id of one of your SSH keys (emr: required)."
    )

    #: Field of ClusterForm -> field of this serializer, where they differ.
    FORM_NAMES = {"emr_release": "release", "__all__": "non_field_errors"}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Run the launch form on ``attrs`` (with defaults); returns ``{"spec": ClusterSpec}``.
        Raises ValidationError with the form's messages, by this serializer's field names."""
        user = self.context["request"].user
        data = {
            "name": attrs.get("name") or services.suggest_name(user),
            "backend": attrs.get("backend") or settings.CLUSTER_BACKENDS[0],
            "size": attrs.get("size", 1),
            "lifetime_hours": attrs.get("lifetime_hours", settings.CLUSTER_DEFAULT_LIFETIME_HOURS),
            "emr_release": attrs.get("release") or "",
            "ssh_key": attrs.get("ssh_key") or "",
        }
        form = ClusterForm(data, user=user)
        if not form.is_valid():
            raise serializers.ValidationError(
                {
                    self.FORM_NAMES.get(name, name): list(errors)
                    for name, errors in form.errors.items()
                }
            )
        c = form.cleaned_data
        emr = c["backend"] == Cluster.Backend.EMR
        spec = services.ClusterSpec(
            name=c["name"],
            backend=c["backend"],
            size=c["size"],
            lifetime_hours=c["lifetime_hours"],
            release=c["emr_release"].label if emr and c.get("emr_release") else "",
            ssh_key=c.get("ssh_key"),
        )
        return {"spec": spec}


class ClusterExtendSerializer(serializers.Serializer):
    """How many hours to add to a cluster's expiry."""

    hours = serializers.IntegerField(
        min_value=1,
        max_value=MAX_HOURS_OR_WORKERS,
        help_text="Hours, 1 to the site's CLUSTER_MAX_EXTENSION_HOURS (staff may pass it).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The extend form's message for every way of getting the number wrong; made here,
        # not at import, because the bound is a setting. (Past the setting but within
        # MAX_HOURS_OR_WORKERS, the service answers, as it does on the page.)
        message = f"Enter a whole number of hours, 1 to {settings.CLUSTER_MAX_EXTENSION_HOURS}."
        codes = ("required", "null", "invalid", "min_value", "max_value", "max_string_length")
        self.fields["hours"] = serializers.IntegerField(
            min_value=1,
            max_value=MAX_HOURS_OR_WORKERS,
            help_text=self.fields["hours"].help_text,
            error_messages=dict.fromkeys(codes, message),
        )


class SSHKeySerializer(serializers.ModelSerializer):
    """An SSH public key of the caller's."""

    class Meta:
        model = SSHKey
        fields = ["id", "title", "key_type", "bits", "fingerprint", "comment", "key", "created_at"]
        read_only_fields = fields


class SSHKeyAddSerializer(serializers.Serializer):
    """A public key to add: one OpenSSH line, as in ~/.ssh/id_ed25519.pub."""

    title = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="A name to recognise it by; default: the key's comment.",
    )
    key = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text="The public key (never the private one: it is refused).",
    )


# --- Views --------------------------------------------------------------------------------


def _refused(exc: services.ClusterError) -> Exception:
    """The API error of a ClusterError: a cap that frees up as clusters end is a limit
    (403 limit_exceeded), anything else invalid input (400). The message is the service's."""
    if exc.retry:
        return LimitExceeded(str(exc))
    return serializers.ValidationError({"non_field_errors": [str(exc)]})


@extend_schema_view(
    list=extend_schema(
        summary="List clusters",
        description="Your clusters, newest first (staff: everyone's).",
        responses={200: ClusterSerializer(many=True), **error_responses(401, 403)},
    ),
    retrieve=extend_schema(
        summary="Get a cluster",
        description="One cluster; `access` holds its addresses once it is READY.",
        responses={200: ClusterSerializer, **error_responses(401, 403, 404)},
    ),
)
class ClusterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Ad-hoc Spark clusters: list, launch, get, extend, terminate (scope "clusters" to
    change anything)."""

    lookup_value_converter = "int"
    serializer_class = ClusterSerializer
    queryset = Cluster.objects.none()  # for the schema; get_queryset is the real one
    scopes = {"create": "clusters", "extend": "clusters", "terminate": "clusters", "*": "clusters"}

    def get_queryset(self):
        return (
            Cluster.objects.visible_to(self.request.user)
            .select_related("owner")
            .order_by("-created_at", "-id")
        )

    def get_object(self) -> Cluster:
        cluster = cluster_for_user(self.request.user, self.kwargs["pk"])
        self.check_object_permissions(self.request, cluster)
        return cluster

    @extend_schema(
        summary="Launch a cluster",
        description="Checked like the launch form; the cluster starts in the background "
        "(state PENDING, then STARTING, then READY).",
        request=ClusterLaunchSerializer,
        responses={201: ClusterSerializer, **error_responses(400, 401, 403)},
    )
    def create(self, request: Request) -> Response:
        launch = ClusterLaunchSerializer(data=request.data, context={"request": request})
        launch.is_valid(raise_exception=True)
        try:
            cluster = services.launch_cluster(request.user, launch.validated_data["spec"])
        except services.ClusterError as exc:
            raise _refused(exc) from None
        body = ClusterSerializer(cluster, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Extend a cluster",
        description="Push its expiry back; a new warning is e-mailed before the new expiry.",
        request=ClusterExtendSerializer,
        responses={200: ClusterSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def extend(self, request: Request, pk: int) -> Response:
        cluster = self.get_object()
        form = ClusterExtendSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user: User = request.user
        try:
            cluster = services.extend_cluster(cluster, form.validated_data["hours"], user)
        except services.ClusterError as exc:
            cluster.refresh_from_db()
            if cluster.state not in (State.PENDING, State.STARTING, State.READY):
                raise Conflict(str(exc)) from None
            raise _refused(exc) from None
        return Response(ClusterSerializer(cluster, context={"request": request}).data)

    @extend_schema(
        summary="Terminate a cluster",
        description="Marks it TERMINATING and stops it in the background. Terminating a "
        "cluster that already ended changes nothing.",
        request=None,
        responses={202: ClusterSerializer, **error_responses(401, 403, 404)},
    )
    @action(detail=True, methods=["post"])
    def terminate(self, request: Request, pk: int) -> Response:
        cluster = services.request_termination(self.get_object())
        body = ClusterSerializer(cluster, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="List an EMR cluster's logs",
        description="The log objects EMR copied to S3 for the cluster (at most 1000): "
        "steps, then YARN containers, nodes and others, each in key order. For the "
        "cluster's owner only: others, staff too, get 404, as for an EMR cluster that was "
        "never launched. EMR copies logs a few minutes after they are written.",
        responses={
            200: ClusterLogsSerializer,
            **error_responses(401, 403, 404),
            502: OpenApiResponse(ApiErrorSerializer, "S3 did not answer (logs_unavailable)."),
        },
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: int) -> Response:
        cluster = emr_logs.cluster_for_owner(request.user, pk)
        self.check_object_permissions(request, cluster)
        location = emr_logs.log_location(cluster.jobflow_id)
        try:
            listing = emr_logs.list_logs(s3_client(), location, emr_logs.MAX_LISTED)
        except (ClientError, BotoCoreError) as exc:
            raise LogsUnavailable(f"S3 did not list the logs: {exc}") from None
        found = [obj for objects in listing.groups.values() for obj in objects]
        body = {
            "location": location.uri,
            "logs": [{"path": o.path, "bytes": o.bytes, "modified": o.modified} for o in found],
            "cut": listing.cut,
        }
        return Response(ClusterLogsSerializer(body).data)


@extend_schema_view(
    list=extend_schema(
        summary="List SSH keys",
        description="Your SSH public keys (staff too: only their own).",
        responses={200: SSHKeySerializer(many=True), **error_responses(401, 403)},
    ),
    retrieve=extend_schema(
        summary="Get an SSH key",
        responses={200: SSHKeySerializer, **error_responses(401, 403, 404)},
    ),
    destroy=extend_schema(
        summary="Delete an SSH key",
        description="Clusters already running keep it installed.",
        responses={204: None, **error_responses(401, 403, 404)},
    ),
)
class SSHKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's SSH public keys, installed on their EMR clusters' masters: list, add,
    delete (scope "clusters" to add or delete)."""

    lookup_value_converter = "int"
    serializer_class = SSHKeySerializer
    queryset = SSHKey.objects.none()  # for the schema; get_queryset is the real one
    scopes = {"create": "clusters", "destroy": "clusters", "*": "clusters"}

    def get_queryset(self):
        return SSHKey.objects.filter(owner=self.request.user).order_by("title", "id")

    def get_object(self) -> SSHKey:
        key = key_for_user(self.request.user, self.kwargs["pk"])
        self.check_object_permissions(self.request, key)
        return key

    @extend_schema(
        summary="Add an SSH key",
        description="Parsed and checked as on the SSH keys page: one OpenSSH public key, "
        "ed25519, ECDSA or RSA of 2048 bits or more. A private key is refused (and never "
        "echoed back).",
        request=SSHKeyAddSerializer,
        responses={201: SSHKeySerializer, **error_responses(400, 401, 403)},
    )
    def create(self, request: Request) -> Response:
        given = SSHKeyAddSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            key = services.add_ssh_key(
                request.user, given.validated_data.get("title", ""), given.validated_data["key"]
            )
        except keys.SSHKeyError as exc:
            raise serializers.ValidationError({"key": [str(exc)]}) from None
        return Response(SSHKeySerializer(key).data, status=status.HTTP_201_CREATED)


ROUTES = [("clusters", ClusterViewSet, "api-clusters"), ("keys", SSHKeyViewSet, "api-keys")]
