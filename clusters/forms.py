"""Forms of clusters and SSH keys."""

from typing import Any, cast

from django import forms
from django.conf import settings
from django.http import QueryDict

from clusters import keys
from clusters.models import Cluster, EMRRelease, SSHKey


class SSHKeyForm(forms.Form):
    title = forms.CharField(
        max_length=100, required=False, help_text="Defaults to the key's comment."
    )
    key = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        required=False,
        help_text="Paste the public key: the contents of ~/.ssh/id_ed25519.pub (or id_rsa.pub).",
    )
    key_file = forms.FileField(required=False, label="…or upload the .pub file")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        upload = cleaned.get("key_file")
        text = cleaned.get("key") or ""
        if upload is not None:
            if upload.size > keys.MAX_KEY_BYTES:
                raise forms.ValidationError(
                    "That file is over 100 kB: a public key is one short line."
                )
            text = upload.read().decode("utf-8", "replace")
        try:
            cleaned["parsed"] = keys.parse_public_key(text)
        except keys.SSHKeyError as exc:
            if keys.looks_private(text):
                # Never send a private key back to the browser in the re-rendered form.
                data = cast(QueryDict, self.data).copy()
                data["key"] = ""
                self.data = data
            raise forms.ValidationError(str(exc)) from None
        cleaned["raw"] = text
        return cleaned


class ClusterForm(forms.Form):
    name = forms.SlugField(max_length=60, help_text="Letters, digits and dashes.")
    backend = forms.ChoiceField(choices=Cluster.Backend.choices)
    size = forms.IntegerField(min_value=1, initial=1, label="Workers")
    lifetime_hours = forms.IntegerField(
        min_value=1, initial=settings.CLUSTER_DEFAULT_LIFETIME_HOURS, label="Lifetime (hours)"
    )
    emr_release = forms.ModelChoiceField(
        queryset=EMRRelease.objects.none(), required=False, label="EMR release"
    )
    ssh_key = forms.ModelChoiceField(
        queryset=SSHKey.objects.none(), required=False, label="SSH key"
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        cast(forms.ChoiceField, self.fields["backend"]).choices = [
            c for c in Cluster.Backend.choices if c[0] in settings.CLUSTER_BACKENDS
        ]
        if not user.is_staff:
            cast(forms.IntegerField, self.fields["size"]).max_value = settings.CLUSTER_MAX_SIZE
            self.fields["size"].widget.attrs["max"] = settings.CLUSTER_MAX_SIZE
            self.fields["lifetime_hours"].widget.attrs["max"] = settings.CLUSTER_MAX_LIFETIME_HOURS
        self.fields["size"].help_text = (
            f"1 to {settings.CLUSTER_MAX_SIZE} workers; "
            f"each has {settings.LOCAL_CLUSTER_WORKER_CORES} core(s) "
            f"and {settings.LOCAL_CLUSTER_WORKER_MEMORY} on local clusters."
        )
        self.fields[
            "lifetime_hours"
        ].help_text = f"1 to {settings.CLUSTER_MAX_LIFETIME_HOURS} hours; you can extend it later."
        cast(
            forms.ModelChoiceField, self.fields["emr_release"]
        ).queryset = EMRRelease.objects.offered()
        cast(forms.ModelChoiceField, self.fields["ssh_key"]).queryset = SSHKey.objects.filter(
            owner=user
        )

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("backend") == Cluster.Backend.EMR:
            if not cleaned.get("emr_release"):
                self.add_error("emr_release", "Choose an EMR release.")
            if not cleaned.get("ssh_key"):
                self.add_error("ssh_key", "EMR clusters need an SSH key.")
        return cleaned


class ExtendForm(forms.Form):
    hours = forms.IntegerField(min_value=1, initial=2)
