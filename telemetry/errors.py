"""Errors of the telemetry dataset API."""


class TelemetryError(ValueError):
    """A request the dataset API cannot serve, with a message saying why and what to do.

    Raised for: an unknown field name in a filter, a malformed filter value (a range
    that is not a pair, ``start > end``, a date that is not ``YYYYMMDD``), a sampling
    fraction outside ``(0, 1]``, a data root or batch view that does not exist, an
    invalid batch-view name, partition column or write mode. A subclass of
    ``ValueError``, so ``except ValueError`` also catches it.
    """
