"""An upload handler that enforces the size limits while a multipart body streams in.

Django applies DATA_UPLOAD_MAX_MEMORY_SIZE to JSON and form bodies but not to the files of a
multipart request: without this handler a 1 GB upload would be spooled to a temporary file
before ingestion rejects it. First in FILE_UPLOAD_HANDLERS; it passes data on untouched.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler


class UploadTooLarge(RequestDataTooBig):
    """RequestDataTooBig that names what was too large (the API's 413 body shows it)."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


class UploadSizeLimitHandler(FileUploadHandler):
    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and content_length > limit:
            raise UploadTooLarge(
                f"The request body is {content_length} bytes; the limit is {limit} bytes "
                f"(INGEST_MAX_BYTES={settings.INGEST_MAX_BYTES} for the file, plus room for the fields)."
            )
        return None  # let the next handlers read it

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        # Content-Length can lie (or be missing behind some proxies): count what actually arrives.
        self.received += len(raw_data)
        if self.received > settings.INGEST_MAX_BYTES:
            raise UploadTooLarge(
                f"The file is larger than the limit of {settings.INGEST_MAX_BYTES} bytes (INGEST_MAX_BYTES).",
                field=self.field_name,
            )
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handler builds the file
