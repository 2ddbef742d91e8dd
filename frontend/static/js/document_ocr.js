// The document view's OCR panel and export menu.
// The panel offers the models (the writer's own preselected), starts OCR, and follows the job's
// Server-Sent Events page by page. On load it asks the server for the document's job, so a
// reload in the middle of a run picks the progress up again; when a job ends it tells the viewer
// (the "ocr:finished" event) so the lines are read afresh.
import { ApiError, announce, announceError, api, errorMessage } from "./api.js";

const ACTIVE = new Set(["QUEUED", "RUNNING"]);

function readMessages() {
  const element = document.getElementById("document-ocr-messages");
  try {
    return JSON.parse(element?.textContent || "{}");
  } catch {
    return {};
  }
}

const messages = readMessages();

function say(key, values = {}) {
  const text = messages[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** The model in words, in the reader's language: the writer's, the archive's, else its name. */
function modelLabel(model) {
  let label = model.name;
  if (model.runSequence !== null && model.writer) {
    label = say("writerModel", { writer: model.writer.name, version: model.runSequence });
  } else if (model.runSequence !== null) {
    label = say("archiveModel", { version: model.runSequence });
  }
  return model.default ? say("defaultSuffix", { model: label }) : label;
}

class OcrPanel {
  constructor(root) {
    this.root = root;
    this.documentId = Number(root.dataset.documentId);
    this.mayDiscard = root.dataset.mayDiscard === "true";
    this.form = root.querySelector("#ocr-start");
    this.select = root.querySelector("#ocr-model");
    this.startButton = root.querySelector("#ocr-start-button");
    this.discardField = root.querySelector("#ocr-discard-field");
    this.discard = root.querySelector("#ocr-discard");
    this.discardWarning = root.querySelector("#ocr-discard-warning");
    this.progress = root.querySelector("#ocr-progress");
    this.progressText = root.querySelector("#ocr-progress-text");
    this.bar = root.querySelector("#ocr-progress-bar");
    this.cancelButton = root.querySelector("#ocr-cancel");
    this.last = root.querySelector("#ocr-last");
    // The model the server offers first: choosing it sends no name, so the job decides as the
    // server would when it starts (a writer's model adopted meanwhile is used).
    this.preselected = null;
    this.source = null;
    this.jobId = null;
    this.retryTimer = null;
    this.cancelling = false;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    this.cancelButton.addEventListener("click", () => this.cancel());
    // A page leaving closes its stream at once (the server stops polling for it).
    window.addEventListener("pagehide", () => this.stopFollowing());
  }

  async load() {
    await Promise.all([this.loadModels(), this.loadJob()]);
    this.root.dataset.loaded = "true"; // for tests that must not race the panel's first reads
  }

  async loadModels() {
    try {
      const found = await api("GET", `/api/ocr/models?documentId=${this.documentId}`);
      this.showModels(found);
    } catch (error) {
      // The automatic choice stays: OCR can still be started once the service is back.
      announceError(error);
    }
  }

  showModels(found) {
    if (!found.models.length) return;
    const options = found.models.map((model) => {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = modelLabel(model);
      option.selected = model.name === found.preselected;
      return option;
    });
    if (found.preselected === null) {
      const automatic = document.createElement("option");
      automatic.value = "";
      automatic.textContent = say("automatic");
      automatic.selected = true;
      options.unshift(automatic);
    }
    this.preselected = found.preselected;
    this.select.replaceChildren(...options);
  }

  async loadJob() {
    try {
      const current = await api("GET", `/api/documents/${this.documentId}/ocr-job`);
      this.showCorrections(current.correctedLines);
      const job = current.job;
      if (!job) return;
      if (ACTIVE.has(job.status)) {
        this.follow(job);
      } else {
        this.showLast(job);
      }
    } catch (error) {
      announceError(error);
    }
  }

  showCorrections(count) {
    const offered = this.mayDiscard && count > 0;
    this.discardField.hidden = !offered;
    if (!offered) this.discard.checked = false;
    this.discardWarning.textContent = offered ? say("discardWarning", { count }) : "";
  }

  showLast(job) {
    const key = { DONE: "lastDone", CANCELLED: "lastCancelled", FAILED: "lastFailed" }[job.status];
    this.last.textContent = say(key, { pages: job.pagesDone, total: job.pagesTotal });
    this.last.hidden = false;
  }

  async start() {
    const chosen = this.select.value;
    const body = { discardCorrections: this.discard.checked };
    if (chosen && chosen !== this.preselected) body.model = chosen;
    this.startButton.disabled = true;
    try {
      const created = await api("POST", `/api/documents/${this.documentId}/ocr`, body);
      const job = await api("GET", `/api/ocr/jobs/${created.jobId}`);
      this.follow(job);
      this.cancelButton.focus();
    } catch (error) {
      this.startButton.disabled = false;
      if (error instanceof ApiError && error.code === "OCR_ALREADY_RUNNING") {
        // Someone else started it meanwhile: follow that job instead.
        await this.loadJob();
      }
      announceError(error);
    }
  }

  /** Show the job's progress and follow its events until it ends. */
  follow(job) {
    this.stopFollowing();
    this.jobId = job.id;
    this.form.hidden = true;
    this.last.hidden = true;
    this.progress.hidden = false;
    this.cancelButton.disabled = false;
    this.show(job.status, job.pagesDone, job.pagesTotal, job.etaSeconds);
    const source = new EventSource(`/api/ocr/jobs/${job.id}/events`);
    this.source = source;
    let status = job.status;
    source.addEventListener("page", (event) => {
      const page = JSON.parse(event.data);
      status = "RUNNING";
      this.show(status, page.pagesDone, page.pagesTotal, page.etaSeconds);
    });
    source.addEventListener("end", (event) => {
      source.close();
      this.finish(job.id, JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      // A dropped connection is retried by the browser itself; a refused one (logged out, the
      // job gone) closes the stream: read the job once, then follow again if it still runs.
      if (source.readyState === EventSource.CLOSED) this.recheck(job.id);
    });
  }

  stopFollowing() {
    this.source?.close();
    this.source = null;
    clearTimeout(this.retryTimer);
  }

  async recheck(jobId) {
    try {
      const job = await api("GET", `/api/ocr/jobs/${jobId}`);
      if (ACTIVE.has(job.status)) {
        this.retryTimer = setTimeout(() => this.follow(job), 3000);
      } else {
        this.finish(jobId, job);
      }
    } catch (error) {
      announceError(error);
    }
  }

  show(status, done, total, etaSeconds) {
    this.bar.max = Math.max(total, 1);
    this.bar.value = Math.min(done, total);
    let text;
    if (status === "QUEUED" && done === 0) text = say("queued");
    else if (done === 0) text = say("waitingFirst", { total });
    else text = say("pageOf", { page: done, total });
    if (etaSeconds !== null && etaSeconds !== undefined && done < total) {
      const eta = etaSeconds < 60 ? say("etaSoon") : say("etaMinutes", { minutes: Math.ceil(etaSeconds / 60) });
      text = `${text} (${eta})`;
    }
    this.progressText.textContent = text;
  }

  /** The job ended (its "end" event, or read after the stream closed): say how, once. */
  finish(jobId, job) {
    if (jobId !== this.jobId) return;
    this.jobId = null;
    this.stopFollowing();
    // Focus in the panel (or on the cancel button, which lost it when disabled) goes to the start
    // button; focus elsewhere (a line being corrected) stays where it is.
    const hadFocus = this.root.contains(document.activeElement) || this.cancelling;
    this.cancelling = false;
    this.progress.hidden = true;
    this.form.hidden = false;
    this.startButton.disabled = false;
    if (hadFocus) this.startButton.focus();
    if (!job.status) {
      // The job went with its document (deleted for good): the server's error body.
      announceError(new ApiError(404, job.code ?? "OCR_JOB_NOT_FOUND", job.message ?? ""));
      return;
    }
    const values = { pages: job.pagesDone, total: job.pagesTotal, count: job.correctionsDiscarded };
    if (job.status === "DONE") {
      announce(say(job.correctionsDiscarded > 0 ? "discarded" : "finished", values), "success");
    } else if (job.status === "CANCELLED") {
      announce(say("cancelled", values), "info");
    } else {
      errorMessage(job.errorCode).then((message) => announce(`${say("failed", values)} ${message}`, "error"));
    }
    this.showLast(job);
    document.dispatchEvent(new CustomEvent("ocr:finished", { detail: { documentId: this.documentId } }));
    // The corrections now on the document (a discarding run replaced some).
    api("GET", `/api/documents/${this.documentId}/ocr-job`)
      .then((current) => this.showCorrections(current.correctedLines))
      .catch(announceError);
  }

  async cancel() {
    if (this.jobId === null) return;
    this.cancelling = document.activeElement === this.cancelButton;
    this.cancelButton.disabled = true;
    try {
      const job = await api("POST", `/api/ocr/jobs/${this.jobId}/cancel`);
      this.finish(job.id, job);
    } catch (error) {
      if (error instanceof ApiError && error.code === "OCR_JOB_FINISHED") return; // its end event follows
      this.cancelButton.disabled = false;
      if (this.cancelling) this.cancelButton.focus();
      this.cancelling = false;
      announceError(error);
    }
  }
}

/** The export menu: arrow keys move between the formats, Escape closes it; a refused export
 * is announced in words instead of downloading the error. */
function wireExportMenu(menu) {
  const summary = menu.querySelector("summary");
  const links = [...menu.querySelectorAll("a")];
  menu.addEventListener("toggle", () => {
    if (menu.open) links[0]?.focus();
  });
  menu.addEventListener("keydown", (event) => {
    const index = links.indexOf(document.activeElement);
    if (event.key === "Escape" && menu.open) {
      menu.open = false;
      summary.focus();
      event.preventDefault();
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!menu.open) menu.open = true;
      const step = event.key === "ArrowDown" ? 1 : -1;
      const next = index < 0 ? 0 : (index + step + links.length) % links.length;
      links[next].focus();
      event.preventDefault();
    } else if ((event.key === "Home" || event.key === "End") && index >= 0) {
      links[event.key === "Home" ? 0 : links.length - 1].focus();
      event.preventDefault();
    }
  });
  document.addEventListener("click", (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  });
  for (const link of links) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      download(link).finally(() => {
        menu.open = false;
        summary.focus();
      });
    });
  }
}

async function download(link) {
  try {
    const response = await fetch(link.href, { credentials: "same-origin" });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new ApiError(response.status, body.code ?? "INTERNAL_ERROR", body.message ?? "");
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const save = document.createElement("a");
    save.href = url;
    save.download = fileName(response.headers.get("Content-Disposition")) || "export";
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    announceError(error instanceof ApiError ? error : new ApiError(0, "NETWORK", String(error)));
  }
}

/** The file name the server gave (RFC 6266: the UTF-8 ``filename*`` first). */
function fileName(disposition) {
  if (!disposition) return null;
  const utf8 = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  if (utf8) {
    try {
      return decodeURIComponent(utf8[1]);
    } catch {
      // fall through to the plain name
    }
  }
  return /filename="([^"]+)"/i.exec(disposition)?.[1] ?? null;
}

const root = document.getElementById("ocr-panel");
if (root) new OcrPanel(root).load();
const menu = document.getElementById("export-menu");
if (menu) wireExportMenu(menu);
