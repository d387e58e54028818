// ragsite search page: Ask with streamed answers and clickable citations. Plain JavaScript, no build step.
// Search itself is a server-rendered GET form; this file only enhances "Ask" and the citation links.
(function () {
  "use strict";

  const form = document.getElementById("search-form");
  const answerSection = document.getElementById("answer");
  if (!form || !answerSection) return;

  const answerText = document.getElementById("answer-text");
  const answerMeta = document.getElementById("answer-meta");
  const answerWarnings = document.getElementById("answer-warnings");
  const passagesHeading = document.getElementById("passages-heading");
  const passagesList = document.getElementById("passages");
  const errorBox = document.getElementById("errors");
  const buttons = form.querySelectorAll("button");
  const reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  // --- Ask: the submit becomes ask=live, so results and URL match the question; the answer then streams in.
  form.addEventListener("submit", function (event) {
    const submitter = event.submitter;
    if (!submitter || submitter.name !== "ask") return;
    event.preventDefault();
    const question = form.elements.q.value.trim();
    if (!question) {
      showError("Type a question first.");
      form.elements.q.focus();
      return;
    }
    const params = new URLSearchParams(new FormData(form));
    params.set("ask", "live");
    window.location.assign(form.getAttribute("action") + "?" + params.toString());
  });

  // --- Citations: [n] scrolls to passage n and highlights it (also for server-rendered answers).
  document.addEventListener("click", function (event) {
    const link = event.target.closest && event.target.closest("a.cite");
    if (!link) return;
    event.preventDefault();
    highlightPassage(link.dataset.n);
  });

  function highlightPassage(n) {
    const target = document.getElementById("passage-" + n);
    if (!target) return;
    passagesList.querySelectorAll(".is-highlighted").forEach(function (el) { el.classList.remove("is-highlighted"); });
    target.classList.add("is-highlighted");
    target.scrollIntoView({ behavior: reduceMotion ? "auto" : "smooth", block: "center" });
    target.focus({ preventScroll: true });
    if (history.replaceState) history.replaceState(null, "", "#passage-" + n);
  }

  // --- Asking -------------------------------------------------------------------------------

  async function ask(request) {
    const streams = form.dataset.streams === "true";
    const body = { question: request.question, mode: request.mode, stream: streams };
    if (request.source) body.source = request.source;
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
      finish(data);
      return;
    }
    try {
      await readEvents(response, {
        citations: function (data) {
          providerName = data.provider || "";
          renderPassages(data.citations || []);
        },
        delta: function (data) { appendAnswer(data.text || ""); },
        done: function (data) { renderAnswer(data.answer || currentAnswer); finish(data); },
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
  let knownPassages = new Set();

  function resetAnswer() {
    currentAnswer = "";
    knownPassages = new Set();
    answerSection.hidden = false;
    answerText.textContent = "";
    answerMeta.textContent = "Searching the knowledge base…";
    answerWarnings.textContent = "";
    passagesList.textContent = "";
    passagesHeading.hidden = true;
    hideError();
  }

  function appendAnswer(text) {
    currentAnswer += text;
    renderAnswer(currentAnswer);
    answerMeta.textContent = "Answering…";
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
        link.href = "#passage-" + match[1];
        link.dataset.n = match[1];
        link.setAttribute("aria-label", "Source " + match[1]);
        link.textContent = "[" + match[1] + "]";
        paragraph.appendChild(link);
      } else {
        paragraph.appendChild(document.createTextNode(match[0]));
      }
      last = pattern.lastIndex;
    }
    paragraph.appendChild(document.createTextNode(text.slice(last)));
    answerText.replaceChildren(paragraph);
  }

  function renderPassages(citations) {
    passagesList.textContent = "";
    citations.forEach(function (c) {
      knownPassages.add(String(c.n));
      const item = document.createElement("li");
      item.className = "passage";
      item.id = "passage-" + c.n;
      item.tabIndex = -1;
      const number = document.createElement("span");
      number.className = "n";
      number.textContent = "[" + c.n + "]";
      const card = document.createElement("div");
      card.className = "card";
      const title = document.createElement("h4");
      if (/^https?:\/\//i.test(c.url || "")) {
        const link = document.createElement("a");
        link.href = c.url;
        link.rel = "noopener noreferrer";
        link.textContent = c.title || "Untitled";
        title.appendChild(link);
      } else {
        title.textContent = c.title || "Untitled";
      }
      const where = document.createElement("p");
      where.className = "where";
      where.textContent = [c.source].concat((c.heading_path || []).filter(function (h) { return h && h !== c.title; })).join(" › ");
      const snippet = document.createElement("p");
      snippet.className = "snippet";
      snippet.appendChild(safeSnippet(c.snippet || ""));
      card.append(title, where, snippet);
      item.append(number, card);
      passagesList.appendChild(item);
    });
    passagesHeading.hidden = citations.length === 0;
    answerMeta.textContent = citations.length ? "Answering…" : "";
  }

  function finish(data) {
    setBusy(false);
    const cited = new Set((data.cited || (data.citations || []).filter(function (c) { return c.cited; }).map(function (c) { return c.n; })).map(String));
    passagesList.querySelectorAll(".passage").forEach(function (item) {
      const n = item.id.replace("passage-", "");
      const isCited = cited.has(n);
      item.classList.toggle("uncited", !isCited);
      if (!isCited && !item.querySelector(".not-cited")) {
        const note = document.createElement("span");
        note.className = "not-cited";
        note.textContent = " · not cited";
        item.querySelector(".where").appendChild(note);
      }
    });
    const provider = data.provider || providerName;
    const parts = [(data.found === false ? "Nothing found" : "Answered") + (provider ? " by " + provider : "")];
    if (typeof data.took_ms === "number") parts.push(Math.round(data.took_ms) + " ms");
    answerMeta.textContent = parts.join(" in ");
    answerWarnings.textContent = "";
    (data.warnings || []).forEach(function (w) {
      const li = document.createElement("li");
      li.textContent = w;
      answerWarnings.appendChild(li);
    });
  }

  function fail(message) {
    setBusy(false);
    answerMeta.textContent = "";
    if (!currentAnswer) answerSection.hidden = passagesList.children.length === 0;
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
    answerText.setAttribute("aria-busy", busy ? "true" : "false");
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

  // Last, so every declaration above is initialised before the answer starts.
  if (answerSection.dataset.autoask === "true") {
    ask({
      question: answerSection.dataset.question,
      mode: answerSection.dataset.mode,
      source: answerSection.dataset.source,
    }).catch(function () { fail("The answer failed. Try again."); });
  }
})();
