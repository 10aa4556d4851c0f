"""The form of the API tokens page."""

from django import forms

from api.models import SCOPES

#: Longest expiry a token may be given, in days; longer-lived access: make a new token.
MAX_EXPIRY_DAYS = 366


class TokenForm(forms.Form):
    """A new personal API token: a name, at least one scope, an optional expiry in days."""

    name = forms.CharField(max_length=100, help_text="What it is for, e.g. “CI pipeline”.")
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {text}") for scope, text in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
        initial=["read"],
        error_messages={"required": "Choose at least one scope."},
        help_text="Give it only what it needs.",
    )
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        label="Expires in (days)",
        help_text=f"1 to {MAX_EXPIRY_DAYS} days; empty: it never expires (revoke it when done).",
    )
