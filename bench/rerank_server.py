"""A local rerank endpoint for `manage.py evaluate --rerank` on a machine with no rerank model.

Serves the tests' endpoints (search/tests/rerank_server.py): Cohere's protocol at /v1/rerank and
TEI's at /rerank, scoring with the project's own embedder as a bi-encoder (cosine of the query's
and each passage's vectors). A real cross-encoder would score differently; this measures the
rerank stage's plumbing and latency, and what reordering the head of hybrid results by the
semantic score alone does.

    .venv/bin/python bench/rerank_server.py &       # prints the two URLs
    RERANK_URL=http://127.0.0.1:PORT/v1/rerank .venv/bin/python manage.py evaluate \\
        ../shared/datasets/scifact-train --split train --mode hybrid --rerank --json bench/results/rerank_eval.json
"""

from __future__ import annotations

import os
import signal
import sys

import harness  # noqa: F401  (puts the project on sys.path)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")


def main() -> None:
    import django

    django.setup()
    from ragsite.tests.openai_server import OpenAICompatibleServer
    from search.tests.rerank_server import COHERE_PATH, TEI_PATH, cohere_handler, endpoint, tei_handler

    server = OpenAICompatibleServer().start()
    server.route(COHERE_PATH, cohere_handler)
    server.route(TEI_PATH, tei_handler)
    print(f"cohere: {endpoint(server, COHERE_PATH)}", flush=True)
    print(f"tei:    {endpoint(server, TEI_PATH)}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
