"""Answers with citations: retrieve, number the best passages, answer from them, check the citations.

Modules: ``retrieval`` (search, relevance, passages within the token budget), ``passages``
(what a provider is given), ``llm`` (OpenAI-compatible chat) and ``extractive`` (offline)
providers behind ``providers.AnswerProvider``, ``citations`` (marker checking, streamed too),
``generate`` (the answer as events, the provider chosen by settings) and ``errors``.

One path for the API, the page and any other caller:

1. ``answer_retrieve`` runs ``chunk_search`` (so answers see what search shows), drops passages
   that are not relevant (below), removes duplicate texts, and numbers what fits in
   ``ASK_CONTEXT_TOKENS`` as passages [1]..[n] (rank order; the last one may be cut to fit).
2. A provider answers from those passages only: ``OpenAIChatProvider`` (any OpenAI-compatible
   chat completions server, when ``LLM_MODEL`` is set) or ``ExtractiveProvider`` (offline, the
   default: the question's best sentences, each cited).
3. ``CitationFilter`` rewrites the answer's markers so every ``[n]`` names a passage that was
   given: ``[1, 3]`` becomes ``[1][3]``, a number outside 1..n is dropped (an LLM may invent
   ``[9]`` or cite from its own memory). It works on a stream too, holding back a marker cut
   across two chunks until it is complete.

Relevance, i.e. when to answer "I could not find this in the knowledge base." without calling
any provider, is ``search.relevance.passage_relevant`` on every retrieved passage, in every mode:
its cosine to the (standalone) query reaches ``ASK_MIN_SIMILARITY`` (0.375), or
``ASK_LOW_SIMILARITY_FACTOR`` (0.8) of it with ``ASK_COVERAGE_WITH_SIMILARITY`` (0.6) of the
query's content words in the passage; with the embedder down, ``ASK_COVERAGE_ALONE`` (0.5) of the
words. Chosen by ``bench/not_found_calibration.py`` on SciFact train (809 claims, 42 off-topic
questions) and a newcomer's 12 short documents (24 answerable, 24 off-topic): the worst error of
any mode and set is 4.8% off-topic answered / 4.0% answerable refused, where one cosine threshold
and "any keyword match" answered 24-98% of off-topic questions
(bench/results/not_found.md). The numbers are the local model's: another embedding model scales
cosines differently and needs its own calibration.
"""
