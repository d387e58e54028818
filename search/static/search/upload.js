// ragsite search page: upload many files at once (drop or choose), each through POST /api/documents/,
// then follow each document's indexing through GET /api/documents/{id}/progress until no chunk is pending.
// A scan (an image, or a PDF without a text layer) is answered 202 "processing": the task worker reads it by
// OCR, and the same progress endpoint tells the page it is on, then the indexing, or why it failed.
// A .zip is unpacked by the server, which answers a report: a row for each file in it, under the archive's row.
// Shown to staff only (writes need staff or a write key); the session cookie and the CSRF token authenticate.
(function () {
  "use strict";

  const box = document.getElementById("upload");
  if (!box) return;
  const input = document.getElementById("upload-files");
  const zone = document.getElementById("drop-zone");
  const list = document.getElementById("upload-list");
  const sourceInput = document.getElementById("upload-source");
  const apiUrl = box.dataset.apiUrl;
  const maxBytes = parseInt(box.dataset.maxBytes, 10) || 0;
  const PARALLEL = 2; // two uploads at a time: the server parses and chunks each one in its request
  const POLL_MS = 1000;
  const POLL_MAX_MS = 30000; // back off while a long document indexes
  const FOLLOW_PARALLEL = 4; // an archive's files are followed a few at a time, not hundreds at once
  const READING = "reading scanned pages (OCR)…";
  const queue = [];
  const follows = [];
  let running = 0;
  let following = 0;

  input.addEventListener("change", function () {
    addFiles(input.files);
    input.value = "";
  });

  // Dragging files anywhere over the page opens the section; dropping on the zone uploads them.
  document.addEventListener("dragenter", function (event) {
    if (hasFiles(event)) box.open = true;
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("is-over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("is-over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone would make the browser navigate away to it.
  document.addEventListener("dragover", function (event) { if (hasFiles(event)) event.preventDefault(); });
  document.addEventListener("drop", function (event) { if (hasFiles(event)) event.preventDefault(); });

  function hasFiles(event) {
    return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types || [], "Files") !== -1;
  }

  function addFiles(files) {
    Array.prototype.forEach.call(files || [], function (file) {
      const row = newRow(file);
      if (maxBytes && file.size > maxBytes) {
        settle(row, "refused", "refused: " + formatBytes(file.size) + " is over the limit of " + formatBytes(maxBytes));
        return;
      }
      queue.push({ file: file, row: row });
    });
    pump();
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      const job = queue.shift();
      running += 1;
      upload(job.file, job.row).finally(function () { running -= 1; pump(); });
    }
  }

  // A row for a file (or a file of an archive, placed after the row `after`).
  function newRow(file, after) {
    const li = document.createElement("li");
    li.className = "upload-item";
    li.dataset.state = "queued";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Progress of " + file.name);
    const status = document.createElement("span");
    status.className = "upload-status";
    status.textContent = "waiting";
    li.append(name, bar, status);
    if (after) after.after(li); else list.appendChild(li);
    return { li: li, bar: bar, status: status, name: name };
  }

  function setStatus(row, state, text) {
    row.li.dataset.state = state;
    row.status.textContent = text;
  }

  function settle(row, state, text) {
    setStatus(row, state, text);
    row.bar.hidden = true;
  }

  // XMLHttpRequest rather than fetch: only it reports upload progress.
  function upload(file, row) {
    return new Promise(function (resolve) {
      const form = new FormData();
      form.append("file", file, file.name);
      form.append("source", (sourceInput && sourceInput.value.trim()) || "uploads");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", apiUrl);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (event) {
        if (!event.lengthComputable) return;
        row.bar.value = Math.round((event.loaded / event.total) * 100);
        setStatus(row, "sending", "sending " + row.bar.value + "%");
      });
      xhr.upload.addEventListener("load", function () { setStatus(row, "reading", "reading the file…"); });
      xhr.addEventListener("load", function () {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (err) { /* not JSON: a proxy's error page */ }
        if (data && Array.isArray(data.files)) {
          showArchive(row, data, xhr.status); // 201, 200 or, every file refused, 400
        } else if (xhr.status === 200 || xhr.status === 201 || xhr.status === 202) {
          linkTitle(row, data);
          if (xhr.status === 202) {
            setStatus(row, "reading", READING);
            row.bar.removeAttribute("value");
            follow(row, data.id, POLL_MS);
          } else if (xhr.status === 200 && data && data.changed === false) {
            settle(row, "unchanged", "unchanged (already stored)");
          } else {
            setStatus(row, "indexing", "ingested; indexing…");
            row.bar.removeAttribute("value"); // indeterminate until the first count arrives
            follow(row, data.id, POLL_MS);
          }
        } else {
          settle(row, "refused", "refused: " + errorMessage(data, xhr.status));
        }
        resolve();
      });
      xhr.addEventListener("error", function () {
        settle(row, "refused", "failed: the server could not be reached");
        resolve();
      });
      setStatus(row, "sending", "sending…");
      xhr.send(form);
    });
  }

  // The archive's row sums it up; each of its files gets a row of its own beneath it, as an upload would.
  function showArchive(row, data, status) {
    const totals = data.totals || {};
    const parts = [totals.ingested + " ingested", totals.unchanged + " unchanged", totals.refused + " refused"];
    if (totals.processing) parts.splice(1, 0, totals.processing + " reading (OCR)");
    if (totals.skipped) parts.push(totals.skipped + " skipped");
    const text = "archive of " + data.files.length + " file" + (data.files.length === 1 ? "" : "s") + ": " + parts.join(", ");
    settle(row, status === 400 ? "refused" : "archive", status === 400 ? "refused: " + errorMessage(data, status) : text);
    let after = row.li;
    data.files.forEach(function (file) {
      const member = newRow({ name: file.name }, after);
      member.li.classList.add("is-member");
      after = member.li;
      if (file.status === "refused") {
        settle(member, "refused", "refused: " + (file.reason || file.code));
        return;
      }
      linkTitle(member, { id: file.document_id, title: file.title });
      if (file.status === "unchanged") {
        settle(member, "unchanged", "unchanged (already stored)");
      } else if (file.status === "processing") {
        setStatus(member, "reading", READING);
        member.bar.removeAttribute("value");
        follows.push({ row: member, id: file.document_id });
      } else {
        setStatus(member, "indexing", "ingested; indexing…");
        member.bar.removeAttribute("value");
        follows.push({ row: member, id: file.document_id });
      }
    });
    pumpFollows();
  }

  function pumpFollows() {
    while (following < FOLLOW_PARALLEL && follows.length) {
      const job = follows.shift();
      following += 1;
      follow(job.row, job.id, POLL_MS, function () { following -= 1; pumpFollows(); });
    }
  }

  function linkTitle(row, data) {
    if (!data || !data.id) return;
    const link = document.createElement("a");
    link.href = box.dataset.documentsUrl + encodeURIComponent(data.id) + "/";
    link.textContent = data.title || row.name.textContent;
    row.name.replaceChildren(link);
  }

  // `done` (optional) is called once the row has settled.
  async function follow(row, id, delay, done) {
    let data;
    try {
      const response = await fetch(apiUrl + encodeURIComponent(id) + "/progress", {
        credentials: "same-origin",
        headers: { "Accept": "application/json" },
      });
      if (response.status === 404) { settle(row, "refused", "deleted while indexing"); if (done) done(); return; }
      data = response.ok ? await response.json() : null;
    } catch (err) {
      data = null; // a blip: try again later
    }
    if (data && data.status === "failed") {
      settle(row, "failed", "failed: " + (data.error || "the file could not be read"));
      if (done) done();
      return;
    }
    if (data && data.status === "processing") {
      const reading = data.reading || {};
      if (data.waiting_for_worker) {
        setStatus(row, "waiting", "waiting for the worker to read the scan (not running)");
      } else {
        setStatus(row, "reading", READING + (reading.page ? " page " + reading.page + " of " + reading.pages : ""));
      }
    } else if (data) {
      if (data.chunks) {
        row.bar.max = data.chunks;
        row.bar.value = data.indexed;
      }
      if (data.done) {
        if (data.failed) {
          settle(row, "failed", "indexed " + data.indexed + " / " + data.chunks + " chunks; " + data.failed +
            " failed: " + (data.errors.join("; ") || "no reason given"));
        } else {
          settle(row, "indexed", "indexed " + data.chunks + " chunk" + (data.chunks === 1 ? "" : "s"));
        }
        if (done) done();
        return;
      }
      if (data.waiting_for_worker) {
        setStatus(row, "waiting", "waiting for the indexing worker (not running): " + data.indexed + " / " + data.chunks + " chunks");
      } else {
        setStatus(row, "indexing", "indexing " + data.indexed + " / " + data.chunks + " chunks");
      }
    }
    setTimeout(function () { follow(row, id, Math.min(delay * 1.5, POLL_MAX_MS), done); }, delay);
  }

  function errorMessage(data, status) {
    const error = data && data.error;
    if (error && error.message) return error.message;
    if (status === 403) return "you need to be staff (or use a write key) to add documents";
    return "HTTP " + status;
  }

  function formatBytes(n) {
    if (n >= 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MB";
    if (n >= 1024) return Math.round(n / 1024) + " KB";
    return n + " bytes";
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
})();
