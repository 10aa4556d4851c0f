"""Sign-in policy: whether sign-up is open and which e-mail domains may join.

Applies to password sign-up and to OpenID Connect sign-in alike (settings SIGNUP_OPEN and
SIGNUP_ALLOWED_DOMAINS).
"""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django import forms
from django.conf import settings


def email_domain_allowed(email: str) -> bool:
    """Return True if ``email`` is in an allowed domain (or no allow-list is set)."""
    allowed = settings.SIGNUP_ALLOWED_DOMAINS
    if not allowed:
        return True
    domain = email.rsplit("@", 1)[-1].lower()
    return domain in allowed


class AccountAdapter(DefaultAccountAdapter):
    """Password accounts: sign-up can be closed, and is limited to allowed domains."""

    def is_open_for_signup(self, request):
        return settings.SIGNUP_OPEN

    def clean_email(self, email):
        email = super().clean_email(email)
        if not email_domain_allowed(email):
            domains = ", ".join(settings.SIGNUP_ALLOWED_DOMAINS)
            raise forms.ValidationError(f"Sign-up is limited to addresses in: {domains}.")
        return email


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """OpenID Connect accounts: open whenever the provider is configured, domain-limited."""

    def is_open_for_signup(self, request, sociallogin):
        email = sociallogin.user.email or ""
        return email_domain_allowed(email)
