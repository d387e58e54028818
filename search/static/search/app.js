// ragsite search page: Ask with streamed answers and clickable citations. Plain JavaScript, no build step.
// Search itself is a server-rendered GET form; this file only enhances "Ask" and the citation links.
(function () {
  "use strict";

  const form = document.getElementById("search-form");
  const answerSection = document.getElementById("answer");
  if (!form || !answerSection) return;

  // A view is where one turn of the conversation renders: the first answer uses the page's own
  // elements (they also hold a server-rendered answer), follow-ups get an <article> each.
  const firstView = {
    section: answerSection,
    text: document.getElementById("answer-text"),
    meta: document.getElementById("answer-meta"),
    searched: document.getElementById("answer-searched"),
    warnings: document.getElementById("answer-warnings"),
    heading: document.getElementById("passages-heading"),
    list: document.getElementById("passages"),
    prefix: "passage-",
  };
  let view = firstView;
  const thread = document.getElementById("thread");
  const followUp = document.getElementById("follow-up");
  const newConversation = document.getElementById("new-conversation");
  const pastList = document.getElementById("past-conversations");
  const errorBox = document.getElementById("errors");
  let conversationId = "";
  let turnCount = 0;
  const buttons = form.querySelectorAll("button");
  const reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  // --- Search and Ask send the form as a GET: Ask as ask=live, so results and URL match the question,
  // and the answer then streams in. A query the box accepts can still make a longer URL than the server
  // reads (a non-Latin letter is 6 to 9 characters percent-encoded): then Search says so in the page,
  // and Ask asks in place (it posts to /api/ask/, which has no such limit), under the results shown.
  form.addEventListener("submit", function (event) {
    const submitter = event.submitter;
    const asking = Boolean(submitter && submitter.name === "ask");
    const query = form.elements.q.value;
    if (!query.trim()) {
      // The server says the same of an empty search (search.views.EMPTY_SEARCH).
      event.preventDefault();
      showError(asking ? "Type a question first." : "Type something to search for.");
      form.elements.q.focus();
      return;
    }
    const params = new URLSearchParams(new FormData(form));
    if (asking) params.set("ask", "live");
    const url = form.getAttribute("action") + "?" + params.toString();
    if (url.length <= maxUrlLength()) {
      if (!asking) return; // the browser sends the form itself, to the same URL
      event.preventDefault();
      window.location.assign(url);
      return;
    }
    event.preventDefault();
    if (!asking) {
      showError(tooLongToSearch(query, url.length));
      form.elements.q.focus();
      return;
    }
    startOver();
    labelResults();
    ask({ question: query.trim(), mode: form.elements.mode.value, source: form.elements.source.value })
      .catch(function () { fail("The answer failed. Try again."); });
  });

  function maxUrlLength() {
    return parseInt(form.dataset.maxUrl, 10) || 8000; // search.views.MAX_FORM_URL_CHARS
  }

  function encodedLength(text) {
    return new URLSearchParams({ q: text }).toString().length - 2;
  }

  // How many characters of this query would fit, counted as the API counts them (code points).
  function tooLongToSearch(query, urlLength) {
    const characters = Array.from(query);
    let room = maxUrlLength() - (urlLength - encodedLength(query));
    let fit = 0;
    for (const character of characters) {
      room -= encodedLength(character);
      if (room < 0) break;
      fit += 1;
    }
    return "The query is too long to search: at most " + fit + " characters in this script (it has " +
      characters.length + "). Shorten it, or press Ask.";
  }

  // The results below were searched for the page's query: say so once an answer on screen is for another question.
  function labelResults() {
    const label = document.getElementById("results-for");
    if (label) label.hidden = false;
  }

  // --- Citations: [n] scrolls to passage n and highlights it (also for server-rendered answers).
  document.addEventListener("click", function (event) {
    const link = event.target.closest && event.target.closest("a.cite");
    if (!link) return;
    event.preventDefault();
    highlightPassage(link.dataset.target || "passage-" + link.dataset.n);
  });

  function highlightPassage(n) {
    const target = document.getElementById(n);
    if (!target) return;
    document.querySelectorAll(".passage.is-highlighted").forEach(function (el) { el.classList.remove("is-highlighted"); });
    target.classList.add("is-highlighted");
    target.scrollIntoView({ behavior: reduceMotion ? "auto" : "smooth", block: "center" });
    target.focus({ preventScroll: true });
    if (history.replaceState) history.replaceState(null, "", "#" + n);
  }

  // --- Asking -------------------------------------------------------------------------------

  async function ask(request) {
    const streams = form.dataset.streams === "true";
    const body = { question: request.question, mode: request.mode, stream: streams };
    if (request.source) body.source = request.source;
    if (conversationId) body.conversation = conversationId;
    resetAnswer();
    setBusy(true);
    let response;
    try {
      response = await fetch(form.dataset.askUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "Accept": streams ? "text/event-stream, application/json" : "application/json",
          "X-CSRFToken": csrfToken(),
        },
        body: JSON.stringify(body),
      });
    } catch (err) {
      fail("The server could not be reached. Check your connection and try again.");
      return;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || type.indexOf("text/event-stream") === -1) {
      let data = null;
      try { data = await response.json(); } catch (err) { /* not JSON: a proxy error page */ }
      if (!response.ok) {
        fail(errorMessage(data, response.status));
        return;
      }
      renderPassages(data.citations || []);
      renderAnswer(data.answer || "");
      finish(Object.assign({ question_asked: request.question }, data));
      return;
    }
    try {
      await readEvents(response, {
        citations: function (data) {
          providerName = data.provider || "";
          modelName = data.model || "";
          renderPassages(data.citations || []);
        },
        delta: function (data) { appendAnswer(data.text || ""); },
        done: function (data) { renderAnswer(data.answer || currentAnswer); finish(Object.assign({ question_asked: request.question }, data)); },
        error: function (data) { fail(errorMessage(data, data && data.status)); },
      });
    } catch (err) {
      fail("The answer was cut off. Try again.");
    }
  }

  // Server-sent events over fetch: "event: name" and "data: {json}" lines, a blank line ends each event.
  async function readEvents(response, handlers) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finished = false;
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const raw = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        raw.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) name = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
        });
        const handler = handlers[name];
        if (!handler) continue;
        handler(data.length ? JSON.parse(data.join("\n")) : {});
        if (name === "done" || name === "error") finished = true;
      }
    }
    if (!finished) throw new Error("stream ended early");
  }

  // --- Rendering ----------------------------------------------------------------------------

  let currentAnswer = "";
  let providerName = "";
  let modelName = "";
  let knownPassages = new Set();

  function resetAnswer() {
    currentAnswer = "";
    knownPassages = new Set();
    view.section.hidden = false;
    view.text.textContent = "";
    view.meta.textContent = "Searching the knowledge base…";
    view.searched.textContent = "";
    view.warnings.textContent = "";
    view.list.textContent = "";
    view.heading.hidden = true;
    hideError();
  }

  function appendAnswer(text) {
    currentAnswer += text;
    renderAnswer(currentAnswer);
    view.meta.textContent = "Answering…";
  }

  // The answer is untrusted text: built with text nodes; only [n] of a given passage becomes a link.
  function renderAnswer(text) {
    currentAnswer = text;
    const paragraph = document.createElement("p");
    const pattern = /\[(\d{1,4})\]/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      paragraph.appendChild(document.createTextNode(text.slice(last, match.index)));
      if (knownPassages.has(match[1])) {
        const link = document.createElement("a");
        link.className = "cite";
        link.href = "#" + view.prefix + match[1];
        link.dataset.n = match[1];
        link.dataset.target = view.prefix + match[1];
        link.setAttribute("aria-label", "Source " + match[1]);
        link.textContent = "[" + match[1] + "]";
        paragraph.appendChild(link);
      } else {
        paragraph.appendChild(document.createTextNode(match[0]));
      }
      last = pattern.lastIndex;
    }
    paragraph.appendChild(document.createTextNode(text.slice(last)));
    view.text.replaceChildren(paragraph);
  }

  function renderPassages(citations) {
    view.list.textContent = "";
    citations.forEach(function (c) {
      knownPassages.add(String(c.n));
      const item = document.createElement("li");
      item.className = "passage";
      item.id = view.prefix + c.n;
      item.dataset.n = c.n;
      item.tabIndex = -1;
      const number = document.createElement("span");
      number.className = "n";
      number.textContent = "[" + c.n + "]";
      const card = document.createElement("div");
      card.className = "card";
      // The title opens the document view at the cited chunk; the document's own URL is linked beside it.
      const title = document.createElement("h4");
      const open = document.createElement("a");
      open.href = form.dataset.documentsUrl + encodeURIComponent(c.document_id) + "/?chunk=" + encodeURIComponent(c.chunk_id) + "#hit";
      open.textContent = c.title || "Untitled";
      title.appendChild(open);
      const where = document.createElement("p");
      where.className = "where";
      where.textContent = [c.source].concat((c.heading_path || []).filter(function (h) { return h && h !== c.title; })).join(" › ");
      if (/^https?:\/\//i.test(c.url || "")) {
        const link = document.createElement("a");
        link.className = "url";
        link.href = c.url;
        link.rel = "noopener noreferrer";
        link.textContent = c.url;
        where.append(" · ", link);
      }
      const snippet = document.createElement("p");
      snippet.className = "snippet";
      snippet.appendChild(safeSnippet(c.snippet || ""));
      card.append(title, where, snippet);
      item.append(number, card);
      view.list.appendChild(item);
    });
    view.heading.hidden = citations.length === 0;
    view.meta.textContent = citations.length ? "Answering…" : "";
  }

  function finish(data) {
    setBusy(false);
    const cited = new Set((data.cited || (data.citations || []).filter(function (c) { return c.cited; }).map(function (c) { return c.n; })).map(String));
    view.list.querySelectorAll(".passage").forEach(function (item) {
      const n = item.dataset.n;
      const isCited = cited.has(n);
      item.classList.toggle("uncited", !isCited);
      if (!isCited && !item.querySelector(".not-cited")) {
        const note = document.createElement("span");
        note.className = "not-cited";
        note.textContent = " · not cited";
        item.querySelector(".where").appendChild(note);
      }
    });
    const parts = [answerLabel(data.provider || providerName, data.model || modelName, data.found !== false)];
    if (typeof data.took_ms === "number") parts.push(Math.round(data.took_ms) + " ms");
    view.meta.textContent = parts.join(" · ");
    view.warnings.textContent = "";
    (data.warnings || []).forEach(function (w) {
      const li = document.createElement("li");
      li.textContent = w;
      view.warnings.appendChild(li);
    });
    if (data.status === "not_found" && (data.closest || []).length) {
      const li = document.createElement("li");
      li.textContent = "The documents do not seem to cover this. Closest: " +
        data.closest.map(function (c) { return c.title || "Untitled"; }).join(", ") + ".";
      view.warnings.appendChild(li);
    }
    if (data.searched_for && data.searched_for !== data.question_asked) {
      view.searched.textContent = "Searched for: " + data.searched_for;
    }
    if (data.conversation) {
      conversationId = data.conversation;
      followUp.hidden = false;
      newConversation.hidden = false;
      rememberConversation(conversationId);
    }
  }

  // The address re-opens the conversation shown instead of asking again (ask=live): reloading the
  // page or coming back to it from a source adds no duplicate. The search part stays (the results
  // below), unless it would make the address too long to send.
  function rememberConversation(id) {
    if (!window.history || !history.replaceState) return;
    const params = new URLSearchParams(window.location.search);
    params.delete("ask");
    if (id) params.set("conversation", id); else params.delete("conversation");
    let url = window.location.pathname + (params.toString() ? "?" + params.toString() : "");
    if (id && url.length > maxUrlLength() + 64) url = window.location.pathname + "?conversation=" + encodeURIComponent(id);
    if (url !== window.location.pathname + window.location.search) history.replaceState(null, "", url);
  }

  // Where the answer came from, in words (search.views.answer_label says the same in the no-JS page).
  function answerLabel(provider, model, found) {
    if (!found) return "Nothing found in the sources";
    if (provider === "extractive") {
      return "Quoted from the sources (no language model configured: set LLM_MODEL for written answers)";
    }
    return "Answered by " + (model || "the language model");
  }

  function fail(message) {
    setBusy(false);
    view.meta.textContent = "";
    if (!currentAnswer) view.section.hidden = view.list.children.length === 0;
    showError(message);
  }

  function errorMessage(data, status) {
    const error = data && data.error;
    if (error && error.message) return error.message;
    return "The answer failed" + (status ? " (HTTP " + status + ")" : "") + ". Try again.";
  }

  function showError(message) {
    errorBox.textContent = "";
    const p = document.createElement("p");
    p.textContent = message;
    errorBox.appendChild(p);
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function setBusy(busy) {
    view.text.setAttribute("aria-busy", busy ? "true" : "false");
    buttons.forEach(function (b) { b.disabled = busy; });
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) return meta.content;
    const cookie = document.cookie.split("; ").find(function (c) { return c.indexOf("csrftoken=") === 0; });
    return cookie ? decodeURIComponent(cookie.slice(10)) : "";
  }

  // Snippets are escaped HTML with <mark> from the server; rebuild them keeping text and <mark> only.
  function safeSnippet(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    const fragment = document.createDocumentFragment();
    template.content.childNodes.forEach(function (node) {
      if (node.nodeType === Node.TEXT_NODE) {
        fragment.appendChild(document.createTextNode(node.textContent));
      } else if (node.nodeName === "MARK") {
        const mark = document.createElement("mark");
        mark.textContent = node.textContent;
        fragment.appendChild(mark);
      } else {
        fragment.appendChild(document.createTextNode(node.textContent || ""));
      }
    });
    return fragment;
  }

  // --- Conversation: follow-ups under the previous answer, past conversations, a new one ----

  function newTurnView(question) {
    turnCount += 1;
    const article = document.createElement("article");
    article.className = "turn";
    const asked = document.createElement("h3");
    asked.className = "turn-question";
    asked.textContent = question;
    const text = document.createElement("div");
    text.className = "answer-text";
    text.setAttribute("aria-live", "polite");
    const meta = document.createElement("p");
    meta.className = "meta";
    const searched = document.createElement("p");
    searched.className = "searched";
    const warnings = document.createElement("ul");
    warnings.className = "warnings";
    const heading = document.createElement("h4");
    heading.className = "sources-heading";
    heading.textContent = "Sources";
    heading.hidden = true;
    const list = document.createElement("ol");
    list.className = "passages";
    article.append(asked, text, meta, searched, warnings, heading, list);
    thread.appendChild(article);
    return { section: article, text: text, meta: meta, searched: searched, warnings: warnings, heading: heading, list: list, prefix: "turn-" + turnCount + "-passage-" };
  }

  if (followUp) {
    followUp.addEventListener("submit", function (event) {
      event.preventDefault();
      const input = followUp.elements.followup;
      const question = input.value.trim();
      if (!question) { input.focus(); return; }
      input.value = "";
      labelResults();
      view = newTurnView(question);
      ask({ question: question, mode: form.elements.mode.value, source: form.elements.source.value })
        .catch(function () { fail("The answer failed. Try again."); });
    });
  }

  // Back to no conversation: the next question starts a new one.
  function startOver() {
    conversationId = "";
    thread.textContent = "";
    view = firstView;
    answerSection.hidden = true;
    followUp.hidden = true;
    newConversation.hidden = true;
  }

  if (newConversation) {
    newConversation.addEventListener("click", function () {
      startOver();
      rememberConversation("");
      form.elements.q.value = "";
      form.elements.q.focus();
    });
  }

  const pastBox = document.getElementById("past");
  if (pastBox && pastList) {
    pastBox.addEventListener("toggle", async function () {
      if (!pastBox.open) return;
      pastList.textContent = "Loading…";
      try {
        const response = await fetch(pastBox.dataset.url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
        const rows = response.ok ? await response.json() : [];
        pastList.textContent = rows.length ? "" : "No conversations yet.";
        rows.forEach(function (row) {
          const li = document.createElement("li");
          const button = document.createElement("button");
          button.type = "button";
          button.className = "link";
          button.textContent = (row.title || "Untitled") + " (" + row.turn_count + ")";
          button.addEventListener("click", function () { openConversation(row.id); });
          li.appendChild(button);
          pastList.appendChild(li);
        });
      } catch (err) {
        pastList.textContent = "Could not load past conversations.";
      }
    });
  }

  // A conversation of the caller's, by id (someone else's is a 404, as a deleted or expired one).
  async function openConversation(id) {
    let response;
    try {
      response = await fetch(pastBox.dataset.url + encodeURIComponent(id) + "/",
        { credentials: "same-origin", headers: { "Accept": "application/json" } });
    } catch (err) {
      showError("The server could not be reached. Check your connection and try again.");
      return;
    }
    if (!response.ok) {
      showError("That conversation is not there: it was deleted, it expired, or it is not yours.");
      return;
    }
    const data = await response.json();
    hideError();
    startOver();
    labelResults();
    data.turns.forEach(function (turn) {
      view = newTurnView(turn.question);
      knownPassages = new Set();
      renderPassages(turn.citations || []);
      renderAnswer(turn.answer);
      finish({ question_asked: turn.question, searched_for: turn.searched_for, status: turn.status, provider: turn.provider,
        model: turn.model, citations: turn.citations, conversation: data.id, found: turn.status === "answered",
        took_ms: turn.timings && turn.timings.total_ms });
    });
  }

  // Last, so every declaration above is initialised before the answer starts.
  const conversationSection = document.getElementById("conversation");
  if (conversationSection && conversationSection.dataset.open) {
    openConversation(conversationSection.dataset.open);
  } else if (answerSection.dataset.autoask === "true") {
    ask({
      question: answerSection.dataset.question,
      mode: answerSection.dataset.mode,
      source: answerSection.dataset.source,
    }).catch(function () { fail("The answer failed. Try again."); });
  }
})();
