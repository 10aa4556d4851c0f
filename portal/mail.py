"""E-mail to people, from templates: one helper for every message the portal sends."""

from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.template.loader import render_to_string


def send_templated(template_prefix: str, context: dict, to: Sequence[str]) -> None:
    """Render and send one plain-text message to the addresses ``to``, from
    DEFAULT_FROM_EMAIL.

    The subject is ``<template_prefix>_subject.txt`` (surrounding whitespace stripped; keep
    it one line) and the body ``<template_prefix>.txt``, both rendered with ``context``
    (HTML autoescaping applies unless a template turns it off, as plain-text bodies
    should). Raises what the mail backend raises: with SMTP, an OSError
    (``smtplib.SMTPException`` is one), for the caller's retry.
    """
    subject = render_to_string(f"{template_prefix}_subject.txt", context).strip()
    body = render_to_string(f"{template_prefix}.txt", context)
    EmailMessage(subject, body, to=list(to)).send()
