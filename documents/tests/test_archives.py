""".zip archives through the real interfaces: POST /api/documents/ (multipart, API key) and
`manage.py ingest`, against real PostgreSQL, the real file store and the real search.

Archives are built here with zipfile; the hostile ones (a lying header, an encrypted flag, names
without the UTF-8 flag) by patching the headers zipfile wrote, since zipfile will not write them.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tracemalloc
import zipfile
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from documents.archives import member_label
from documents.files import file_path
from documents.models import Chunk, Document
from documents.tests import format_fixtures as ff
from documents.tests.test_api import error

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

TEA = b"# Tea\n\nGreen tea from the quillbrook valley is steamed soon after picking.\n"
COFFEE = b"Coffee cherries are dried in the sun on raised beds in the highlands.\n"


def make_zip(members, *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """`members`: (name or ZipInfo, bytes) pairs; a name ending in / is a folder."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def patch_entry(data: bytes, name: bytes, *, flags: int | None = None, size: int | None = None) -> bytes:
    """Set a member's flag bits or declared uncompressed size in its local and central headers."""
    out = bytearray(data)
    for signature, flags_at, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 6, 22, 26, 30),
        (b"PK\x01\x02", 8, 24, 28, 46),
    ):
        start = 0
        while (at := out.find(signature, start)) >= 0:
            start = at + 4
            length = struct.unpack_from("<H", out, at + name_len_at)[0]
            if bytes(out[at + name_at : at + name_at + length]) != name:
                continue
            if flags is not None:
                struct.pack_into("<H", out, at + flags_at, flags)
            if size is not None:
                struct.pack_into("<I", out, at + size_at, size)
    return bytes(out)


def upload(api, data: bytes, name: str = "bundle.zip", **fields):
    file = SimpleUploadedFile(name, data, content_type="application/zip")
    return api.post("/api/documents/", {"file": file, "source": fields.pop("source", "zips"), **fields})


def by_name(body: dict) -> dict[str, dict]:
    return {f["name"]: f for f in body["files"]}


def keyword_hits(api, q: str) -> list[dict]:
    response = api.get("/api/search/", {"q": q, "mode": "keyword"})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def docx(word: str) -> bytes:
    return ff.make_docx(title="Orchard Notes", sections=[(1, "Pruning", [f"Prune the {word} saplings in March."])])


def nested_zip() -> bytes:
    return make_zip([("inner.md", b"# Inner\n\nNever unpacked.\n")])


def test_a_mixed_archive_reports_every_file_and_stores_the_good_ones(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        earlier = api.post(
            "/api/documents/",
            {"title": "Kept", "text": "Stored before the archive came.", "source": "handbook"},
            content_type="application/json",
        )
    assert earlier.status_code == 201
    archive = make_zip(
        [
            ("guides/", b""),
            ("guides/tea.md", TEA),
            ("notes\\coffee.txt", COFFEE),  # a Windows tool's separator
            ("orchard.docx", docx("zephyrwood")),
            ("empty.txt", b""),
            ("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" * 64),
            ("inner.zip", nested_zip()),
            ("disguised.bin", nested_zip()),
            ("__MACOSX/guides/._tea.md", b"\x00\x05\x16\x07 resource fork"),
            (".DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("photos/Thumbs.db", b"\xd0\xcf\x11\xe0"),
        ]
    )
    with run_commit_hooks():
        response = upload(api, archive, source="handbook")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["archive"] == "bundle.zip" and body["source"] == "handbook"
    # the archive's order, folders and leftovers left out
    assert [f["name"] for f in body["files"]] == [
        "guides/tea.md",
        "notes/coffee.txt",
        "orchard.docx",
        "empty.txt",
        "setup.exe",
        "inner.zip",
        "disguised.bin",
    ]
    files = by_name(body)
    assert {n: f["status"] for n, f in files.items()} == {
        "guides/tea.md": "ingested",
        "notes/coffee.txt": "ingested",
        "orchard.docx": "ingested",
        "empty.txt": "refused",
        "setup.exe": "refused",
        "inner.zip": "refused",
        "disguised.bin": "refused",
    }
    assert files["empty.txt"]["code"] == "empty" and "empty" in files["empty.txt"]["reason"]
    assert files["setup.exe"]["code"] == "unsupported_type" and "x-msdownload" in files["setup.exe"]["reason"]
    assert files["inner.zip"]["code"] == files["disguised.bin"]["code"] == "nested_archive"
    assert all(f["document_id"] is None and f["chunks"] == 0 for f in files.values() if f["status"] == "refused")
    assert body["totals"] == {
        "files": 7,
        "ingested": 3,
        "processing": 0,
        "unchanged": 0,
        "refused": 4,
        "skipped": 3,
        "chunks": sum(f["chunks"] for f in files.values()),
    }

    # each good file is a document of its own, named by its path, with its original kept
    for name in ("guides/tea.md", "notes/coffee.txt", "orchard.docx"):
        report = files[name]
        document = Document.objects.get(pk=report["document_id"])
        assert report["created"] is True and report["chunks"] == document.chunks.count() >= 1
        assert document.source.name == "handbook" and document.metadata["filename"] == name
        assert document.file_name == name and file_path(document.file_sha256).is_file()
        assert report["title"] == document.title
    assert files["guides/tea.md"]["title"] == "Tea" and files["orchard.docx"]["title"] == "Orchard Notes"
    assert Document.objects.filter(source__name="handbook").count() == 4
    assert Document.objects.get(pk=earlier.json()["id"]).text == "Stored before the archive came."

    # found by keyword search, and indexed
    for word, name in (("quillbrook", "guides/tea.md"), ("zephyrwood", "orchard.docx")):
        hits = keyword_hits(api, word)
        assert hits and hits[0]["document_id"] == files[name]["document_id"], (word, hits)
    assert not Chunk.objects.filter(document__source__name="handbook").exclude(index_status="indexed").exists()


def test_the_same_archive_again_is_unchanged_and_duplicates_nothing(api, fresh_store, run_commit_hooks):
    archive = make_zip([("a/tea.md", TEA), ("coffee.txt", COFFEE), ("bad.exe", b"MZ\x90\x00" * 100)])
    with run_commit_hooks():
        first = upload(api, archive)
    assert first.status_code == 201, first.content
    chunks = set(Chunk.objects.values_list("id", flat=True))

    with run_commit_hooks():
        again = upload(api, archive)
    assert again.status_code == 200, again.content
    files = by_name(again.json())
    assert files["a/tea.md"]["status"] == files["coffee.txt"]["status"] == "unchanged"
    assert files["bad.exe"]["status"] == "refused"
    for name in ("a/tea.md", "coffee.txt"):
        assert files[name]["document_id"] == by_name(first.json())[name]["document_id"]
        assert files[name]["created"] is False and files[name]["chunks"] >= 1
    assert again.json()["totals"]["unchanged"] == 2 and again.json()["totals"]["ingested"] == 0
    assert Document.objects.count() == 2 and set(Chunk.objects.values_list("id", flat=True)) == chunks


def test_an_archive_spooled_to_disk_is_read_from_there(api, fresh_store, settings):
    noise = os.urandom(settings.FILE_UPLOAD_MAX_MEMORY_SIZE + 1024)  # incompressible: the upload is larger
    archive = make_zip([("noise.bin", noise), ("tea.md", TEA)], compression=zipfile.ZIP_STORED)
    response = upload(api, archive)
    assert response.status_code == 201, response.content
    assert [(f["name"], f["status"]) for f in response.json()["files"]] == [
        ("noise.bin", "refused"),
        ("tea.md", "ingested"),
    ]


def test_with_a_url_a_changed_archive_updates_its_files_in_place(api, fresh_store, run_commit_hooks):
    url = "https://files.example.com/handbook.zip"
    with run_commit_hooks():
        first = upload(api, make_zip([("tea.md", TEA), ("coffee.txt", COFFEE)]), url=url)
    assert first.status_code == 201, first.content
    ids = {n: f["document_id"] for n, f in by_name(first.json()).items()}
    assert Document.objects.get(pk=ids["tea.md"]).url == f"{url}#tea.md"

    changed = TEA + b"\nOolong sits between green and black tea.\n"
    with run_commit_hooks():
        second = upload(api, make_zip([("tea.md", changed), ("coffee.txt", COFFEE)]), url=url)
    assert second.status_code == 201, second.content
    files = by_name(second.json())
    assert files["tea.md"]["status"] == "ingested" and files["tea.md"]["created"] is False
    assert files["coffee.txt"]["status"] == "unchanged"
    assert {n: f["document_id"] for n, f in files.items()} == ids
    assert Document.objects.count() == 2 and "Oolong" in Document.objects.get(pk=ids["tea.md"]).text


def test_a_zip_bomb_is_refused_from_its_header_without_inflating_it(api, fresh_store, settings):
    settings.INGEST_MAX_BYTES = 2 * 1024 * 1024
    bomb_bytes = 64 * 1024 * 1024
    archive = ff.make_zip_bomb(members={"tea.md": TEA}, bomb_name="zeros.txt", bomb_bytes=bomb_bytes)
    assert len(archive) < settings.INGEST_MAX_BYTES

    tracemalloc.start()
    try:
        response = upload(api, archive)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert response.status_code == 201, response.content
    files = by_name(response.json())
    assert files["tea.md"]["status"] == "ingested"
    assert files["zeros.txt"]["status"] == "refused" and files["zeros.txt"]["code"] == "too_large"
    assert f"{bomb_bytes:,} bytes unpacked" in files["zeros.txt"]["reason"]
    assert "INGEST_MAX_BYTES" in files["zeros.txt"]["reason"]
    assert peak < bomb_bytes // 4, peak


def test_a_file_that_inflates_past_its_declared_size_is_cut_there_and_refused(api, fresh_store):
    inflated = 32 * 1024 * 1024
    archive = make_zip([("tea.md", TEA), ("liar.txt", b"a" * inflated)])
    archive = patch_entry(archive, b"liar.txt", size=1000)  # the header now claims 1,000 bytes

    tracemalloc.start()
    try:
        response = upload(api, archive)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert response.status_code == 201, response.content
    liar = by_name(response.json())["liar.txt"]
    assert liar["status"] == "refused" and liar["code"] == "unreadable", liar
    assert peak < inflated // 4, peak


def test_the_archive_total_is_capped_as_its_files_are_read(api, fresh_store, settings):
    settings.INGEST_ZIP_MAX_BYTES = 4096
    first, second = b"First file about sandpipers. " * 80, b"Second file about herons. " * 80  # ~2 KB each
    response = upload(api, make_zip([("one.txt", first), ("two.txt", second), ("three.txt", COFFEE)]))
    assert response.status_code == 201, response.content
    files = by_name(response.json())
    assert files["one.txt"]["status"] == "ingested"
    assert files["two.txt"]["status"] == "refused" and files["two.txt"]["code"] == "archive_too_large"
    assert "INGEST_ZIP_MAX_BYTES" in files["two.txt"]["reason"]
    # what is left of the budget still takes a small file
    assert files["three.txt"]["status"] == "ingested"


def test_unsafe_names_and_links_are_refused_and_nothing_is_written_under_them(api, fresh_store, settings, tmp_path):
    settings.FILES_DIR = tmp_path / "files"
    link = zipfile.ZipInfo("docs/passwd-link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(
        [
            ("../../etc/evil.md", b"# Evil\n\nclimbing out\n"),
            ("docs/../../escape.md", b"# Escape\n\nclimbing out\n"),
            ("/abs/root.md", b"# Root\n\nabsolute\n"),
            ("C:\\Windows\\drive.md", b"# Drive\n\nabsolute\n"),
            ("bell\x07.md", b"# Bell\n\ncontrol character\n"),
            (link, b"/etc/passwd"),
            ("docs/./safe.md", TEA),
            ("docs/tea.md", COFFEE),  # the same path as the one above once normalised
        ]
    )
    response = upload(api, archive)
    assert response.status_code == 201, response.content
    files = response.json()["files"]
    assert [(f["name"], f["status"], f["code"]) for f in files] == [
        ("../../etc/evil.md", "refused", "unsafe_path"),
        ("docs/../../escape.md", "refused", "unsafe_path"),
        ("/abs/root.md", "refused", "unsafe_path"),
        ("C:/Windows/drive.md", "refused", "unsafe_path"),
        ("bell?.md", "refused", "unsafe_path"),
        ("docs/passwd-link", "refused", "symlink"),
        ("docs/safe.md", "ingested", ""),
        ("docs/tea.md", "ingested", ""),
    ]
    assert "climbs out" in files[0]["reason"] and "absolute" in files[2]["reason"].lower()
    assert Document.objects.count() == 2
    # the only files written are the two originals, under their hashes
    written = sorted(p.name for p in (tmp_path / "files").rglob("*") if p.is_file())
    assert written == sorted(Document.objects.values_list("file_sha256", flat=True))


def test_an_encrypted_file_is_refused_and_the_others_are_read(api, fresh_store):
    archive = make_zip([("secret.md", b"# Secret\n\nciphertext, really\n"), ("tea.md", TEA)])
    archive = patch_entry(archive, b"secret.md", flags=0x1)
    assert zipfile.ZipFile(io.BytesIO(archive)).getinfo("secret.md").flag_bits & 0x1
    response = upload(api, archive)
    assert response.status_code == 201, response.content
    files = by_name(response.json())
    assert files["secret.md"]["status"] == "refused" and files["secret.md"]["code"] == "encrypted"
    assert "password" in files["secret.md"]["reason"]
    assert files["tea.md"]["status"] == "ingested"


def test_zip_parts_that_are_encrypted_are_refused_not_a_server_error(api, fresh_store):
    # the parts an Office file is told by: sniffing them met zipfile's "password required"
    package = make_zip(
        [("[Content_Types].xml", b"<Types>wordprocessingml.document.main</Types>"), ("word/document.xml", b"<w/>")]
    )
    package = patch_entry(package, b"[Content_Types].xml", flags=0x1)
    file = SimpleUploadedFile("report.docx", package, content_type="application/octet-stream")
    response = api.post("/api/documents/", {"file": file, "source": "zips"})
    assert response.status_code == 400, response.content
    assert "password-protected" in error(response)["message"] and "file" in error(response)["fields"]

    # as an archive: that part is refused as encrypted, the other one for its type
    response = upload(api, package, name="parts.zip")
    assert response.status_code == 400, response.content
    files = by_name(response.json())
    assert files["[Content_Types].xml"]["code"] == "encrypted"
    assert files["word/document.xml"]["code"] == "unsupported_type"


def test_names_without_the_utf8_flag_are_read_as_utf8_or_cp437(api, fresh_store):
    utf8 = "café.md".encode()  # written UTF-8 by a tool that left the flag unset
    dos = "Ñandú.txt".encode("cp437")  # a DOS tool's code page
    archive = make_zip([("cafXX.md", TEA), ("XandX.txt", COFFEE)])
    archive = archive.replace(b"cafXX.md", utf8).replace(b"XandX.txt", dos)
    assert not any(i.flag_bits & 0x800 for i in zipfile.ZipFile(io.BytesIO(archive)).infolist())
    response = upload(api, archive)
    assert response.status_code == 201, response.content
    assert [(f["name"], f["status"]) for f in response.json()["files"]] == [
        ("café.md", "ingested"),
        ("Ñandú.txt", "ingested"),
    ]
    assert Document.objects.filter(metadata__filename="café.md").exists()


def test_member_labels_normalise_separators_and_dots():
    assert member_label(zipfile.ZipInfo("a\\b\\c.md")) == ("a/b/c.md", None)
    assert member_label(zipfile.ZipInfo("./a//b.md")) == ("a/b.md", None)
    assert member_label(zipfile.ZipInfo("a/../b.md"))[1] is not None
    assert member_label(zipfile.ZipInfo("x" * 600 + ".md"))[1] == "The name is longer than 500 characters."


def test_too_many_entries_is_a_400_naming_file_before_the_directory_is_read(api, settings, monkeypatch):
    settings.INGEST_ZIP_MAX_FILES = 5
    archive = make_zip([(f"n{i}.txt", f"note {i}".encode()) for i in range(6)])

    def unread(*args, **kwargs):
        raise AssertionError("the directory was read")

    with monkeypatch.context() as patched:
        patched.setattr(zipfile, "ZipFile", unread)
        response = upload(api, archive)
    assert response.status_code == 400, response.content
    body = error(response)
    assert body["code"] == "too_many_files" and "file" in body["fields"]
    assert "6 entries" in body["message"] and "INGEST_ZIP_MAX_FILES" in body["message"]
    assert Document.objects.count() == 0

    settings.INGEST_ZIP_MAX_FILES = 6
    assert upload(api, archive).status_code == 201


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04" + b"\x00" * 200,  # a local header and nothing after it
        b"just some text, named .zip",
        make_zip([("tea.md", TEA)])[:-30],  # cut short: no end record
    ],
    ids=["garbage", "text", "truncated"],
)
def test_a_corrupt_archive_is_a_400_naming_file_and_loses_nothing(api, fresh_store, run_commit_hooks, data):
    with run_commit_hooks():
        stored = upload(api, make_zip([("tea.md", TEA)]))
    assert stored.status_code == 201
    response = upload(api, data, name="broken.zip")
    assert response.status_code == 400, response.content
    body = error(response)
    assert body["code"] == "invalid_archive" and list(body["fields"]) == ["file"]
    assert "not a readable zip archive" in body["message"]
    assert Document.objects.count() == 1 and keyword_hits(api, "quillbrook")


def test_every_file_refused_is_a_400_with_the_report(api, fresh_store):
    response = upload(api, make_zip([("a.exe", b"MZ\x90\x00" * 50), ("b.txt", b""), (".hidden", b"x")]))
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"]["code"] == "archive_refused" and "file" in body["error"]["fields"]
    assert [f["status"] for f in body["files"]] == ["refused", "refused"]
    assert body["totals"]["refused"] == 2 and body["totals"]["skipped"] == 1
    assert Document.objects.count() == 0

    empty = upload(api, make_zip([("folder/", b""), ("__MACOSX/._x", b"x")]))
    assert empty.status_code == 400 and "no file to ingest" in empty.json()["error"]["message"]


def test_a_docx_named_zip_is_one_document_and_zip_bytes_named_otherwise_are_an_archive(api, fresh_store):
    response = upload(api, docx("quincewood"), name="orchard.zip")
    assert response.status_code == 201, response.content
    assert response.json()["mime_type"].endswith("wordprocessingml.document")

    file = SimpleUploadedFile("export", make_zip([("tea.md", TEA)]), content_type="application/octet-stream")
    response = api.post("/api/documents/", {"file": file, "source": "zips"})
    assert response.status_code == 201, response.content
    assert response.json()["files"][0]["name"] == "tea.md"


def test_an_archive_takes_no_title_and_gives_its_metadata_to_every_file(api, fresh_store):
    archive = make_zip([("tea.md", TEA), ("coffee.txt", COFFEE)])
    response = upload(api, archive, title="One title")
    assert response.status_code == 400 and "title" in error(response)["fields"]
    response = upload(api, archive, metadata='{"team": "kitchen"}')
    assert response.status_code == 201, response.content
    assert all(
        Document.objects.get(pk=f["document_id"]).metadata["team"] == "kitchen" for f in response.json()["files"]
    )


# --- manage.py ingest ----------------------------------------------------------------------------


def test_ingest_command_unpacks_a_zip_with_a_line_per_file(fresh_store, tmp_path, run_commit_hooks):
    path = tmp_path / "bundle.zip"
    path.write_bytes(
        make_zip([("tea.md", TEA), ("docs/orchard.docx", docx("pearwhistle")), ("bad.exe", b"MZ\x90\x00" * 50)])
    )
    (tmp_path / "plain.txt").write_bytes(COFFEE)
    out, err = StringIO(), StringIO()
    with run_commit_hooks():
        call_command("ingest", str(tmp_path), "--source", "cmd", stdout=out, stderr=err)
    lines = out.getvalue()
    assert f"{path}: tea.md: ingested as new document" in lines
    assert f"{path}: docs/orchard.docx: ingested as new document" in lines
    assert f"{path}: bad.exe: refused (unsupported_type)" in err.getvalue()
    assert f"{path}: 3 files: 2 ingested, 0 unchanged, 1 refused; 0 skipped" in lines
    assert "3 created, 0 updated, 0 unchanged, 1 failed" in lines
    document = Document.objects.get(metadata__filename="docs/orchard.docx")
    assert document.url == f"{path.resolve().as_uri()}#docs/orchard.docx"
    assert Chunk.objects.filter(document=document, index_status="indexed").exists()

    out = StringIO()
    with run_commit_hooks():
        call_command("ingest", str(path), "--source", "cmd", stdout=out, stderr=StringIO())
    assert f"{path}: tea.md: unchanged (document" in out.getvalue()
    assert "0 created, 0 updated, 2 unchanged, 1 failed" in out.getvalue()
    assert Document.objects.count() == 3


def test_ingest_command_exits_non_zero_only_when_nothing_could_be_ingested(transactional_db, manage, tmp_path):
    from django.db import connection

    db = connection.settings_dict
    env = {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "TASKS_BACKEND": "database",
        "FILES_DIR": str(tmp_path / "files"),
    }
    bad = tmp_path / "bad.zip"
    bad.write_bytes(make_zip([("a.exe", b"MZ\x90\x00" * 50), ("nested.zip", nested_zip())]))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")

    result = manage("ingest", str(bad), str(broken), "--source", "cmd", "--no-embed", env=env)
    assert result.returncode != 0
    assert "every input failed" in result.stderr and "Traceback" not in result.stderr
    assert f"{bad}: nested.zip: refused (nested_archive)" in result.stderr
    assert f"{broken}: The file is not a readable zip archive" in result.stderr

    good = tmp_path / "good.zip"
    good.write_bytes(make_zip([("tea.md", TEA)]))
    result = manage("ingest", str(bad), str(good), "--source", "cmd", "--no-embed", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{good}: tea.md: ingested as new document" in result.stdout

    help_text = manage("ingest", "--help").stdout
    assert "only if nothing could be ingested" in " ".join(help_text.split())
