"""The search page in a real browser: Debian's headless Chromium, driven by Playwright, against a live server.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``: the
browser is the system one). Screenshots go to test-artifacts/ at the project root.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from search.answers.generate import NOT_FOUND_ANSWER
from search.tests.ask_fixtures import OFF_TOPIC_QUESTION, ingest_live

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000  # the first answer loads the model; CI machines are shared
# The answer's meta line once it is complete (search.views.answer_label; app.js says the same).
ANSWERED = re.compile(r"^(Quoted from the sources|Answered by|Nothing found in the sources)")
QUOTED = "Quoted from the sources (no language model configured: set LLM_MODEL for written answers) · "


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"Chromium is not installed ({CHROMIUM} missing): apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("The playwright Python package is not installed: pip install playwright")
    # Playwright's sync API keeps an asyncio loop in this thread, so Django would refuse the
    # test's own database calls (fixtures, teardown) as "async". Nothing Django runs on that
    # loop; the live server answers from its own thread.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site(live_server, fresh_store, settings, django_user_model):
    """The live server with the knowledge base ingested (commits for real, so vectors are made) and a user."""
    settings.SEARCH_PUBLIC = False
    documents = ingest_live()
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    ARTIFACTS.mkdir(exist_ok=True)
    return live_server.url, documents


def log_in(page, url: str) -> None:
    page.goto(url + "/")
    assert "/login/?next=/" in page.url  # anonymous visitors are sent to the app's sign-in page first
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("#sign-in-button")
    page.wait_for_url(re.compile(r".*/$"))
    assert page.locator("#q").is_visible()


def search(page, query: str, mode: str) -> None:
    page.fill("#q", query)
    page.check(f"input[name=mode][value={mode}]")
    page.click("#search-button")
    page.wait_for_selector(".results")


def ask_and_wait(page, question: str):
    page.fill("#q", question)
    page.click("#ask-button")
    meta = page.locator("#answer-meta")
    try:
        meta.filter(has_text=ANSWERED).wait_for(timeout=TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failed-ask.png"), full_page=True)
        raise AssertionError(
            f"no answer; errors: {page.locator('#errors').inner_text()!r}, meta: {meta.inner_text()!r}"
        ) from None
    return page.locator("#answer-text")


def assert_highlighted_in_view(page, n: str) -> None:
    passage = page.locator(f"#passage-{n}")
    page.wait_for_function(
        """(id) => {
            const el = document.getElementById(id);
            const box = el.getBoundingClientRect();
            return el.classList.contains('is-highlighted') && box.top >= 0 && box.bottom <= window.innerHeight;
        }""",
        arg=f"passage-{n}",
        timeout=10_000,
    )
    assert passage.evaluate("el => document.activeElement === el")
    # The title opens the document view at the cited chunk; the document's URL is linked beside it.
    assert re.match(r"/documents/\d+/\?chunk=[0-9a-f-]{36}#hit$", passage.locator("h4 a").get_attribute("href"))
    assert passage.locator("a.url").get_attribute("href").startswith("https://example.com/")


def test_search_in_each_mode_ask_and_follow_a_citation(browser, site):
    url, _ = site
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Any failed request of the page or its assets, its icon included.
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
    log_in(page, url)

    for mode in ("keyword", "semantic", "hybrid"):
        search(page, "how do bees make honey", mode)
        first = page.locator(".result").first
        assert first.locator("h3 a").inner_text() == "How bees make honey"
        assert re.match(r"/documents/\d+/\?chunk=[0-9a-f-]{36}#hit$", first.locator("h3 a").get_attribute("href"))
        assert first.locator("a.url").get_attribute("href") == "https://example.com/bees"
        assert re.search(
            rf"Results 1\u2013\d+ of \d+\s+· {mode} · \d+ ms", page.locator("#results-heading").inner_text()
        )
        if mode != "semantic":
            assert first.locator(".snippet mark").count() >= 1
        assert page.locator(f"input[name=mode][value={mode}]").is_checked()

    answer = ask_and_wait(page, "How do bees make honey?")
    assert "ask=live" not in page.url and "&conversation=" in page.url  # a reload re-opens it, not re-asks
    assert "Honey bees make honey from the nectar of flowers" in answer.inner_text()
    assert page.locator("#answer-meta").inner_text().startswith(QUOTED)
    assert page.locator(".result").count() >= 1  # the results for the question are shown below
    assert page.locator("#results-for").is_hidden()  # and they are the answer's own: no label
    citation = page.locator("#answer-text a.cite").first
    n = citation.get_attribute("data-n")
    page.screenshot(path=str(ARTIFACTS / "search-answer-desktop.png"), full_page=True)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    citation.click()
    assert_highlighted_in_view(page, n)
    page.screenshot(path=str(ARTIFACTS / "search-citation-desktop.png"))
    assert errors == []
    context.close()


def test_on_a_phone_the_page_fits_and_asking_works(browser, site):
    url, _ = site
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, url)
    answer = ask_and_wait(page, "How hot should the water be for green tea?")
    assert "80 degrees Celsius" in answer.inner_text()
    # Nothing sticks out sideways on a narrow screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "search-answer-phone.png"), full_page=True)
    page.locator("#answer-text a.cite").first.tap()
    assert_highlighted_in_view(page, "1")
    context.close()


def test_a_streamed_llm_answer_with_a_bogus_citation(browser, site, settings, openai_server):
    url, _ = site
    settings.LLM_MODEL = "test-chat-model"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.LLM_MAX_RETRIES = 0
    openai_server.chat_answer = "Worker bees bring nectar home [1]; the hive sells it [9]. House bees dry it [1]."
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, url)
    assert page.locator("#search-form").get_attribute("data-streams") == "true"
    answer = ask_and_wait(page, "How do bees make honey?")
    assert answer.inner_text() == "Worker bees bring nectar home [1]; the hive sells it. House bees dry it [1]."
    assert page.locator("#answer-text a.cite").count() == 2
    assert page.locator("#answer-meta").inner_text().startswith("Answered by test-chat-model · ")
    assert openai_server.requests_to("/v1/chat/completions")[0].json["stream"] is True
    page.locator("#answer-text a.cite").first.click()
    assert_highlighted_in_view(page, "1")
    page.screenshot(path=str(ARTIFACTS / "search-streamed-answer.png"), full_page=True)

    openai_server.fail_next("/v1/chat/completions", status=429)
    page.fill("#q", "How do bees make honey?")
    page.click("#ask-button")
    page.locator("#errors").filter(has_text="rate limiting").wait_for()
    context.close()


def test_errors_and_not_found_show_in_the_page(browser, site):
    url, _ = site
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, url)

    page.fill("#q", "")
    page.click("#ask-button")
    assert page.locator("#errors").inner_text() == "Type a question first."
    for blank in ("", "   "):
        page.fill("#q", blank)
        page.click("#search-button")
        assert page.locator("#errors").inner_text() == "Type something to search for."
        assert page.url == url + "/"  # said in the page, without sending the form

    page.goto(url + "/?q=" + "x" * 1500)
    assert "The query is longer than" in page.locator("#errors").inner_text()

    answer = ask_and_wait(page, OFF_TOPIC_QUESTION)
    assert answer.inner_text() == NOT_FOUND_ANSWER
    assert page.locator("#passages li").count() == 0
    page.screenshot(path=str(ARTIFACTS / "search-not-found.png"), full_page=True)
    context.close()


def test_a_follow_up_is_asked_under_the_answer_and_past_conversations_reopen(browser, site):
    url, _ = site
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, url)
    ask_and_wait(page, "How do bees make honey?")
    follow_up = page.locator("#follow-up")
    follow_up.wait_for(state="visible")
    page.fill("#followup", "what do they add in the hive?")
    follow_up.locator("button").click()
    turn = page.locator("#thread .turn").first
    turn.locator(".meta").filter(has_text=ANSWERED).wait_for(timeout=TIMEOUT_MS)
    assert turn.locator(".meta").inner_text().startswith(QUOTED)
    # The results below are still the first question's, and say so.
    assert page.locator("#results-for").is_visible()
    assert page.locator("#results-for").inner_text() == "Results for: How do bees make honey?"
    assert turn.locator(".turn-question").inner_text() == "what do they add in the hive?"
    assert "Searched for: what do they add in the hive?" in turn.locator(".searched").inner_text()
    assert "bees" in turn.locator(".searched").inner_text()
    assert "enzymes" in turn.locator(".answer-text").inner_text()
    # Its citations link to its own sources, not the first answer's.
    cite = turn.locator("a.cite").first
    target = cite.get_attribute("data-target")
    assert target.startswith("turn-1-passage-")
    cite.click()
    assert page.locator(f"#{target}").evaluate("el => el.classList.contains('is-highlighted')")
    page.screenshot(path=str(ARTIFACTS / "conversation-desktop.png"), full_page=True)
    # The conversation is listed and reopens with both turns.
    page.locator("#new-conversation").click()
    assert page.locator("#thread .turn").count() == 0
    page.locator("#past summary").click()
    entry = page.locator("#past-conversations button").first
    entry.wait_for()
    assert entry.inner_text() == "How do bees make honey? (2)"
    entry.click()
    page.locator("#thread .turn").nth(1).wait_for()
    assert page.locator("#thread .turn .turn-question").all_inner_texts() == [
        "How do bees make honey?",
        "what do they add in the hive?",
    ]
    assert page.locator("#thread .turn .meta").first.inner_text().startswith("Quoted from the sources")
    context.close()


def test_a_query_too_long_for_a_link_is_refused_by_search_and_asked_in_place(browser, site):
    from search.views import MAX_FORM_URL_CHARS

    url, _ = site
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, url)
    search(page, "bees", "hybrid")
    results_url = page.url
    # As many characters as the box takes, in a script of 9 percent-encoded bytes a character:
    # far longer than a request line gunicorn reads (it would answer a bare "414 URI Too Long").
    question = ("蜜蜂如何酿造蜂蜜" * 200)[:1000]
    assert page.locator("#q").get_attribute("maxlength") == "1000"
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    page.fill("#q", question)
    page.click("#search-button")
    fit = (MAX_FORM_URL_CHARS - len("/?q=&mode=hybrid&source=")) // 9
    assert page.locator("#errors").inner_text() == (
        f"The query is too long to search: at most {fit} characters in this script (it has 1000). "
        "Shorten it, or press Ask."
    )
    assert page.url == results_url and not [u for u in sent if "?q=" in u]

    # Ask posts the question to /api/ask/, where a URL's length does not matter: it is answered in place.
    answer = ask_and_wait(page, question)
    assert answer.is_visible() and page.locator("#errors").is_hidden()
    assert not [u for u in sent if "?q=" in u]
    assert page.locator("#results-for").is_visible()
    assert page.locator("#results-for").inner_text() == "Results for: bees"  # the results shown are not for it
    context.close()


def conversations(page, url: str) -> list[dict]:
    """The signed-in user's conversations, through the API with the page's own session."""
    response = page.request.get(url + "/api/conversations/")
    assert response.ok
    return response.json()


def test_reloading_or_coming_back_reopens_the_answer_without_asking_again(browser, site):
    url, _ = site
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, url)
    answer = ask_and_wait(page, "How do bees make honey?")
    assert "Honey bees make honey from the nectar of flowers" in answer.inner_text()
    [conversation] = conversations(page, url)
    # The address now names the conversation, not a question to ask.
    assert "ask=live" not in page.url
    assert page.url.endswith(f"?q=How+do+bees+make+honey%3F&mode=hybrid&source=&conversation={conversation['id']}")

    page.reload()
    turn = page.locator("#thread .turn").first
    turn.locator(".meta").filter(has_text=ANSWERED).wait_for()
    assert turn.locator(".turn-question").inner_text() == "How do bees make honey?"
    assert "Honey bees make honey from the nectar of flowers" in turn.locator(".answer-text").inner_text()
    assert page.locator("#results-for").is_visible()
    assert page.locator("#results-for").inner_text() == "Results for: How do bees make honey?"
    assert page.locator(".result").count() >= 1
    assert [c["id"] for c in conversations(page, url)] == [conversation["id"]]
    page.screenshot(path=str(ARTIFACTS / "conversation-reopened.png"), full_page=True)

    # To a source and back: the same, still one conversation of one turn.
    page.locator(".result h3 a").first.click()
    page.wait_for_selector("#doc-title")
    page.go_back()
    page.locator("#thread .turn .meta").filter(has_text=ANSWERED).wait_for()
    assert [(c["id"], c["turn_count"]) for c in conversations(page, url)] == [(conversation["id"], 1)]

    # New conversation: the address forgets it.
    page.locator("#new-conversation").click()
    assert "conversation=" not in page.url
    assert errors == []
    context.close()


def test_someone_elses_conversation_in_the_address_is_not_shown(browser, site, django_user_model):
    url, _ = site
    django_user_model.objects.create_user("other", password="pw")
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, url)
    ask_and_wait(page, "How do bees make honey?")
    address = page.url
    [conversation] = conversations(page, url)

    other = browser.new_context(viewport=DESKTOP).new_page()
    other.goto(url + "/login/")
    other.fill("#id_username", "other")
    other.fill("#id_password", "pw")
    other.click("#sign-in-button")
    other.wait_for_url(re.compile(r".*/$"))
    other.goto(address)
    other.locator("#errors").filter(has_text="That conversation is not there").wait_for()
    assert other.locator("#thread .turn").count() == 0
    assert other.request.get(url + f"/api/conversations/{conversation['id']}/").status == 404
    assert conversations(other, url) == []
    other.context.close()
    context.close()
