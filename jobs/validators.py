"""Validators of job fields, on the model fields themselves, so that the portal's job
form, the admin and ``Model.full_clean`` all apply the same rules
(after healthchecks' ``hc/front/validators.py``)."""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
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


def validate_address_list(raw: str) -> None:
    """Every item of a comma-separated list is an e-mail address; raises ValidationError
    naming the first one that is not."""
    for item in split_addresses(raw):
        try:
            validate_email(item)
        except ValidationError:
            raise ValidationError(f"{item!r} is not an e-mail address.", code="email") from None
