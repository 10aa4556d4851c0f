"""Read the values a notebook recorded with scrapbook's ``glue`` from its output notebook,
and store them with the run.

scrapbook's output format: ``glue(name, value)`` adds a display output whose data holds
``application/scrapbook.scrap.<encoder>+json`` → ``{"name", "data", "encoder",
"version"}`` and whose metadata holds ``{"scrapbook": {"name", "data": true, ...}}``;
``glue(name, value, display=True)`` adds (or, for a value no encoder takes, such as a
Plotly figure, only adds) a display output of the value's own rich output, marked
``{"scrapbook": {"name", "display": true}}``. Encoders: ``text`` (a string), ``json``
(numbers, booleans, lists, dicts) and ``pandas`` (a DataFrame as base64 Parquet).

The format is parsed here rather than through ``scrapbook.read_notebook``: that decodes
every DataFrame whole (pandas.read_parquet) and lets a later display output of a name
replace its data. The notebook is user data: every value is bounded (the RECORDED_*
settings), what passes a bound is cut or dropped with a note, and a malformed scrap is
skipped. Nothing here raises for what a notebook holds.
"""

import base64
import binascii
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from recorded.models import RecordedValue

log = logging.getLogger(__name__)

Kind = RecordedValue.Kind

SCRAP_MIME_PREFIX = "application/scrapbook.scrap."
PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: Characters kept of each cell of a table (a table is for reading, not for data).
TABLE_CELL_MAX_CHARS = 200
#: Uncompressed bytes of a glued DataFrame's first row group we agree to decompress: a
#: small Parquet file can hold a great deal of compressed data.
TABLE_MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024


@dataclass
class Value:
    """One recorded value before it is stored (see ``RecordedValue`` for the fields)."""

    name: str
    kind: str
    number: float | None = None
    text: str = ""
    data: Any = None
    note: str = ""


@dataclass
class Extraction:
    """What a notebook recorded: ``values`` in order of first appearance (at most
    RECORDED_MAX_VALUES), and how many more names were ``dropped`` past that bound."""

    values: list[Value] = field(default_factory=list)
    dropped: int = 0


# --- Reading -------------------------------------------------------------------------------------


def read_notebook_values(nb: Any) -> Extraction:
    """The recorded values of a notebook (an nbformat v4 NotebookNode or its JSON dict).

    A name glued again takes its last value, keeping the place of its first. A display
    output of a name (``display=True``) becomes its value only when the same cell did not
    glue data under that name (a DataFrame glued with ``display=True`` stays a table; a
    Plotly figure, which has no data encoder, becomes a figure).
    """
    found: dict[str, Value] = {}
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or not isinstance(cell.get("outputs"), list):
            continue
        glued_here: set[str] = set()
        previous: dict = {}
        for output in cell["outputs"]:
            if not isinstance(output, dict) or not isinstance(output.get("data"), dict):
                previous = {}
                continue
            for value in _data_scraps(output["data"]):
                found[value.name] = value
                glued_here.add(value.name)
            shown = _display_scrap(output, previous)
            if shown is not None and shown.name not in glued_here:
                found[shown.name] = shown
            previous = output["data"]
    values = list(found.values())
    most = settings.RECORDED_MAX_VALUES
    return Extraction(values=values[:most], dropped=max(len(values) - most, 0))


def read_output_values(path: Path | None) -> Extraction:
    """The recorded values of the output notebook at ``path``; an empty Extraction when
    there is no file, it is over RECORDED_NOTEBOOK_MAX_BYTES (logged) or not JSON. Never
    raises."""
    if path is None or not path.exists():
        return Extraction()
    size = path.stat().st_size
    if size > settings.RECORDED_NOTEBOOK_MAX_BYTES:
        log.info("output too large to read recorded values path=%s bytes=%s", path, size)
        return Extraction()
    try:
        with path.open("rb") as fh:
            nb = json.load(fh)
    except (ValueError, RecursionError, OSError) as exc:
        log.warning("recorded values not read path=%s: %s", path, exc)
        return Extraction()
    try:
        return read_notebook_values(nb)
    except Exception:  # a case the reader missed must not fail the run
        log.exception("recorded values not read path=%s", path)
        return Extraction()


def _data_scraps(data: dict) -> list[Value]:
    """The scraps in one output's data bundle (normally one); malformed ones skipped."""
    values = []
    for mime, payload in data.items():
        if not (isinstance(mime, str) and mime.startswith(SCRAP_MIME_PREFIX)):
            continue
        if not isinstance(payload, dict):
            continue
        name = _name(payload.get("name"))
        encoder = payload.get("encoder")
        if name is None or not isinstance(encoder, str) or "data" not in payload:
            continue
        try:
            value = _decode(name, encoder, payload["data"])
        except (RecursionError, ValueError, TypeError, OverflowError) as exc:
            value = Value(name, Kind.OTHER, note=f"Not readable: {type(exc).__name__}.")
        values.append(_note_cut_name(value, payload["name"]))
    return values


def _display_scrap(output: dict, previous: dict) -> Value | None:
    """The value of a scrapbook display output (``glue(..., display=True)``), or None.

    A Plotly figure displays itself (its ``_ipython_display_``) before glue's own display
    output, which then holds no data: its figure is in the ``previous`` output's data.
    """
    metadata = output.get("metadata")
    marker = metadata.get("scrapbook") if isinstance(metadata, dict) else None
    if not (isinstance(marker, dict) and marker.get("display")):
        return None
    name = _name(marker.get("name"))
    if name is None:
        return None
    return _note_cut_name(_displayed(name, output, previous), marker["name"])


def _displayed(name: str, output: dict, previous: dict) -> Value:
    figure = output["data"].get(PLOTLY_MIME)
    if figure is None and not output["data"]:
        figure = previous.get(PLOTLY_MIME)
    if figure is None:
        return Value(name, Kind.OTHER, note="Display only: shown in the notebook output.")
    try:
        return _figure(name, figure)
    except (RecursionError, ValueError, TypeError) as exc:
        return Value(name, Kind.FIGURE, note=f"Not readable: {type(exc).__name__}.")


def _note_cut_name(value: Value, raw: str) -> Value:
    """``value``, its note saying so when its name was cut from ``raw``."""
    whole = raw.replace("\x00", "").strip()
    if len(whole) > len(value.name):
        cut = f"Name cut from {len(whole):,} characters."
        value.note = f"{value.note} {cut}" if value.note else cut
    return value


def _name(raw: Any) -> str | None:
    """A scrap's name, cut to RECORDED_NAME_MAX_CHARS; None for a missing or empty one."""
    if not isinstance(raw, str):
        return None
    name = raw.replace("\x00", "").strip()
    return name[: settings.RECORDED_NAME_MAX_CHARS] or None


def _decode(name: str, encoder: str, data: Any) -> Value:
    if encoder == "text":
        return _text(name, data if isinstance(data, str) else str(data))
    if encoder == "json":
        if isinstance(data, str):  # scrapbook's json decoder reads a JSON string as JSON
            try:
                data = json.loads(data)
            except ValueError:
                pass
        return _plain(name, data)
    if encoder == "pandas":
        return _table(name, data)
    return Value(name, Kind.OTHER, note=f"Encoder {encoder[:40]!r} is not read by the portal.")


def _text(name: str, text: str) -> Value:
    text = text.replace("\x00", "")
    most = settings.RECORDED_TEXT_MAX_CHARS
    if len(text) <= most:
        return Value(name, Kind.TEXT, text=text)
    return Value(
        name, Kind.TEXT, text=text[:most], note=f"Cut to {most:,} of {len(text):,} characters."
    )


def _plain(name: str, data: Any) -> Value:
    """A JSON value: a finite number is a NUMBER, a string TEXT, anything else OTHER."""
    if isinstance(data, str):
        return _text(name, data)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        number = float(data)  # OverflowError for an int past float range: not readable
        if math.isfinite(number):
            return Value(name, Kind.NUMBER, number=number)
        return Value(name, Kind.OTHER, text=str(number), note="Not a finite number.")
    cleaned = _clean(data)
    size = len(json.dumps(cleaned))
    most = settings.RECORDED_TEXT_MAX_CHARS
    if size > most:
        return Value(
            name, Kind.OTHER, note=f"Not kept: {size:,} characters of JSON, over {most:,}."
        )
    return Value(name, Kind.OTHER, data=cleaned)


def _figure(name: str, figure: Any) -> Value:
    if not (isinstance(figure, dict) and isinstance(figure.get("data"), list)):
        return Value(name, Kind.FIGURE, note="Not a Plotly figure.")
    cleaned = _clean({"data": figure["data"], "layout": figure.get("layout") or {}})
    size = len(json.dumps(cleaned).encode())
    most = settings.RECORDED_FIGURE_MAX_BYTES
    if size > most:
        return Value(name, Kind.FIGURE, note=f"Not kept: {size:,} bytes, over {most:,}.")
    return Value(name, Kind.FIGURE, data=cleaned)


def _table(name: str, encoded: Any) -> Value:
    """A glued DataFrame (base64 Parquet) as ``{"columns", "rows"}``, cut to
    RECORDED_TABLE_MAX_ROWS rows and RECORDED_TABLE_MAX_COLUMNS columns; the index is left
    out. Only the first row group is decompressed, and only when its size is bounded."""
    import pyarrow.parquet as pq  # the web process never needs it

    if not isinstance(encoded, str):
        return Value(name, Kind.TABLE, note="Not a DataFrame scrap.")
    most_bytes = settings.RECORDED_TABLE_MAX_BYTES
    if len(encoded) > most_bytes:
        return Value(
            name, Kind.TABLE, note=f"Not kept: {len(encoded):,} bytes, over {most_bytes:,}."
        )
    try:
        parquet = pq.ParquetFile(io.BytesIO(base64.b64decode(encoded, validate=True)))
        meta = parquet.metadata
        if meta.num_row_groups and (
            meta.row_group(0).total_byte_size > TABLE_MAX_UNCOMPRESSED_BYTES
        ):
            return Value(name, Kind.TABLE, note="Not kept: too large once decompressed.")
        names = [c for c in parquet.schema_arrow.names if not c.startswith("__index_level_")]
        most_cols, most_rows = settings.RECORDED_TABLE_MAX_COLUMNS, settings.RECORDED_TABLE_MAX_ROWS
        columns = names[:most_cols]
        batch = next(parquet.iter_batches(batch_size=most_rows, columns=columns), None)
        records = batch.to_pylist() if batch is not None else []
    except (binascii.Error, ValueError, OSError, ArithmeticError, StopIteration) as exc:
        return Value(name, Kind.TABLE, note=f"Not readable: {type(exc).__name__}.")
    except Exception as exc:  # pyarrow's own errors (ArrowException subclasses)
        return Value(name, Kind.TABLE, note=f"Not readable: {type(exc).__name__}.")
    rows = [[_cell(record.get(c)) for c in columns] for record in records[:most_rows]]
    cuts = []
    if meta.num_rows > len(rows):
        cuts.append(f"{len(rows):,} of {meta.num_rows:,} rows")
    if len(names) > len(columns):
        cuts.append(f"{len(columns):,} of {len(names):,} columns")
    note = f"Cut to {' and '.join(cuts)}." if cuts else ""
    return Value(
        name, Kind.TABLE, data={"columns": [_cell(c) for c in columns], "rows": rows}, note=note
    )


def _cell(value: Any) -> Any:
    """A table cell as short JSON: None, a bool, a finite number, or text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) and abs(value) < 2**53 else str(value)
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    text = text.replace("\x00", "")
    return text if len(text) <= TABLE_CELL_MAX_CHARS else text[: TABLE_CELL_MAX_CHARS - 1] + "…"


def _clean(data: Any) -> Any:
    """JSON ``data`` that both PostgreSQL's jsonb and ``json_script`` accept: NUL
    characters removed from strings and keys, NaN and infinities as None."""
    if isinstance(data, str):
        return data.replace("\x00", "")
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, list):
        return [_clean(item) for item in data]
    if isinstance(data, dict):
        return {str(key).replace("\x00", ""): _clean(item) for key, item in data.items()}
    return data


# --- Storing -------------------------------------------------------------------------------------


def replace_values(run: Any, extraction: Extraction) -> int:
    """Replace every recorded value of ``run`` with ``extraction``'s; returns how many were
    stored. One savepoint: on a database error nothing of the run's values changes and the
    error propagates (``record_values`` catches it)."""
    with transaction.atomic():
        RecordedValue.objects.filter(run=run).delete()
        RecordedValue.objects.bulk_create(
            RecordedValue(
                run=run,
                name=v.name,
                kind=v.kind,
                number=v.number,
                text=v.text,
                data=v.data,
                note=v.note[:300],
                position=i,
            )
            for i, v in enumerate(extraction.values)
        )
    if extraction.dropped:
        log.warning(
            "recorded values dropped run=%s kept=%s dropped=%s",
            run.pk,
            len(extraction.values),
            extraction.dropped,
        )
    return len(extraction.values)


def record_values(run: Any, extraction: Extraction) -> int:
    """``replace_values``, logged and never raising: recorded values never fail a run.
    Returns how many were stored (0 on an error)."""
    try:
        return replace_values(run, extraction)
    except Exception:
        log.exception("recorded values not stored run=%s", run.pk)
        return 0
