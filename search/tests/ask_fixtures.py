"""A small real knowledge base for the answer tests: ingested with the real service and embedded.

Import the fixture into a test module: ``from search.tests.ask_fixtures import knowledge_base_fixture  # noqa: F401``
(defined under another name than the one tests ask for, so the import does not shadow the argument).
"""

from __future__ import annotations

import json

import pytest

from documents.models import Source
from documents.services import document_ingest

DOCUMENTS = {
    "tea": (
        "handbook",
        "Green tea",
        "https://example.com/tea",
        "Green tea is made from the leaves of the Camellia sinensis plant. After picking, the leaves are "
        "steamed or pan-fired within hours to stop oxidation, which keeps them green. Black tea, by contrast, "
        "is rolled and left to oxidise fully before it is dried. Green tea is best brewed with water at about "
        "80 degrees Celsius for two to three minutes. Boiling water makes green tea bitter because it extracts "
        "too many tannins.",
    ),
    "bees": (
        "handbook",
        "How bees make honey",
        "https://example.com/bees",
        "# How bees make honey\n\n## Foraging\n\nHoney bees make honey from the nectar of flowers. Worker bees "
        "collect nectar and carry it back to the hive in their honey stomach.\n\n## In the hive\n\nHouse bees "
        "add enzymes to the nectar and deposit it into wax cells. The bees fan their wings to evaporate water "
        "until the honey is thick enough. Finally they cap each cell with wax to keep the honey for winter.",
    ),
    "bicycle": (
        "workshop",
        "Fixing a flat bicycle tyre",
        "https://example.com/bicycle",
        "To fix a flat tyre, first remove the wheel from the bicycle. Use tyre levers to lift one side of the "
        "tyre off the rim. Pull out the inner tube and find the puncture by inflating it and listening for "
        "escaping air. Patch the hole or fit a new tube, then refit the tyre and inflate it to the pressure "
        "printed on the sidewall. Check the chain every month and oil it when it looks dry.",
    ),
}

OFF_TOPIC_QUESTION = "Who won the football world cup in 2018?"


@pytest.fixture(name="knowledge_base")
def knowledge_base_fixture(db, fresh_store, run_commit_hooks):
    """The DOCUMENTS, ingested and embedded: ``{key: Document}``."""
    documents = {}
    with run_commit_hooks():
        for key, (source_name, title, url, text) in DOCUMENTS.items():
            source, _ = Source.objects.get_or_create(name=source_name)
            mime = "text/markdown" if text.startswith("#") else "text/plain"
            documents[key] = document_ingest(source=source, title=title, url=url, text=text, mime=mime).document
    return documents


def ingest_live(**documents) -> dict:
    """Ingest outside a test transaction (live_server tests): on_commit callbacks run for real."""
    result = {}
    for key, (source_name, title, url, text) in (documents or DOCUMENTS).items():
        source, _ = Source.objects.get_or_create(name=source_name)
        mime = "text/markdown" if text.startswith("#") else "text/plain"
        result[key] = document_ingest(source=source, title=title, url=url, text=text, mime=mime).document
    return result


def sse_events(response) -> list[tuple[str, dict]]:
    """A StreamingHttpResponse of server-sent events as ``[(event, data), ...]``."""
    raw = b"".join(response.streaming_content).decode()
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        events.append((name, json.loads("\n".join(data))))
    return events
