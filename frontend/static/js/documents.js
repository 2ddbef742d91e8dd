// The documents page: uploading several files (drag and drop or the picker) each with its own
// progress and outcome, OCR for a selection with each document's progress, and the trash.
import { announce, announceError, api, ApiError, csrfHeader, errorMessage, errorText, loadErrorMessages, t } from "./api.js";
import { readData, confirmDialog } from "./documents_common.js";

const data = readData("documents-data");
const language = document.documentElement.lang || "de";
const percent = new Intl.NumberFormat(language, { style: "percent" });
const megabytes = new Intl.NumberFormat(language, { maximumFractionDigits: 1 });
const sizeUnits = {
  kilobyte: new Intl.NumberFormat(language, { style: "unit", unit: "kilobyte", maximumFractionDigits: 0 }),
  megabyte: new Intl.NumberFormat(language, { style: "unit", unit: "megabyte", maximumFractionDigits: 1 }),
};

/** A file's size in the reader's words and units ("120 kB", "3,4 MB"). */
function sizeText(bytes) {
  return bytes < 1048576
    ? sizeUnits.kilobyte.format(Math.max(1, Math.round(bytes / 1024)))
    : sizeUnits.megabyte.format(bytes / 1048576);
}
const PARTIAL_DATE = /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$/;
const POLL_MS = 1500;
const BATCHES_KEY = "documents.batches";

const body = document.getElementById("documents-body");
const rowTemplate = document.getElementById("document-row-template");

// ---------------------------------------------------------------- the list

function rowOf(documentId) {
  return body.querySelector(`tr[data-document-id="${CSS.escape(String(documentId))}"]`);
}

function setStatus(row, status) {
  const badge = row.querySelector('[data-cell="status"]');
  badge.dataset.status = status;
  badge.className = `badge badge--${data.statusBadges[status] ?? "neutral"}`;
  badge.textContent = data.statusLabels[status] ?? status;
}

/** A row for a document the API answered with (a new upload), shown at the top of the list. */
function addRow(doc) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  row.dataset.documentId = String(doc.id);
  row.dataset.title = doc.title;
  row.querySelector(".select-document").value = String(doc.id);
  row.querySelector('[data-cell="select-label"]').textContent = t("selectTitle", { title: doc.title });
  const link = row.querySelector('[data-cell="title"]');
  link.href = `/documents/${doc.id}`;
  link.textContent = doc.title;
  row.querySelector('[data-cell="writer"]').textContent = doc.writer?.name ?? "";
  row.querySelector('[data-cell="date"]').textContent = doc.date ?? "";
  row.querySelector('[data-cell="pages"]').textContent = String(doc.pageCount);
  setStatus(row, doc.status);
  wireRow(row);
  body.prepend(row);
  showList();
  return row;
}

function showList() {
  const any = body.rows.length > 0;
  document.getElementById("documents-wrap").hidden = !any;
  document.getElementById("batch-bar").hidden = !any;
  document.getElementById("empty-state").hidden = any;
}

// ---------------------------------------------------------------- uploading

const picker = document.getElementById("upload-picker");
const dropzone = document.getElementById("dropzone");
const uploadList = document.getElementById("upload-list");
const uploadActions = document.getElementById("upload-actions");
const uploadStart = document.getElementById("upload-start");
const uploadTemplate = document.getElementById("upload-row-template");
const maxBytes = Number(dropzone.dataset.maxBytes);
let uploadCounter = 0;
const queued = new Map(); // list item -> { file, state: "waiting" | "uploading" | "done" | "refused" }

function titleOf(name) {
  const dot = name.lastIndexOf(".");
  return (dot > 0 ? name.slice(0, dot) : name).trim().slice(0, 500);
}

function addFiles(files) {
  for (const file of files) {
    uploadCounter += 1;
    const item = uploadTemplate.content.firstElementChild.cloneNode(true);
    const id = `upload-${uploadCounter}`;
    item.id = id;
    item.querySelector(".upload-row__name").textContent = file.name;
    item.querySelector(".upload-row__name").id = `${id}-name`;
    item.querySelector(".upload-row__size").textContent = sizeText(file.size);
    for (const label of item.querySelectorAll("label[data-for]")) {
      const field = label.dataset.for;
      const input = item.querySelector(`[data-field="${field}"]`);
      input.id = `${id}-${field}`;
      label.htmlFor = input.id;
      const hint = item.querySelector(`[data-hint-of="${field}"]`);
      if (hint) {
        hint.id = `${id}-${field}-hint`;
        input.setAttribute("aria-describedby", hint.id);
      }
    }
    item.querySelector('[data-field="title"]').value = titleOf(file.name);
    const progress = item.querySelector("progress");
    progress.setAttribute("aria-labelledby", `${id}-name`);
    item.querySelector(".upload-row__remove").addEventListener("click", () => removeUpload(item));
    item.querySelector(".upload-row__retry").addEventListener("click", () => uploadAll([item]));
    queued.set(item, { file, state: "waiting" });
    setUploadStatus(item, t("waiting"), "waiting");
    uploadList.append(item);
  }
  uploadList.hidden = queued.size === 0;
  uploadActions.hidden = queued.size === 0;
}

function removeUpload(item) {
  const next = item.nextElementSibling ?? item.previousElementSibling;
  queued.delete(item);
  item.remove();
  uploadList.hidden = queued.size === 0;
  uploadActions.hidden = queued.size === 0;
  (next?.querySelector("input") ?? document.getElementById("upload-choose")).focus();
}

function setUploadStatus(item, text, state) {
  const status = item.querySelector(".upload-row__status");
  status.replaceChildren(text);
  status.className = `upload-row__status upload-row__status--${state}`;
  item.dataset.state = state;
}

function refuse(item, text) {
  queued.get(item).state = "refused";
  setUploadStatus(item, text, "refused");
  item.querySelector(".upload-row__retry").hidden = false;
  setFieldsDisabled(item, false);
}

function setFieldsDisabled(item, disabled) {
  for (const input of item.querySelectorAll("input")) input.disabled = disabled;
}

/** The reader's words for a refused file (by the API's code; the duplicate names the other document). */
function refusalText(error) {
  if (error.code === "DUPLICATE_DOCUMENT") {
    const title = error.details?.title ?? "";
    return t(error.details?.inTrash ? "duplicateInTrash" : "duplicate", { title });
  }
  if (error.code === "DOCUMENT_TOO_LARGE" || error.code === "REQUEST_TOO_LARGE") {
    return t("tooLarge", { size: megabytes.format(maxBytes / 1048576) });
  }
  if (error.code === "UNSUPPORTED_DOCUMENT_TYPE") return t("unsupported");
  return error.text;
}

/** What the person typed, checked before sending; null when it is fine. */
function fieldProblem(item) {
  const title = item.querySelector('[data-field="title"]');
  const date = item.querySelector('[data-field="date"]');
  if (!title.value.trim()) return [title, t("titleMissing")];
  if (date.value.trim() && !PARTIAL_DATE.test(date.value.trim())) return [date, t("badDate")];
  return null;
}

function send(item, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  for (const field of ["title", "writer", "date"]) {
    const value = item.querySelector(`[data-field="${field}"]`).value.trim();
    if (value) form.append(field, value);
  }
  const progress = item.querySelector("progress");
  item.querySelector(".upload-row__progress").hidden = false;
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/documents");
    request.setRequestHeader("Accept", "application/json");
    request.setRequestHeader("X-CSRF-Token", csrfHeader());
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const share = event.loaded / event.total;
      progress.value = Math.round(share * 100);
      setUploadStatus(item, share < 1 ? t("uploading", { percent: percent.format(share) }) : t("checking"), "uploading");
    });
    request.addEventListener("load", () => {
      const answer = request.response;
      if (request.status === 201) resolve(answer);
      else if (request.status === 401) {
        location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
        reject(new ApiError(401, "NOT_AUTHENTICATED", ""));
      } else reject(new ApiError(request.status, answer?.code ?? "INTERNAL_ERROR", answer?.message ?? "", answer?.details));
    });
    request.addEventListener("error", () => reject(new ApiError(0, "NETWORK", "")));
    request.addEventListener("abort", () => reject(new ApiError(0, "NETWORK", "")));
    request.send(form);
  });
}

async function uploadOne(item) {
  const entry = queued.get(item);
  if (!entry) return null;
  const problem = fieldProblem(item);
  if (problem) {
    refuse(item, problem[1]);
    problem[0].setAttribute("aria-invalid", "true");
    return false;
  }
  for (const input of item.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  if (entry.file.size > maxBytes) {
    refuse(item, t("tooLarge", { size: megabytes.format(maxBytes / 1048576) }));
    return false;
  }
  entry.state = "uploading";
  item.querySelector(".upload-row__retry").hidden = true;
  setFieldsDisabled(item, true);
  setUploadStatus(item, t("uploading", { percent: percent.format(0) }), "uploading");
  try {
    const doc = await send(item, entry.file);
    entry.state = "done";
    item.querySelector("progress").value = 100;
    const link = document.createElement("a");
    link.href = `/documents/${doc.id}`;
    link.textContent = t("open", { title: doc.title });
    setUploadStatus(item, t("uploaded"), "done");
    item.querySelector(".upload-row__status").append(" ", link);
    addRow(doc);
    return true;
  } catch (error) {
    item.querySelector("progress").value = 0;
    item.querySelector(".upload-row__progress").hidden = true;
    await loadErrorMessages(); // the messages by code are fetched when the first error needs them
    refuse(item, error instanceof ApiError ? refusalText(error) : errorText("INTERNAL_ERROR"));
    return false;
  }
}

let uploading = false;

async function uploadAll(items = [...queued.keys()].filter((item) => queued.get(item).state === "waiting")) {
  if (uploading || items.length === 0) return;
  uploading = true;
  uploadStart.disabled = true;
  let done = 0;
  let refused = 0;
  // One after another: the server checks each file in full, and two cores serve everyone.
  for (const item of items) {
    const outcome = await uploadOne(item);
    if (outcome === true) done += 1;
    else if (outcome === false) refused += 1;
  }
  uploading = false;
  uploadStart.disabled = false;
  announce(t("uploadSummary", { done, refused }), refused ? "warning" : "success");
}

function clearFinished() {
  for (const [item, entry] of queued) {
    if (entry.state === "done") {
      queued.delete(item);
      item.remove();
    }
  }
  uploadList.hidden = queued.size === 0;
  uploadActions.hidden = queued.size === 0;
}

document.getElementById("upload-choose").addEventListener("click", () => picker.click());
picker.addEventListener("change", () => {
  addFiles([...picker.files]);
  picker.value = "";
});
uploadStart.addEventListener("click", () => uploadAll());
document.getElementById("upload-clear").addEventListener("click", clearFinished);

// Dropping files: the whole zone takes them; its look says when it will.
for (const name of ["dragenter", "dragover"]) {
  dropzone.addEventListener(name, (event) => {
    if (![...(event.dataTransfer?.types ?? [])].includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropzone.classList.add("dropzone--active");
  });
}
dropzone.addEventListener("dragleave", (event) => {
  if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove("dropzone--active");
});
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("dropzone--active");
  const files = [...(event.dataTransfer?.files ?? [])];
  if (files.length) addFiles(files);
});
// A file dropped next to the zone must not make the browser leave the page (and lose the list).
for (const name of ["dragover", "drop"]) {
  window.addEventListener(name, (event) => {
    if (!dropzone.contains(event.target)) event.preventDefault();
  });
}

// ---------------------------------------------------------------- selecting and batch OCR

const selectAll = document.getElementById("select-all");
const ocrStart = document.getElementById("ocr-start");
const selectionCount = document.getElementById("selection-count");

function selectedIds() {
  return [...body.querySelectorAll(".select-document:checked")].map((box) => Number(box.value));
}

function updateSelection() {
  const count = selectedIds().length;
  const all = body.querySelectorAll(".select-document").length;
  ocrStart.disabled = count === 0;
  selectionCount.textContent = count ? t("selected", { count }) : "";
  selectAll.checked = count > 0 && count === all;
  selectAll.indeterminate = count > 0 && count < all;
}

selectAll.addEventListener("change", () => {
  for (const box of body.querySelectorAll(".select-document")) box.checked = selectAll.checked;
  updateSelection();
});

function storedBatches() {
  try {
    const value = JSON.parse(sessionStorage.getItem(BATCHES_KEY) ?? "[]");
    return Array.isArray(value) ? value.filter(Number.isInteger) : [];
  } catch {
    return [];
  }
}

function storeBatches(ids) {
  if (ids.length) sessionStorage.setItem(BATCHES_KEY, JSON.stringify(ids));
  else sessionStorage.removeItem(BATCHES_KEY);
}

function showJob(job) {
  const row = rowOf(job.documentId);
  if (!row) return;
  const box = row.querySelector('[data-cell="progress"]');
  const bar = box.querySelector("progress");
  const text = box.querySelector(".ocr-progress__text");
  const link = row.querySelector('[data-cell="title"]');
  bar.setAttribute("aria-label", link.textContent);
  if (job.status === "QUEUED" || job.status === "RUNNING") {
    setStatus(row, job.status);
    box.hidden = false;
    bar.hidden = false;
    bar.max = Math.max(job.pagesTotal, 1);
    bar.value = job.pagesDone;
    text.textContent =
      job.status === "QUEUED" ? t("ocrQueued") : t("ocrPage", { done: job.pagesDone, total: job.pagesTotal });
    return;
  }
  box.hidden = true;
  if (job.status === "DONE") setStatus(row, "DONE");
  else if (job.status === "FAILED") {
    setStatus(row, "FAILED");
    box.hidden = false;
    bar.hidden = true;
    errorMessage(job.errorCode ?? "INTERNAL_ERROR").then((message) => {
      text.textContent = message;
    });
  } else setStatus(row, job.pagesDone > 0 ? "PARTIAL" : "NEW");
}

const watched = new Set();

async function watchBatch(batchId) {
  if (watched.has(batchId)) return;
  watched.add(batchId);
  for (;;) {
    let batch;
    try {
      batch = await api("GET", `/api/ocr/batches/${batchId}`);
    } catch (error) {
      // Gone, or not this person's to see: nothing more to watch.
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429) break;
      // A network blip or a busy server: look again a little later, without a notice every time.
      await new Promise((resolve) => setTimeout(resolve, POLL_MS * 2));
      continue;
    }
    for (const job of batch.jobs) showJob(job);
    const open = batch.counts.QUEUED + batch.counts.RUNNING;
    if (open === 0) {
      announce(
        t("ocrFinished", { done: batch.counts.DONE, failed: batch.counts.FAILED + batch.counts.CANCELLED }),
        batch.counts.FAILED ? "warning" : "success",
      );
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  watched.delete(batchId);
  storeBatches(storedBatches().filter((id) => id !== batchId));
}

ocrStart.addEventListener("click", async () => {
  // Documents being read already are left out (the API would refuse the whole selection).
  const ids = selectedIds().filter(
    (id) => !["QUEUED", "RUNNING"].includes(rowOf(id)?.querySelector('[data-cell="status"]').dataset.status),
  );
  if (!ids.length) {
    announce(t("ocrAlreadyRunning"), "info");
    return;
  }
  ocrStart.disabled = true;
  try {
    const { batchId } = await api("POST", "/api/ocr/batches", { documentIds: ids });
    storeBatches([...storedBatches(), batchId]);
    for (const id of ids) {
      const row = rowOf(id);
      if (row) showJob({ documentId: id, status: "QUEUED", pagesDone: 0, pagesTotal: 0 });
      const box = row?.querySelector(".select-document");
      if (box) box.checked = false;
    }
    announce(t("ocrStarted", { count: ids.length }, ids.length), "info");
    watchBatch(batchId);
  } catch (error) {
    announceError(error);
  } finally {
    updateSelection();
  }
});

// ---------------------------------------------------------------- the trash

function wireRow(row) {
  row.querySelector(".select-document").addEventListener("change", updateSelection);
  row.querySelector(".trash-button").addEventListener("click", (event) => moveToTrash(row, event.currentTarget));
}

async function moveToTrash(row, button) {
  const title = row.dataset.title;
  const confirmed = await confirmDialog(
    document.getElementById("trash-dialog"),
    t("trashQuestion", { title, days: data.trashDays }, data.trashDays),
    button,
  );
  if (!confirmed) return;
  try {
    await api("DELETE", `/api/documents/${row.dataset.documentId}`);
  } catch (error) {
    announceError(error);
    button.focus();
    return;
  }
  // Focus moves on to the next row's button (or the heading) as the row goes.
  const next = row.nextElementSibling ?? row.previousElementSibling;
  row.remove();
  updateSelection();
  showList();
  announce(t("trashed", { title }), "success");
  (next?.querySelector(".trash-button") ?? document.getElementById("documents-heading")).focus();
}

for (const row of body.rows) wireRow(row);
updateSelection();
for (const batchId of storedBatches()) watchBatch(batchId);
