"""Clusters and SSH keys in the API: the owner's own (staff: everyone's)."""

from rest_framework import serializers, viewsets

from clusters.models import Cluster, SSHKey


class ClusterSerializer(serializers.ModelSerializer):
    class Meta:
        model = Cluster
        fields = ["id", "name", "backend", "size", "state", "created_at", "expires_at"]
        read_only_fields = fields


class SSHKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SSHKey
        fields = ["id", "title", "fingerprint", "created_at"]
        read_only_fields = fields


class ClusterViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_value_converter = "int"
    serializer_class = ClusterSerializer

    def get_queryset(self):
        qs = Cluster.objects.all()
        user = self.request.user
        return (qs if user.is_staff else qs.filter(owner=user)).order_by("-id")


class SSHKeyViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_value_converter = "int"
    serializer_class = SSHKeySerializer

    def get_queryset(self):
        return SSHKey.objects.filter(owner=self.request.user).order_by("-id")


ROUTES = [("clusters", ClusterViewSet, "api-clusters"), ("keys", SSHKeyViewSet, "api-keys")]
