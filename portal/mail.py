"""E-mail to people, from templates: one helper for every message the portal sends."""

from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.template.loader import render_to_string

#: Celery options of every task that sends e-mail: retried with jittered exponential
#: backoff on mail-server errors (SMTPException is an OSError), at most 5 times, within
#: time limits short of the next beat tick. The tasks themselves send at most once.
MAIL_TASK_OPTIONS = {
    "ignore_result": True,
    "soft_time_limit": 50,
    "time_limit": 60,
    "autoretry_for": (OSError,),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 5,
}


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
