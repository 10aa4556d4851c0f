"""The form of a notification target (a job's chat or webhook destination)."""

from django import forms

from notify.models import DEFAULT_EVENTS, Event, NotificationTarget


class TargetForm(forms.ModelForm):
    """Add or change a target. The URL and events are checked again by
    ``services.save_target`` (address rules, Apprise schemes, the per-job limit), which the
    view calls; the kind is chosen once, when the target is made."""

    events = forms.MultipleChoiceField(
        choices=Event.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=DEFAULT_EVENTS,
        help_text="“Recovered” is the first success after failures; a target that chose "
        "both it and “succeeded” hears “recovered” only, once. A continuous job's runs "
        "send no run events: it tells once, when too many failures pause it.",
    )

    class Meta:
        model = NotificationTarget
        fields = ["kind", "name", "url", "events", "enabled"]
        labels = {"url": "URL", "enabled": "Enabled"}
        help_texts = {
            "url": "Chat: an Apprise URL such as slack://TokenA/TokenB/TokenC, "
            "discord://WebhookID/Token, mmosts://host/token or workflows://host/id/signature. "
            "Webhook: the https:// URL that receives the signed JSON.",
        }
        widgets = {"url": forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["kind"].disabled = True
