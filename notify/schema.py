"""The webhook payload in the OpenAPI schema (SPECTACULAR_SETTINGS["WEBHOOKS"]).

The serializers only describe what ``notify.payloads`` builds; tests check a real payload
against them (tests/notify/test_webhooks.py).
"""

from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema
from rest_framework import serializers

from jobs.models import Run
from notify.models import Event


class WebhookJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.URLField(help_text="The job's page.")


class WebhookRunErrorSerializer(serializers.Serializer):
    cell_index = serializers.IntegerField(
        allow_null=True, help_text="Index of the failing cell in the output notebook."
    )
    ename = serializers.CharField(allow_blank=True, help_text="Exception name.")
    evalue = serializers.CharField(
        allow_blank=True, help_text="Exception value (first 1000 characters)."
    )


class WebhookRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    uuid = serializers.UUIDField()
    state = serializers.ChoiceField(choices=Run.State.choices)
    reason = serializers.CharField(allow_blank=True, help_text="Why the run is in its state.")
    trigger = serializers.ChoiceField(choices=Run.Trigger.choices)
    attempt = serializers.IntegerField()
    scheduled_for = serializers.DateTimeField(allow_null=True, help_text="Schedule slot (UTC).")
    started_at = serializers.DateTimeField(allow_null=True, help_text="Start of the attempt.")
    finished_at = serializers.DateTimeField(allow_null=True, help_text="End (UTC).")
    duration_seconds = serializers.FloatField(allow_null=True, help_text="Seconds so far.")
    url = serializers.URLField(help_text="The run's page.")
    error = WebhookRunErrorSerializer(allow_null=True, help_text="Set for failed runs.")


class WebhookClusterSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    state = serializers.CharField()
    expires_at = serializers.DateTimeField(help_text="When it will be terminated (UTC).")
    url = serializers.URLField(help_text="The cluster's page.")


class WebhookEventSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="Payload format version: 1.")
    id = serializers.UUIDField(
        help_text="The delivery's id, also in X-Portal-Delivery; the same on every retry."
    )
    event = serializers.ChoiceField(choices=Event.choices)
    occurred_at = serializers.DateTimeField(help_text="When the event happened (UTC).")
    summary = serializers.CharField(help_text="One line for people.")
    job = WebhookJobSerializer(allow_null=True, help_text="Set for run events and job.paused.")
    run = WebhookRunSerializer(
        allow_null=True,
        help_text="Set for run events; for job.paused, the job's last failed run (or null).",
    )
    cluster = WebhookClusterSerializer(allow_null=True, help_text="Set for cluster events.")


portal_event = OpenApiWebhook(
    name="PortalEvent",
    decorator=extend_schema(
        summary="An event of a job or cluster, sent to a webhook target",
        description=(
            "The portal POSTs this JSON to each webhook target that chose the event. "
            "`X-Portal-Signature: sha256=<hex>` is the HMAC-SHA256 of the raw request body "
            "under the target's secret: compute it over the bytes received (before parsing) "
            "and compare in constant time. Any 2xx answer is a delivery; anything else, or no "
            "answer within the timeout, is retried with exponential backoff under the same "
            "`X-Portal-Delivery` id. Redirects are not followed.\n\n"
            "Headers: `X-Portal-Signature` (`sha256=<hex>`), `X-Portal-Event` (the payload's "
            "`event`), `X-Portal-Delivery` (the payload's `id`: drop a delivery you have "
            "already seen), `Content-Type: application/json`."
        ),
        request=WebhookEventSerializer,
        responses={
            200: OpenApiResponse(description="Received (any 2xx will do)."),
        },
    ),
)
