"""Filter values of the dataset API: a single value, ``"*"``, or an inclusive range.

A filter is given per field as

- ``"*"``: no restriction;
- a single value: that value only (``"nightly"``, ``"20261102"``, ``20261102``);
- a ``(start, end)`` pair (tuple or list): every value with ``start <= value <= end``,
  both ends included.

How values compare depends on the field:

- ``submission_date``: ``YYYYMMDD`` strings (``YYYY-MM-DD``, ints and
  ``datetime.date`` are accepted and normalised); must be a real calendar day.
- ``build_id``: ``YYYYMMDDhhmmss``; a shorter bound of 8 to 13 digits is a prefix: a
  start is padded with ``0``, an end with ``9``, so ``("20261101", "20261105")``
  covers every build of 1 to 5 November and a single ``"20261105"`` every build of
  that day. The first 8 digits must be a real calendar day.
- ``version``: single values compare as exact strings; ranges compare as versions,
  numerically per dot-separated part, a pre-release after its ``a``/``b`` tag before
  the release (``"53.0a2" < "54.0a1" < "54.0b1" < "54.0" < "54.0.1"``).
- ``app``, ``channel`` and any other partition column: exact strings, ranges
  lexicographic.
- data columns (filters passed as extra keyword arguments to ``Pings``): compared by
  Spark with ``=`` / ``BETWEEN``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import TelemetryError

ANY = "*"

_VERSION_RE = re.compile(r"(\d+(?:\.\d+)*)(?:(a|b|rc|esr)(\d*))?")
_PRE_RELEASE_RANK = {"a": 0, "b": 1, "rc": 2, None: 3, "esr": 3}


def version_key(version: str) -> tuple | None:
    """Sort key of a Firefox version string, or None if it is not one.

    ``"54.0a1"`` -> ``((54, 0, 0, 0), 0, 1)``; numeric parts are padded to four, so
    ``"51.0"`` and ``"51.0.0"`` compare equal.
    """
    match = _VERSION_RE.fullmatch(version)
    if not match:
        return None
    numbers = tuple(int(part) for part in match.group(1).split("."))
    numbers = numbers + (0,) * max(0, 4 - len(numbers))
    return numbers, _PRE_RELEASE_RANK[match.group(2)], int(match.group(3) or 0)


@dataclass(frozen=True)
class Filter:
    """A parsed filter on one field: ``exact`` value, or inclusive ``low``/``high``.

    For partition fields ``matches(raw)`` tests a directory value (a string).
    """

    field: str
    exact: object = None
    low: object = None
    high: object = None
    kind: str = "string"  # "string", "version" or "value" (data column, Spark-side)

    @property
    def is_range(self) -> bool:
        return self.exact is None

    def matches(self, raw: str | None) -> bool:
        if raw is None:  # Hive's null partition
            return False
        if not self.is_range:
            return raw == self.exact
        if self.kind == "version":
            key = version_key(raw)
            return key is not None and self.low <= key <= self.high
        return self.low <= raw <= self.high

    def describe(self) -> str:
        if not self.is_range:
            return f"{self.field} == {self.exact!r}"
        return f"{self.field} in [{self.low!r}, {self.high!r}]"


def _is_pair(value) -> bool:
    return isinstance(value, (tuple, list))


def _check_pair(field: str, value) -> tuple:
    if len(value) != 2:
        raise TelemetryError(
            f"{field}: a range is a (start, end) pair, got {len(value)} items: {value!r}"
        )
    start, end = value
    if ANY in (start, end) and isinstance(start, str) and isinstance(end, str):
        raise TelemetryError(f'{field}: "*" cannot be a range bound, got {value!r}')
    return start, end


def _scalar_text(field: str, value) -> str:
    if isinstance(value, bool) or value is None:
        raise TelemetryError(
            f'{field}: expected a value, "*" or a (start, end) pair, got {value!r}'
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if not value:
            raise TelemetryError(f"{field}: empty string is not a valid value")
        return value
    raise TelemetryError(
        f'{field}: expected a string, "*" or a (start, end) pair, got '
        f"{type(value).__name__} {value!r}"
    )


def _date_text(field: str, value) -> str:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    text = _scalar_text(field, value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text = text.replace("-", "")
    if not re.fullmatch(r"\d{8}", text):
        raise TelemetryError(
            f"{field}: expected a date as YYYYMMDD (e.g. '20261102'), got {value!r}"
        )
    _check_calendar_day(field, text[:8], value)
    return text


def _check_calendar_day(field: str, yyyymmdd: str, original) -> None:
    try:
        dt.datetime.strptime(yyyymmdd, "%Y%m%d")
    except ValueError:
        raise TelemetryError(f"{field}: {original!r} is not a calendar day (YYYYMMDD)") from None


def _build_id_text(field: str, value) -> str:
    text = _scalar_text(field, value)
    if not re.fullmatch(r"\d{8,14}", text):
        raise TelemetryError(
            f"{field}: expected a build id YYYYMMDDhhmmss, or a prefix of it of at "
            f"least 8 digits (e.g. '20261105'), got {value!r}"
        )
    _check_calendar_day(field, text[:8], value)
    return text


def parse_partition_filter(field: str, value) -> Filter | None:
    """Parse the filter ``value`` of partition field ``field``; None for ``"*"``.

    Raises ``TelemetryError`` for a value of the wrong type or format, a range that is
    not a pair, or a range whose start is after its end.
    """
    if isinstance(value, str) and value == ANY:
        return None
    if _is_pair(value):
        start, end = _check_pair(field, value)
        if field == "submission_date":
            low, high = _date_text(field, start), _date_text(field, end)
        elif field == "build_id":
            low, high = _build_id_text(field, start), _build_id_text(field, end)
            low, high = low.ljust(14, "0"), high.ljust(14, "9")
        elif field == "version":
            low_text, high_text = _scalar_text(field, start), _scalar_text(field, end)
            low, high = version_key(low_text), version_key(high_text)
            for text, key in ((low_text, low), (high_text, high)):
                if key is None:
                    raise TelemetryError(
                        f"{field}: {text!r} is not a version like '51.0.1' or '54.0a1'"
                    )
            if low > high:
                raise TelemetryError(
                    f"{field}: range start {low_text!r} is after its end {high_text!r}"
                )
            return Filter(field, low=low, high=high, kind="version")
        else:
            low, high = _scalar_text(field, start), _scalar_text(field, end)
        if low > high:
            raise TelemetryError(f"{field}: range start {start!r} is after its end {end!r}")
        return Filter(field, low=low, high=high)
    if field == "submission_date":
        return Filter(field, exact=_date_text(field, value))
    if field == "build_id":
        text = _build_id_text(field, value)
        if len(text) < 14:
            return Filter(field, low=text.ljust(14, "0"), high=text.ljust(14, "9"))
        return Filter(field, exact=text)
    return Filter(field, exact=_scalar_text(field, value))


def parse_value_filter(field: str, value) -> Filter | None:
    """Parse a filter on a data column (evaluated by Spark); None for ``"*"``."""
    if isinstance(value, str) and value == ANY:
        return None
    if _is_pair(value):
        start, end = _check_pair(field, value)
        if start is None or end is None:
            raise TelemetryError(f"{field}: range bounds cannot be None, got {value!r}")
        try:
            reversed_ = start > end
        except TypeError:
            raise TelemetryError(
                f"{field}: range bounds {start!r} and {end!r} are not comparable"
            ) from None
        if reversed_:
            raise TelemetryError(f"{field}: range start {start!r} is after its end {end!r}")
        return Filter(field, low=start, high=end, kind="value")
    if value is None or isinstance(value, (dict, set, Sequence)) and not isinstance(value, str):
        raise TelemetryError(
            f'{field}: expected a value, "*" or a (start, end) pair, got {value!r}'
        )
    return Filter(field, exact=value, kind="value")


_SPARK_VERSION_RE = r"^(\d+(?:\.\d+)*)(?:(a|b|rc|esr)(\d*))?$"


def column_predicate(flt: Filter, column=None):
    """A Spark ``Column`` that is true exactly where ``flt`` holds, for filtering a
    DataFrame whose column ``flt.field`` holds the values (a partition-like field stored
    as a string column, as in the streaming pings, or a data column).

    Same semantics as ``Filter.matches`` for partition fields: exact string equality,
    string ranges lexicographic, version ranges compared as ``version_key`` does (a
    value that is not a version never matches); data-column filters (kind ``"value"``)
    are ``=`` / ``BETWEEN``. Null values never match. ``column``: the Column to test,
    default ``F.col(flt.field)``. Only Spark SQL expressions (no Python UDF), so it
    works on classic Spark and Spark Connect.
    """
    from pyspark.sql import functions as F

    col = F.col(flt.field) if column is None else column
    if not flt.is_range:
        return col == F.lit(flt.exact)
    if flt.kind != "version":
        return col.between(F.lit(flt.low), F.lit(flt.high))
    key = _spark_version_key(col)
    low, high = (_version_key_literal(k) for k in (flt.low, flt.high))
    return col.rlike(_SPARK_VERSION_RE) & (key >= low) & (key <= high)


def _spark_version_key(col):
    """``version_key`` as a Spark struct (numbers array padded to four, pre-release
    rank, pre-release number); structs and arrays compare field by field, element by
    element, a shorter array first, as Python tuples do."""
    from pyspark.sql import functions as F

    numbers = F.transform(
        F.split(F.regexp_extract(col, _SPARK_VERSION_RE, 1), r"\."),
        lambda part: part.cast("decimal(38,0)"),
    )
    padding = F.array_repeat(
        F.lit(0).cast("decimal(38,0)"), F.greatest(F.lit(0), 4 - F.size(numbers))
    )
    tag = F.regexp_extract(col, _SPARK_VERSION_RE, 2)
    rank = F.lit(_PRE_RELEASE_RANK[None])
    for name in ("a", "b", "rc", "esr"):
        rank = F.when(tag == name, F.lit(_PRE_RELEASE_RANK[name])).otherwise(rank)
    tag_number = F.regexp_extract(col, _SPARK_VERSION_RE, 3)
    number = F.when(tag_number == "", F.lit(0).cast("decimal(38,0)")).otherwise(
        tag_number.cast("decimal(38,0)")
    )
    return F.struct(
        F.concat(numbers, padding).alias("numbers"),
        rank.cast("int").alias("rank"),
        number.alias("number"),
    )


def _version_key_literal(key: tuple):
    from pyspark.sql import functions as F

    numbers, rank, number = key
    return F.struct(
        F.array(*(F.lit(n).cast("decimal(38,0)") for n in numbers)).alias("numbers"),
        F.lit(rank).cast("int").alias("rank"),
        F.lit(number).cast("decimal(38,0)").alias("number"),
    )
