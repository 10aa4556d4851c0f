"""Stored files as downloads: notebooks, output notebooks and their standalone HTML,
streamed from storage (never read whole), for the pages and the API alike."""

from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.utils.http import content_disposition_header
from django.utils.text import get_valid_filename

#: Turns a stored binary file into the chunks to send, e.g. ``render.standalone_chunks``.
Transform = Callable[[BinaryIO], Iterator[bytes]]


def attachment(
    key: str, filename: str, content_type: str, transform: Transform | None = None
) -> FileResponse | StreamingHttpResponse:
    """The stored file ``key`` as a download named ``filename``: as it is (a FileResponse),
    or through ``transform`` (a StreamingHttpResponse). Notebook content is untrusted:
    never sniffed (``nosniff``), and sandboxed should a browser render it anyway.
    Raises Http404 when ``key`` is empty or not in storage."""
    if not key or not default_storage.exists(key):
        raise Http404("This file is not available.")
    filename = get_valid_filename(filename)
    response: StreamingHttpResponse | FileResponse
    if transform is None:
        response = FileResponse(
            default_storage.open(key, "rb"),
            as_attachment=True,
            filename=filename,
            content_type=content_type,
        )
    else:
        response = StreamingHttpResponse(
            _transformed(cast(BinaryIO, default_storage.open(key, "rb")), transform),
            content_type=content_type,
        )
        response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


def _transformed(stored: BinaryIO, transform: Transform) -> Iterator[bytes]:
    """The chunks of ``transform(stored)``; closes ``stored`` when the response is done
    (Django closes a streaming response's generator)."""
    try:
        yield from transform(stored)
    finally:
        stored.close()
