"""Gzip copies of a run's large outputs, and choosing which copy a request gets.

A finished run's rendered HTML and output .ipynb are stored twice: as they are, and as a
gzip copy made once when the run ends (``store_gzip_copy``, key in ``Run.html_gzip_key``
and ``Run.output_gzip_key``). The user-content origin and the downloads send the gzip copy
with ``Content-Encoding: gzip`` to a browser that accepts gzip (``accepts_gzip``), and the
plain file to any other client: nothing is decompressed on the fly, and everything that
reads the outputs (the comparison, ``runnotebook``) keeps reading the plain file. The
price is storage: the copies add about 43% (HTML) and 25% (.ipynb) of Plotly-heavy
outputs, counted in ``Run.output_bytes`` and deleted with the outputs.

Why gzip and this level: measured by ``bench/output_compression.py`` on a 26.5 MB page of
20 Plotly charts of 60,000 points (figures in bench/README.md). Brotli is not installed
and would be a new dependency. Plotly's numbers compress about 2.3× (HTML) and 4×
(.ipynb) at any level; level 3 gave the smallest HTML in about 0.5 s per file, levels
6 and 9 took 3-7 times as long for a .ipynb 4-5% smaller and a larger HTML.

The live partial HTML is not compressed: it is rewritten every few seconds while the run
lasts. The standalone HTML download (plotly.js inlined, ``render.standalone_chunks``) is
not the stored page, so it is compressed on the fly at level 1 (``gzip_chunks``) instead.
"""

import gzip
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import default_storage
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers

#: zlib level of the stored copies: see the module's docstring.
GZIP_LEVEL = 3
#: zlib level of a download compressed while it is sent (paid on every download).
STREAM_LEVEL = 1
#: Files below this size get no copy: they cross the network quickly anyway.
MIN_BYTES = 8 * 2**10
#: A copy is kept only if it is at most this fraction of the file.
MAX_RATIO = 0.9
_CHUNK = 2**20


def store_gzip_copy(key: str, source: BinaryIO) -> tuple[str, int]:
    """Store a gzip copy of the stored file ``key``, read from the binary file ``source``
    (at its start), next to it as ``key + ".gz"``; returns ``(gzip_key, its bytes)``, or
    ``("", 0)`` when ``source`` is under MIN_BYTES or compresses to more than MAX_RATIO
    of its size (nothing is stored then). Memory use is bounded: the copy is built in a
    temporary file, a chunk at a time. The copy is deterministic (no name, no time)."""
    size = 0
    with tempfile.TemporaryFile() as spool:
        with gzip.GzipFile(
            filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=spool, mtime=0
        ) as gz:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                gz.write(chunk)
        packed = spool.tell()
        if size < MIN_BYTES or packed > size * MAX_RATIO:
            return "", 0
        spool.seek(0)
        return default_storage.save(key + ".gz", File(spool)), packed


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value accepts gzip (RFC 9110 §12.5.3):
    ``gzip`` or ``x-gzip`` with a non-zero q, or else ``*`` with a non-zero q. A coding
    listed with ``q=0`` is refused, also when ``*`` is accepted; a malformed q refuses."""
    star = None
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        coding = coding.lower()
        if not coding:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return bool(star)


def wants_gzip(request: HttpRequest | None) -> bool:
    """Whether ``request`` should get a gzip body: it accepts gzip and asks for no range.
    A Range request gets the plain file: a range of an encoded body would count encoded
    bytes, and neither copy is served by ranges (``Accept-Ranges: none``)."""
    if request is None or "range" in request.headers:
        return False
    return accepts_gzip(request.headers.get("accept-encoding", ""))


def choose(request: HttpRequest | None, key: str, gzip_key: str) -> tuple[str, bool]:
    """The storage key to send for a file stored as ``key`` with the gzip copy
    ``gzip_key`` (empty for none), and whether it is the gzip copy."""
    if gzip_key and wants_gzip(request):
        return gzip_key, True
    return key, False


def mark(response: HttpResponseBase, encoded: bool) -> HttpResponseBase:
    """Set the headers of a response that may vary by ``Accept-Encoding``: ``Vary``
    always, ``Content-Encoding: gzip`` when ``encoded``; ranges are never offered."""
    patch_vary_headers(response, ["Accept-Encoding"])
    response["Accept-Ranges"] = "none"
    if encoded:
        response["Content-Encoding"] = "gzip"
    return response


def gzip_chunks(chunks: Iterable[bytes], level: int = STREAM_LEVEL) -> Iterator[bytes]:
    """``chunks`` as one gzip stream (no name, no time), compressed as they come; each
    input chunk gives at most one output chunk, so memory use stays bounded. Closes
    ``chunks`` (when it can be closed) when done or closed itself."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    try:
        for chunk in chunks:
            if out := packer.compress(chunk):
                yield out
        yield packer.flush()
    finally:
        if close := getattr(chunks, "close", None):
            close()
