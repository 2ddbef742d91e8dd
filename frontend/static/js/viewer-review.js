// "Page reviewed": the person says they checked every line of this page (its text and its place
// on the image), so its lines count as training data as they stand. The lines typed but not yet
// on the server are saved first: a review never vouches for text the archive does not have.

import { announce, announceError, api, t } from "./api.js";

export class PageReview {
  /**
   * @param {HTMLElement} root the .page-review block
   * @param {{documentId: number, page: number, flush: () => Promise<unknown>, unsaved: () => {number: string} | undefined}} options
   */
  constructor(root, { documentId, page, flush, unsaved }) {
    this.root = root;
    this.url = `/api/documents/${documentId}/pages/${page}/review`;
    this.page = page;
    this.flush = flush;
    this.unsaved = unsaved;
    this.button = root.querySelector("#page-review-toggle");
    this.busy = false;
    this.button.addEventListener("click", () => this.toggle());
    showOnThumbnail(this.reviewed);
  }

  get reviewed() {
    return this.button.getAttribute("aria-pressed") === "true";
  }

  async toggle() {
    if (this.busy) return; // one change at a time; the button keeps its focus meanwhile
    this.busy = true;
    this.button.setAttribute("aria-busy", "true");
    const wanted = !this.reviewed;
    try {
      if (wanted) {
        await this.flush();
        const left = this.unsaved();
        if (left) {
          announce(t("reviewUnsaved", { number: left.number }), "warning");
          return;
        }
      }
      const page = await api(wanted ? "PUT" : "DELETE", this.url);
      this.show(page.reviewed, page.reviewedAt);
      document.getElementById("save-announcer").textContent = t(page.reviewed ? "reviewMarked" : "reviewTakenBack", {
        number: this.page,
      });
    } catch (error) {
      announceError(error);
    } finally {
      this.busy = false;
      this.button.removeAttribute("aria-busy");
    }
  }

  show(reviewed, reviewedAt) {
    this.button.setAttribute("aria-pressed", String(reviewed));
    this.root.classList.toggle("is-reviewed", reviewed);
    this.root.querySelector(".page-review__yes").hidden = !reviewed;
    this.root.querySelector(".page-review__no").hidden = reviewed;
    const date = this.root.querySelector(".page-review__date");
    if (reviewed && reviewedAt) {
      date.dateTime = reviewedAt;
      date.textContent = new Intl.DateTimeFormat(document.documentElement.lang, { dateStyle: "long" }).format(
        new Date(reviewedAt),
      );
    }
    showOnThumbnail(reviewed);
  }
}

/** The current page's thumbnail says it too (it is outside the part a new OCR reading redraws). */
function showOnThumbnail(reviewed) {
  const mark = document.querySelector('.thumbnail[aria-current="page"] .thumbnail__reviewed');
  if (mark) mark.hidden = !reviewed;
}
