// The document view: the page image (viewer-stage.js) and the lines to correct (viewer-lines.js),
// kept in step: the line being edited is highlighted on the image and followed there, and a
// line tapped on the image is opened for editing. Keys: Enter next line, Esc undo the line's
// changes, Alt+ArrowDown next uncertain line.

import { csrfHeader, t } from "./api.js";
import { Drafts, LineEditor } from "./viewer-lines.js";
import { PageReview } from "./viewer-review.js";
import { Stage } from "./viewer-stage.js";

const MAX_CROP_SCALE = 1.5; // a short line's crop is not blown up beyond this

class Viewer {
  constructor(root) {
    this.root = root;
    this.documentId = Number(root.dataset.documentId);
    this.imageUrl = root.dataset.imageUrl;
    this.width = Number(root.dataset.width) || 0;
    this.height = Number(root.dataset.height) || 0;
    this.drafts = new Drafts(root.dataset.userId);
    this.selected = null;
    this.polygons = new Map();
    for (const polygon of root.querySelectorAll(".overlay__line")) this.polygons.set(polygon.dataset.lineId, polygon);
    const zoomLevel = root.querySelector("#zoom-level");
    this.stage = new Stage(root.querySelector("#stage"), {
      width: this.width,
      height: this.height,
      onPick: (lineId) => this.pick(lineId),
      onZoom: (zoom) => {
        zoomLevel.textContent = t("zoomLevel", { percent: Math.round(zoom * 100) });
      },
    });
    for (const button of root.querySelectorAll("[data-zoom]")) {
      const action = { in: () => this.stage.zoomIn(), out: () => this.stage.zoomOut(), fit: () => this.stage.reset() };
      button.addEventListener("click", action[button.dataset.zoom]);
    }
    const template = document.getElementById("conflict-template");
    this.editors = [...root.querySelectorAll(".line")].map(
      (item) =>
        new LineEditor(item, { drafts: this.drafts, conflictTemplate: template, onSaved: (e, s) => this.saved(e, s) }),
    );
    this.byId = new Map(this.editors.map((editor) => [editor.id, editor]));
    this.list = root.querySelector("#lines");
    this.list?.addEventListener("keydown", (event) => this.key(event));
    this.list?.addEventListener("focusin", (event) => {
      const item = event.target.closest(".line");
      if (item) this.select(this.byId.get(item.dataset.lineId), { follow: true });
    });
    root.querySelector("#next-uncertain")?.addEventListener("click", () => this.nextUncertain());
    const review = root.querySelector("#page-review");
    if (review) {
      this.review = new PageReview(review, {
        documentId: this.documentId,
        page: Number(root.dataset.page),
        flush: () => this.flush(),
        unsaved: () => this.editors.find((editor) => editor.dirty || editor.conflict),
      });
    }
    if (this.list && this.width) {
      this.cropObserver = new ResizeObserver(() => this.drawCrops());
      this.cropObserver.observe(this.list);
    }
    for (const editor of this.editors) editor.restoreDraft();
    if (!CSS.supports("field-sizing", "content")) fitFieldsToText(this.editors.map((editor) => editor.field));
    const wanted = this.byId.get(root.dataset.selectedLine);
    if (wanted) {
      this.select(wanted, { follow: true });
      wanted.item.scrollIntoView({ block: "center" });
      wanted.field.focus({ preventScroll: true });
    }
  }

  destroy() {
    this.stage.destroy();
    this.cropObserver?.disconnect();
  }

  /** Each line's crop: the page image as the line's background, sized to the list's width. */
  drawCrops() {
    const available = this.list.clientWidth - 32;
    // The list also grows as lines wrap while typing: only a new width moves the crops.
    if (available <= 0 || available === this.cropWidth) return;
    this.cropWidth = available;
    for (const editor of this.editors) {
      const [left, top, boxWidth, boxHeight] = editor.box;
      const scale = Math.min(available / boxWidth, MAX_CROP_SCALE);
      const crop = editor.item.querySelector(".line__crop");
      crop.style.width = `${Math.round(boxWidth * scale)}px`;
      crop.style.height = `${Math.round(boxHeight * scale)}px`;
      crop.style.backgroundImage = `url("${this.imageUrl}")`;
      crop.style.backgroundSize = `${this.width * scale}px ${this.height * scale}px`;
      crop.style.backgroundPosition = `${-left * scale}px ${-top * scale}px`;
    }
  }

  select(editor, { follow = false } = {}) {
    if (!editor || editor === this.selected) return;
    if (this.selected) {
      this.selected.item.classList.remove("is-selected");
      this.polygons.get(this.selected.id)?.classList.remove("is-selected");
    }
    this.selected = editor;
    editor.item.classList.add("is-selected");
    const polygon = this.polygons.get(editor.id);
    if (polygon) {
      polygon.classList.add("is-selected");
      polygon.parentNode.append(polygon); // drawn last: its outline on top of its neighbours'
    }
    if (follow) this.stage.show(editor.box);
    // A reload (or a link copied now) opens the same line.
    const url = new URL(location.href);
    url.searchParams.set("line", editor.id);
    history.replaceState(history.state, "", url);
  }

  /** A line tapped on the image: open it for editing. */
  pick(lineId) {
    const editor = this.byId.get(lineId);
    if (!editor) return;
    this.select(editor);
    editor.item.scrollIntoView({ block: "nearest" });
    editor.field.focus({ preventScroll: true });
  }

  move(editor, step) {
    const index = this.editors.indexOf(editor) + step;
    const next = this.editors[index];
    if (!next) return;
    next.field.focus({ preventScroll: true });
    next.item.scrollIntoView({ block: "nearest" });
    const end = next.field.value.length;
    next.field.setSelectionRange(end, end);
  }

  key(event) {
    const item = event.target.closest(".line");
    if (!item || !event.target.classList.contains("line__text")) return;
    const editor = this.byId.get(item.dataset.lineId);
    if (event.isComposing) return; // Enter ends an input method's composition, nothing more
    if (event.key === "Enter" && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault(); // a line is one line: Enter goes on, as Tab does
      editor.save();
      this.move(editor, event.shiftKey ? -1 : 1);
    } else if (event.key === "Escape") {
      event.preventDefault();
      editor.restore();
    }
  }

  nextUncertain() {
    const start = this.selected ? this.editors.indexOf(this.selected) : -1;
    const count = this.editors.length;
    for (let step = 1; step <= count; step += 1) {
      const editor = this.editors[(start + step) % count];
      if (editor.item.classList.contains("line--uncertain") && editor !== this.selected) {
        this.select(editor, { follow: true });
        editor.item.scrollIntoView({ block: "center" });
        editor.field.focus({ preventScroll: true });
        return;
      }
    }
    const status = document.getElementById("save-announcer");
    status.textContent = t("noUncertain");
  }

  saved(editor, byThisPerson) {
    const polygon = this.polygons.get(editor.id);
    if (byThisPerson && polygon) {
      polygon.classList.add("is-corrected");
      polygon.classList.remove("is-uncertain");
    }
    if (byThisPerson) document.getElementById("save-announcer").textContent = t("lineSaved", { number: editor.number });
    const summary = this.root.querySelector("#lines-summary");
    if (summary) {
      const total = this.editors.length;
      const counts = {
        corrected: this.root.querySelectorAll(".line--corrected").length,
        total,
        uncertain: this.root.querySelectorAll(".line--uncertain").length,
      };
      summary.textContent = t("summary", counts, total);
    }
  }

  /** Every line not yet on the server, sent now (a reload of the lines, or the page closing). */
  flush() {
    return Promise.all(this.editors.filter((editor) => editor.dirty).map((editor) => editor.save()));
  }

  beacon() {
    const csrf = csrfHeader();
    for (const editor of this.editors) editor.beacon(csrf);
  }
}

/** Where the browser cannot size a field to its text by CSS: each field as tall as its text. */
function fitFieldsToText(fields) {
  const grow = (field) => {
    field.style.height = "auto";
    field.style.height = `${field.scrollHeight + 4}px`;
  };
  for (const field of fields) field.addEventListener("input", () => grow(field));
  // All heights read first, then all written: one layout, not one per line.
  for (const field of fields) field.style.height = "auto";
  const heights = fields.map((field) => field.scrollHeight + 4);
  fields.forEach((field, index) => {
    field.style.height = `${heights[index]}px`;
  });
}

let viewer = null;

function mount() {
  const root = document.getElementById("viewer");
  if (!root) return;
  viewer = new Viewer(root);
  performance.mark("viewer:ready");
  document.documentElement.dataset.viewerReady = "true";
}

/** After an OCR run: this page rendered afresh, its viewer in place of the old one. */
async function reload() {
  if (!viewer) return;
  await viewer.flush();
  const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const replacement = fresh.getElementById("viewer");
  const current = document.getElementById("viewer");
  if (!replacement || !current) return;
  const focused = document.activeElement?.closest?.(".line")?.dataset.lineId;
  // The address's line was opened on arrival; now focus stays where the person is (the OCR panel, say).
  delete replacement.dataset.selectedLine;
  viewer.destroy();
  current.replaceWith(document.adoptNode(replacement));
  mount();
  // The person keeps their place: the line they were in, if the new reading still has it.
  const again = focused && viewer.byId.get(focused);
  if (again) {
    viewer.select(again);
    again.field.focus({ preventScroll: true });
  }
}

document.addEventListener("keydown", (event) => {
  // Alt+ArrowDown opens a <select> (the model chooser, the language): left to it there.
  if (event.altKey && event.key === "ArrowDown" && viewer && event.target.tagName !== "SELECT") {
    event.preventDefault();
    viewer.nextUncertain();
  }
});
document.addEventListener("ocr:finished", (event) => {
  if (viewer && Number(event.detail?.documentId) === viewer.documentId) reload();
});
window.addEventListener("pagehide", () => viewer?.beacon());

mount();
