"""Uploaded originals in an S3-compatible bucket (FILES_S3_BUCKET), through the real interfaces.

The bucket is served by moto's standalone server over HTTP on 127.0.0.1 and reached with the real
boto3 client: requests are signed, sent and answered as with MinIO or AWS S3. Outages are real
too: the server is stopped and its port closed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from io import BytesIO, StringIO

import boto3
import pytest
from botocore.config import Config
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from moto.server import ThreadedMotoServer

from documents import filestore
from documents.models import Document, Source
from documents.services import document_ingest
from documents.tests.pdf_writer import make_pdf

pytestmark = pytest.mark.django_db

PDF = make_pdf([["Orchard pruning happens in late winter."], ["Cider apples ripen in October."]])
# Test credentials for the local server, which checks the signature's form, not the key.
ACCESS_KEY, SECRET_KEY = "ragsite-test", "ragsite-test-secret"
PREFIX = "originals/v1"


class S3Server:
    """moto's standalone S3-compatible server on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.running = True

    def stop(self) -> None:
        """Stop answering and close the port, so a connection is refused as from a server that is down
        (ThreadedMotoServer.stop leaves the socket listening: connections would hang instead)."""
        if self.running:
            self.server.stop()
            self.server._server.server_close()
            self.running = False

    def client(self):
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )


@pytest.fixture
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, settings, tmp_path):
    """A new bucket on the server, configured as the store of originals; returns (name, client)."""
    name = f"ragsite-{uuid.uuid4().hex[:12]}"  # moto keeps every server's buckets in one process
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    settings.FILES_DIR = tmp_path / "files"  # must stay empty: the bucket holds the originals
    settings.FILES_S3_BUCKET = name
    settings.FILES_S3_ENDPOINT_URL = s3_server.url
    settings.FILES_S3_REGION = "us-east-1"
    settings.FILES_S3_PREFIX = PREFIX
    settings.FILES_S3_ACCESS_KEY_ID = ACCESS_KEY
    settings.FILES_S3_SECRET_ACCESS_KEY = SECRET_KEY
    settings.FILES_S3_ADDRESSING_STYLE = "path"
    settings.FILES_S3_TIMEOUT = 5.0
    settings.FILES_S3_MAX_ATTEMPTS = 1  # a stopped server fails at once, without retries' backoff
    return name, client


def key_of(sha256: str) -> str:
    return f"{PREFIX}/{sha256[:2]}/{sha256}"


def stored_keys(bucket) -> list[str]:
    name, client = bucket
    reply = client.list_objects_v2(Bucket=name)
    return sorted(item["Key"] for item in reply.get("Contents", ()))


def object_bytes(bucket, key: str) -> bytes:
    name, client = bucket
    return client.get_object(Bucket=name, Key=key)["Body"].read()


def upload(client, data: bytes = PDF, name: str = "orchard.pdf", **fields):
    handle = BytesIO(data)
    handle.name = name
    return client.post("/api/documents/", {"file": handle, **fields})


def error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]


def test_an_upload_is_stored_in_the_bucket_under_its_hash_and_comes_back_identical(
    api, fresh_store, run_commit_hooks, bucket, settings
):
    with run_commit_hooks():
        created = upload(api, source="uploads")
    assert created.status_code == 201, created.content
    document = Document.objects.get(pk=created.json()["id"])
    sha256 = hashlib.sha256(PDF).hexdigest()
    assert document.file_sha256 == sha256
    assert stored_keys(bucket) == [key_of(sha256)]
    assert object_bytes(bucket, key_of(sha256)) == PDF
    assert not settings.FILES_DIR.exists()

    response = api.get(f"/api/documents/{document.pk}/file")
    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content) == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Length"] == str(len(PDF))
    assert response["Content-Disposition"] == 'inline; filename="orchard.pdf"'
    assert response["ETag"] == f'"{sha256}"'


def test_a_large_original_is_streamed_from_the_bucket_in_blocks(api, bucket):
    text = b"".join(f"Line {n}: hives need shade in the afternoon.\n".encode() for n in range(1500))
    document_id = upload(api, text, "hives.txt").json()["id"]  # not embedded: no commit hooks run
    response = api.get(f"/api/documents/{document_id}/file")
    blocks = list(response.streaming_content)
    assert len(blocks) > 1 and max(len(block) for block in blocks) < len(text)
    assert b"".join(blocks) == text
    assert response["Content-Length"] == str(len(text))
    assert response["Content-Type"] == "text/plain"


def test_the_same_bytes_are_uploaded_once_and_deleted_with_the_last_document(
    api, fresh_store, run_commit_hooks, bucket
):
    puts = []
    filestore.get_file_store().client.meta.events.register("before-call.s3.PutObject", lambda **_: puts.append(1))
    with run_commit_hooks():
        first = upload(api, source="a").json()["id"]
        second = upload(api, source="b", name="copy.pdf").json()["id"]
    assert first != second
    assert len(puts) == 1  # written once: the second upload found the object there
    key = key_of(hashlib.sha256(PDF).hexdigest())
    assert stored_keys(bucket) == [key]

    with run_commit_hooks():
        assert api.delete(f"/api/documents/{first}/").status_code == 204
    assert stored_keys(bucket) == [key]
    assert b"".join(api.get(f"/api/documents/{second}/file").streaming_content) == PDF
    with run_commit_hooks():
        assert api.delete(f"/api/documents/{second}/").status_code == 204
    assert stored_keys(bucket) == []


def test_a_damaged_object_is_written_again_by_the_next_upload_of_its_bytes(api, bucket):
    name, client = bucket
    key = key_of(hashlib.sha256(PDF).hexdigest())
    client.put_object(Bucket=name, Key=key, Body=PDF[:100])
    assert upload(api).status_code == 201
    assert object_bytes(bucket, key) == PDF


def test_an_original_missing_from_the_bucket_is_a_404_that_says_so(api, bucket):
    name, client = bucket
    document_id = upload(api).json()["id"]
    client.delete_object(Bucket=name, Key=key_of(hashlib.sha256(PDF).hexdigest()))
    response = api.get(f"/api/documents/{document_id}/file")
    assert response.status_code == 404
    assert "missing from the file store" in error(response)["message"]


def test_files_sweep_deletes_orphan_objects_page_by_page_and_leaves_other_keys(
    api, fresh_store, run_commit_hooks, bucket, monkeypatch
):
    name, client = bucket
    with run_commit_hooks():
        kept = upload(api).json()["id"]
    source = Source.objects.create(name="uploads")
    # An ingest whose transaction rolled back after its original reached the bucket.
    rolled_back = b"Bees keep the hive warm in winter."
    with pytest.raises(RuntimeError), transaction.atomic():
        document_ingest(source=source, data=rolled_back, filename="bees.txt", keep_file=True)
        raise RuntimeError("the request failed after storing")
    orphans = [hashlib.sha256(f"orphan {n}".encode()).hexdigest() for n in range(4)]
    for sha256 in orphans:
        client.put_object(Bucket=name, Key=key_of(sha256), Body=b"left behind")
    foreign = [f"{PREFIX}/notes.txt", f"{PREFIX}/{orphans[0][2:4]}/{orphans[0]}", f"elsewhere/{orphans[1]}"]
    for key in foreign:
        client.put_object(Bucket=name, Key=key, Body=b"not ours")
    monkeypatch.setattr(filestore, "LIST_PAGE_SIZE", 2)  # several pages of the listing

    out = StringIO()
    call_command("files_sweep", stdout=out)

    assert out.getvalue().strip() == "5 files deleted"
    kept_key = key_of(Document.objects.get(pk=kept).file_sha256)
    assert stored_keys(bucket) == sorted([kept_key, *foreign])


def test_a_stopped_store_answers_503_on_download_and_refuses_uploads_storing_nothing(
    api, fresh_store, run_commit_hooks, bucket, s3_server, tmp_path
):
    with run_commit_hooks():
        document_id = upload(api).json()["id"]
    s3_server.stop()

    response = api.get(f"/api/documents/{document_id}/file")
    assert response.status_code == 503
    assert error(response)["code"] == "file_store_unavailable"

    other = b"Hives need shade in the afternoon."
    with run_commit_hooks():
        refused = upload(api, other, "shade.txt", source="shade")
    assert refused.status_code == 503
    body = error(refused)
    assert body["code"] == "file_store_unavailable" and "file" in body["fields"]
    assert "nothing was stored" in body["message"]
    assert not Document.objects.filter(file_sha256=hashlib.sha256(other).hexdigest()).exists()
    assert not Source.objects.filter(name="shade").exists()

    path = tmp_path / "shade.txt"
    path.write_bytes(other)
    err = StringIO()
    with pytest.raises(CommandError, match="every input failed"):
        call_command("ingest", str(path), "--no-embed", stdout=StringIO(), stderr=err)
    assert "could not be stored" in err.getvalue()
    assert Document.objects.count() == 1

    with pytest.raises(CommandError, match="run files_sweep again"):
        call_command("files_sweep", stdout=StringIO())


def test_ready_checks_the_bucket_when_one_is_configured(manage, bucket, s3_server, tmp_path):
    """A fresh process started with FILES_S3_BUCKET, as a deployment starts: /ready names the check."""
    name, _ = bucket
    database = connection.settings_dict
    env = {
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "DATA_DIR": str(tmp_path),
        "ALLOWED_HOSTS": "testserver",
        "FILES_S3_BUCKET": name,
        "FILES_S3_ENDPOINT_URL": s3_server.url,
        "FILES_S3_REGION": "us-east-1",
        "FILES_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "FILES_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }

    up = ready(manage, env)
    assert up["checks"]["files_s3"]["status"] == "ok", up
    assert up["checks"]["files_s3"]["bucket"] == name
    assert "files_s3" not in up.get("failed", [])

    s3_server.stop()
    down = ready(manage, env)
    assert down["status"] == "unavailable" and "files_s3" in down["failed"], down
    assert down["checks"]["files_s3"]["status"] == "error"
    # Started without a bucket, the process has no such check: the data folder needs no probe.
    assert "files_s3" not in ready(manage, {**env, "FILES_S3_BUCKET": ""})["checks"]


def ready(manage, env: dict) -> dict:
    """The body of GET /ready in a fresh process started with ``env``."""
    script = "from django.test import Client; print(Client().get('/ready').content.decode())"
    result = manage("shell", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
