"""Stored files as downloads: notebooks, output notebooks and their standalone HTML,
streamed from storage (never read whole), for the pages and the API alike."""

from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header
from django.utils.text import get_valid_filename

from jobs import compression

#: Turns a stored binary file into the chunks to send, e.g. ``render.standalone_chunks``.
Transform = Callable[[BinaryIO], Iterator[bytes]]


def attachment(
    key: str,
    filename: str,
    content_type: str,
    transform: Transform | None = None,
    *,
    request: HttpRequest | None = None,
    gzip_key: str = "",
) -> FileResponse | StreamingHttpResponse:
    """The stored file ``key`` as a download named ``filename``: as it is (a FileResponse),
    or through ``transform`` (a StreamingHttpResponse). Notebook content is untrusted:
    never sniffed (``nosniff``), and sandboxed should a browser render it anyway.
    Raises Http404 when ``key`` is empty or not in storage.

    With ``request`` the body is gzip (``Content-Encoding``) when the request accepts it
    (``compression.wants_gzip``): the stored copy ``gzip_key`` as it is, or with a
    ``transform`` the transformed chunks compressed as they are sent (no Content-Length);
    ``Vary: Accept-Encoding`` either way. Without a copy and a transform, the file as it is.
    """
    if not key or not default_storage.exists(key):
        raise Http404("This file is not available.")
    filename = get_valid_filename(filename)
    response: StreamingHttpResponse | FileResponse
    if transform is None:
        sent, encoded = compression.choose(request, key, gzip_key)
        response = FileResponse(
            default_storage.open(sent, "rb"),
            as_attachment=True,
            filename=filename,
            content_type=content_type,
        )
    else:
        encoded = compression.wants_gzip(request)
        chunks = _transformed(cast(BinaryIO, default_storage.open(key, "rb")), transform)
        response = StreamingHttpResponse(
            compression.gzip_chunks(chunks) if encoded else chunks,
            content_type=content_type,
        )
        response["Content-Disposition"] = content_disposition_header(True, filename)
    if request is not None:
        compression.mark(response, encoded)
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
