// The import: the ZIP goes to POST /api/imports by XMLHttpRequest (fetch cannot report an
// upload's progress); then each imported document is listed with its pages and lines.
import { ApiError, announce, announceError, api, clearNotices, csrfHeader, t } from "./api.js";

const PARTIAL_DATE = /^\d{4}(-\d{2}(-\d{2})?)?$/;
// Lines are counted for this many documents at most (a huge ZIP still lists every document).
const COUNT_LINES_OF = 50;

const form = document.getElementById("import-form");
const progress = document.getElementById("import-progress");
const bar = document.getElementById("import-progress-bar");
const label = document.getElementById("import-progress-label");
const result = document.getElementById("import-result");

function showProgress(percent) {
  progress.hidden = false;
  if (percent === null) {
    bar.removeAttribute("value"); // indeterminate: the server reads the ZIP
    label.textContent = t("reading");
  } else {
    bar.value = percent;
    label.textContent = t("uploading", { percent });
  }
}

function upload(data) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/imports");
    request.setRequestHeader("Accept", "application/json");
    request.setRequestHeader("X-CSRF-Token", csrfHeader());
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) showProgress(Math.round((event.loaded / event.total) * 100));
    });
    request.upload.addEventListener("load", () => showProgress(null));
    request.addEventListener("load", () => {
      const body = request.response;
      if (request.status === 201) return resolve(body);
      if (request.status === 401) location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
      reject(new ApiError(request.status, body?.code ?? "INTERNAL_ERROR", body?.message ?? "", body?.details));
    });
    request.addEventListener("error", () => reject(new ApiError(0, "NETWORK", "network error")));
    request.send(data);
  });
}

async function lineCount(documentId) {
  const lines = await api("GET", `/api/documents/${documentId}/lines`);
  return lines.length;
}

async function showResult(documents) {
  const counts = await Promise.all(
    documents.map((document, index) => (index < COUNT_LINES_OF ? lineCount(document.id).catch(() => null) : null)),
  );
  const list = document.getElementById("import-list");
  list.replaceChildren();
  documents.forEach((imported, index) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/documents/${imported.id}`;
    link.textContent = imported.title;
    const facts = document.createElement("span");
    facts.className = "muted";
    const lines = counts[index] === null ? t("linesUnknown") : t("lines", { count: counts[index] });
    facts.textContent = `${t("pages", { count: imported.pageCount })} · ${lines}`;
    item.append(link, facts);
    list.append(item);
  });
  const pages = documents.reduce((sum, d) => sum + d.pageCount, 0);
  const lines = counts.reduce((sum, n) => sum + (n ?? 0), 0);
  document.getElementById("import-summary").textContent = t("summary", {
    documents: documents.length,
    pages,
    lines,
  });
  result.hidden = false;
  result.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearNotices();
  const file = form.elements.file.files[0];
  if (!file) {
    announce(t("chooseFile"), "error");
    form.elements.file.focus();
    return;
  }
  const date = form.elements.date.value.trim();
  if (date && !PARTIAL_DATE.test(date)) {
    announce(t("badDate"), "error");
    form.elements.date.focus();
    return;
  }
  const data = new FormData();
  data.append("file", file, file.name);
  for (const name of ["title", "writer"]) {
    const value = form.elements[name].value.trim();
    if (value) data.append(name, value);
  }
  if (date) data.append("date", date);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  result.hidden = true;
  showProgress(0);
  try {
    const imported = await upload(data);
    progress.hidden = true;
    await showResult(imported.documents);
    announce(t("done", { documents: imported.documents.length }), "success");
    // The file is in the archive now; the fields stay for the next ZIP of the same writer.
    form.elements.file.value = "";
  } catch (error) {
    // Everything chosen and typed stays, so a corrected retry is one click.
    progress.hidden = true;
    announceError(error);
  } finally {
    button.disabled = false;
  }
});
