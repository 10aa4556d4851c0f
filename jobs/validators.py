"""Validators of job fields, on the model fields themselves, so that the portal's job
form, the admin and ``Model.full_clean`` all apply the same rules
(after healthchecks' ``hc/front/validators.py``)."""

from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models.functions import Lower
from django.utils.deconstruct import deconstructible

from jobs import schedule


@deconstructible
class CronValidator:
    """A 5-field cron expression that some date matches (``schedule.validate_cron``)."""

    def __call__(self, value: str) -> None:
        try:
            schedule.validate_cron(value)
        except schedule.ScheduleError as exc:
            raise ValidationError(str(exc), code="cron") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronValidator)


@deconstructible
class TimezoneValidator:
    """An IANA time zone name (``schedule.validate_timezone``)."""

    def __call__(self, value: str) -> None:
        try:
            schedule.validate_timezone(value)
        except schedule.ScheduleError as exc:
            raise ValidationError(str(exc), code="timezone") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimezoneValidator)


def split_addresses(raw: str) -> list[str]:
    """The addresses of a comma- (or semicolon-) separated list, stripped, in order,
    without duplicates or empty items."""
    seen: list[str] = []
    for item in (raw or "").replace(";", ",").split(","):
        item = item.strip()
        if item and item not in seen:
            seen.append(item)
    return seen


def address_domain(address: str) -> str:
    """The domain of an e-mail address, lower-cased ("" if it has none)."""
    return address.rpartition("@")[2].lower() if "@" in address else ""


def refused_addresses(addresses: Iterable[str]) -> list[str]:
    """Those of ``addresses`` (in order) the portal sends no alert to: addresses that are
    neither the e-mail of an active portal user (compared case-insensitively) nor at one
    of ALERT_ALLOWED_DOMAINS (the domain itself, not its subdomains). One query."""
    from django.contrib.auth import get_user_model  # validators load with the models

    domains = set(settings.ALERT_ALLOWED_DOMAINS)
    outside = [a for a in addresses if address_domain(a) not in domains]
    if not outside:
        return []
    known = set(
        get_user_model()
        .objects.filter(is_active=True)
        .annotate(address=Lower("email"))
        .filter(address__in={a.lower() for a in outside})
        .values_list("address", flat=True)
    )
    return [a for a in outside if a.lower() not in known]


def _refusal(refused: list[str]) -> str:
    named = ", ".join(repr(a) for a in refused[:3]) + (" and others" if len(refused) > 3 else "")
    verb = "is not the address" if len(refused) == 1 else "are not addresses"
    domains = settings.ALERT_ALLOWED_DOMAINS
    where = f" or of {', '.join(domains)}" if domains else ""
    return f"{named} {verb} of a portal user{where}: alerts go only there."


def _too_many(count: int) -> str:
    return (
        f"{count} alert recipients: a job may have at most {settings.ALERT_MAX_RECIPIENTS} "
        "(failure and success lists together)."
    )


def validate_address_list(raw: str) -> None:
    """A comma-separated list of alert recipients: every item an e-mail address, of a
    portal user or of ALERT_ALLOWED_DOMAINS, at most ALERT_MAX_RECIPIENTS of them. Raises
    ValidationError naming the first item that is not an address, else the refused ones.
    (The limit over both lists of a job: ``validate_recipients``.)"""
    addresses = split_addresses(raw)
    for item in addresses:
        try:
            validate_email(item)
        except ValidationError:
            raise ValidationError(f"{item!r} is not an e-mail address.", code="email") from None
    if len({a.lower() for a in addresses}) > settings.ALERT_MAX_RECIPIENTS:
        raise ValidationError(_too_many(len(addresses)), code="recipients")
    refused = refused_addresses(addresses)
    if refused:
        raise ValidationError(_refusal(refused), code="recipient")


def validate_recipients(notify_on_failure: str, notify_on_success: str) -> None:
    """Both alert lists of one job: each valid (``validate_address_list``), and together at
    most ALERT_MAX_RECIPIENTS distinct addresses. Raises ValidationError with a dict, the
    field at fault -> its message (the first problem found)."""
    for field, raw in (
        ("notify_on_failure", notify_on_failure),
        ("notify_on_success", notify_on_success),
    ):
        try:
            validate_address_list(raw)
        except ValidationError as exc:
            raise ValidationError({field: exc.messages[0]}) from None
    validate_recipient_count(notify_on_failure, notify_on_success)


def validate_recipient_count(notify_on_failure: str, notify_on_success: str) -> None:
    """At most ALERT_MAX_RECIPIENTS distinct addresses (case-insensitive) in both alert
    lists together; ValidationError ``{"notify_on_success": message}`` otherwise."""
    distinct = {a.lower() for a in split_addresses(notify_on_failure)}
    distinct |= {a.lower() for a in split_addresses(notify_on_success)}
    if len(distinct) > settings.ALERT_MAX_RECIPIENTS:
        raise ValidationError({"notify_on_success": _too_many(len(distinct))})
