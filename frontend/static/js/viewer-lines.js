// One line of the document view: its text field, saving it, and a conflict with someone else's
// save. Nothing typed is lost: every keystroke is kept as a draft in this browser until the
// server has the text, and a draft found on the next visit is saved (or shown as a conflict).

import { announce, announceError, api, t } from "./api.js";

const IDLE_SAVE_MS = 2500; // a pause in typing this long saves the line
const RETRY_MS = [2000, 5000, 10000, 30000];

/** Drafts in localStorage, per person and line; a browser without storage just keeps none. */
export class Drafts {
  constructor(userId) {
    this.prefix = `archiv-draft:${userId}:`;
  }
  key(lineId) {
    return this.prefix + lineId;
  }
  get(lineId) {
    try {
      const raw = localStorage.getItem(this.key(lineId));
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  }
  put(lineId, text, version) {
    try {
      localStorage.setItem(this.key(lineId), JSON.stringify({ text, version }));
    } catch {
      // Storage full or refused: the text is still in the field and saved shortly.
    }
  }
  drop(lineId) {
    try {
      localStorage.removeItem(this.key(lineId));
    } catch {
      // As above.
    }
  }
}

export class LineEditor {
  constructor(item, { drafts, onSaved, conflictTemplate }) {
    this.item = item;
    this.id = item.dataset.lineId;
    this.number = item.dataset.number;
    this.version = Number(item.dataset.version);
    this.box = item.dataset.box.split(" ").map(Number);
    this.field = item.querySelector(".line__text");
    this.status = item.querySelector(".line__status");
    this.saved = this.field.defaultValue; // what the server holds at this.version
    this.entry = this.saved; // the text when the person came into the line (Esc goes back to it)
    this.drafts = drafts;
    this.onSaved = onSaved;
    this.conflictTemplate = conflictTemplate;
    this.conflict = null;
    this.timer = null;
    this.retries = 0;
    this.chain = Promise.resolve();
    this.field.addEventListener("input", () => this.changed());
    this.field.addEventListener("focus", () => {
      this.entry = this.field.value;
    });
    this.field.addEventListener("blur", () => this.save());
  }

  get dirty() {
    return this.field.value !== this.saved;
  }

  setState(state) {
    for (const name of ["saving", "saved", "unsaved", "retrying", "failed", "conflict"]) {
      this.item.classList.toggle(`line--${name}`, name === state);
    }
    this.status.textContent = state ? t(state) : "";
  }

  /** A draft left by an earlier visit (a reload mid-typing, a lost connection): save or show it. */
  restoreDraft() {
    const draft = this.drafts.get(this.id);
    if (!draft || typeof draft.text !== "string") return;
    if (draft.text === this.saved) {
      this.drafts.drop(this.id);
      return;
    }
    this.field.value = draft.text;
    if (draft.version === this.version) {
      this.setState("unsaved");
      this.save();
    } else {
      this.showConflict(this.saved, this.version);
    }
  }

  changed() {
    this.drafts.put(this.id, this.field.value, this.version);
    if (this.conflict) {
      this.conflict.querySelector(".conflict__mine").textContent = this.field.value;
      return;
    }
    if (this.dirty) this.setState("unsaved");
    else this.setState(this.savedHere ? "saved" : null);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.save(), IDLE_SAVE_MS);
  }

  /** Esc: the line as it was when the person came into it (saved again if it was saved meanwhile). */
  restore() {
    if (this.conflict) return;
    this.field.value = this.entry;
    this.changed();
    this.save();
  }

  /** Save the field's text if it differs from the server's; saves of one line run one after another. */
  save() {
    clearTimeout(this.timer);
    this.chain = this.chain.then(() => this.send());
    return this.chain;
  }

  async send() {
    if (this.conflict) return;
    const text = this.field.value;
    if (text === this.saved) {
      this.drafts.drop(this.id);
      if (this.item.classList.contains("line--unsaved") || this.item.classList.contains("line--retrying")) {
        // Back to the server's text: "saved" where this visit saved it, else nothing to say.
        this.setState(this.savedHere ? "saved" : null);
      }
      return;
    }
    this.setState("saving");
    try {
      const line = await api("PATCH", `/api/lines/${this.id}`, { text, version: this.version });
      this.retries = 0;
      this.accept(line.currentText, line.version);
      this.item.classList.add("line--corrected");
      this.item.classList.remove("line--uncertain");
      this.onSaved(this, true);
      if (this.dirty) this.changed();
    } catch (error) {
      if (error.code === "LINE_CHANGED" && error.details) {
        this.showConflict(error.details.text, error.details.version);
      } else if (error.status === 0 || error.status >= 500 || error.status === 429) {
        // The archive is out of reach for now: keep the draft and try again, calmly.
        if (this.retries === 0) announceError(error);
        this.setState("retrying");
        const wait = RETRY_MS[Math.min(this.retries, RETRY_MS.length - 1)];
        this.retries += 1;
        this.timer = setTimeout(() => this.save(), wait);
      } else {
        this.setState("failed");
        announceError(error);
      }
    }
  }

  accept(text, version) {
    this.savedHere = true;
    this.saved = text;
    this.version = version;
    this.item.dataset.version = String(version);
    if (this.field.value === text) {
      this.drafts.drop(this.id);
      this.setState("saved");
    }
  }

  showConflict(theirs, version) {
    if (theirs === this.field.value) {
      // Both wrote the same: nothing to choose.
      this.accept(theirs, version);
      return;
    }
    this.conflictVersion = version;
    this.conflictText = theirs;
    if (!this.conflict) {
      this.conflict = this.conflictTemplate.content.firstElementChild.cloneNode(true);
      const title = this.conflict.querySelector(".conflict__title");
      title.id = `conflict-${this.id}`;
      this.conflict.setAttribute("aria-labelledby", title.id);
      this.conflict.querySelector('[data-choose="theirs"]').addEventListener("click", () => this.keepTheirs());
      this.conflict.querySelector('[data-choose="mine"]').addEventListener("click", () => this.keepMine());
      this.item.append(this.conflict);
      announce(t("conflictNotice", { number: this.number }), "warning");
    }
    this.conflict.querySelector(".conflict__theirs").textContent = theirs;
    this.conflict.querySelector(".conflict__mine").textContent = this.field.value;
    this.setState("conflict");
  }

  closeConflict() {
    this.conflict?.remove();
    this.conflict = null;
  }

  keepTheirs() {
    const text = this.conflictText;
    this.closeConflict();
    this.saved = text;
    this.version = this.conflictVersion;
    this.item.dataset.version = String(this.version);
    this.field.value = text;
    this.entry = text;
    this.drafts.drop(this.id);
    this.setState("saved");
    this.onSaved(this, false);
    this.field.focus();
  }

  keepMine() {
    this.closeConflict();
    this.saved = this.conflictText;
    this.version = this.conflictVersion;
    this.item.dataset.version = String(this.version);
    this.drafts.put(this.id, this.field.value, this.version);
    this.field.focus();
    return this.save();
  }

  /** The save a closing page still sends (the draft stays until the next visit confirms it). */
  beacon(csrf) {
    if (this.conflict || !this.dirty) return;
    fetch(`/api/lines/${this.id}`, {
      method: "PATCH",
      keepalive: true,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ text: this.field.value, version: this.version }),
    }).catch(() => {});
  }
}
