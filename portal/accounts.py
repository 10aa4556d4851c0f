"""Sign-in policy: whether sign-up is open and which e-mail domains may join.

Applies to password sign-up and to OpenID Connect sign-in alike (settings SIGNUP_OPEN and
SIGNUP_ALLOWED_DOMAINS). An OpenID Connect sign-in also needs the provider to vouch for
the address (the ``email_verified`` claim) and, for Google with a domain list, the
account's Workspace domain (the ``hd`` claim) to be one of the allowed domains: an
address alone is only what the user typed at the provider.
"""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django import forms
from django.conf import settings
from django.shortcuts import render


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


def oidc_claims(sociallogin) -> dict:
    """The claims about the user: the ID token's, overridden by the userinfo endpoint's."""
    data = sociallogin.account.extra_data or {}
    if "userinfo" not in data and "id_token" not in data:
        return dict(data)  # stored by allauth before 65.11: the claims themselves
    return {**(data.get("id_token") or {}), **(data.get("userinfo") or {})}


def oidc_refusal(sociallogin) -> str:
    """Why this OpenID Connect sign-in is refused, or "" when it may go on."""
    claims = oidc_claims(sociallogin)
    email = claims.get("email") or sociallogin.user.email or ""
    if not email:
        return "Your identity provider did not give an e-mail address."
    if claims.get("email_verified") not in (True, "true"):
        return f"Your identity provider has not verified the address {email}."
    allowed = settings.SIGNUP_ALLOWED_DOMAINS
    if allowed and not email_domain_allowed(email):
        return f"Sign-in is limited to addresses in: {', '.join(allowed)}."
    issuer = str(claims.get("iss") or "")
    if (
        allowed
        and "accounts.google.com" in issuer
        and str(claims.get("hd") or "").lower() not in allowed
    ):
        return f"Sign-in is limited to the Google Workspace domains {', '.join(allowed)}."
    return ""


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """OpenID Connect accounts: a verified address is required; new accounts only while
    sign-up is open, in the allowed domains."""

    def is_open_for_signup(self, request, sociallogin):
        return settings.SIGNUP_OPEN and email_domain_allowed(sociallogin.user.email or "")

    def pre_social_login(self, request, sociallogin):
        refusal = oidc_refusal(sociallogin)
        if refusal:
            raise ImmediateHttpResponse(
                render(request, "account/sign_in_refused.html", {"reason": refusal}, status=403)
            )
