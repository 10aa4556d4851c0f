"""The upload handler that keeps no more of a file than a notebook may be.

Django's own handlers (settings ``FILE_UPLOAD_HANDLERS``) keep a whole upload, in memory
or in a temporary file, before any form sees it: a 200 MB file was written to disk whole
to be refused afterwards. ``NotebookSizeLimit`` comes first in that list. It counts each
file's bytes and, past ``NOTEBOOK_MAX_BYTES`` (the largest file the portal takes), passes
no more of it to the handlers after it and drops what they kept. The form then gets a
``TooLargeUpload``: an empty file whose ``size`` is the size that was sent, which
``jobs.forms.NotebookField`` (and any FileField with a size check) refuses with a message.

The rest of the request is still read, and discarded: the other fields of the form come
after the file, and a page with the form and its error needs them. A connection reset
(``StopUpload(connection_reset=True)``) would spare reading but leave the browser with no
page. The web server's own body limit (e.g. nginx ``client_max_body_size``) bounds what is
read at all.
"""

from io import BytesIO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler


class TooLargeUpload(UploadedFile):
    """A file refused for its size: no content, ``size`` the bytes that were sent."""

    def __init__(self, name: str, content_type: str, size: int, charset=None):
        super().__init__(BytesIO(b""), name, content_type, size, charset)


class NotebookSizeLimit(FileUploadHandler):
    """Stops keeping any uploaded file at ``settings.NOTEBOOK_MAX_BYTES`` bytes; a larger
    file reaches the form as a ``TooLargeUpload``. Must be the first handler."""

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.limit = settings.NOTEBOOK_MAX_BYTES
        self.too_large = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        """The chunk for the next handlers, or None once the file is past the limit
        (``start`` is the file's bytes before this chunk)."""
        if self.too_large:
            return None
        if start + len(raw_data) > self.limit:
            self.too_large = True
            self._drop_kept()
            return None
        return raw_data

    def file_complete(self, file_size: int) -> UploadedFile | None:
        """A TooLargeUpload of ``file_size`` bytes if the file was too large, else None
        (the next handler gives the file)."""
        if not self.too_large:
            return None
        return TooLargeUpload(self.file_name or "", self.content_type or "", file_size)

    def _drop_kept(self) -> None:
        """Close what the later handlers kept of this file: the temporary file is deleted
        now rather than when the request ends (as Django's parser does on SkipFile)."""
        handlers = getattr(self.request, "upload_handlers", [])
        for handler in handlers[handlers.index(self) + 1 :] if self in handlers else []:
            kept = getattr(handler, "file", None)
            if kept is not None:
                kept.close()
