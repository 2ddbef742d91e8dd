// The page image with its lines drawn over it: zoom (wheel, buttons, keys, two fingers) and pan
// (drag, arrow keys). The canvas is the page in the OCR's pixels (the lines' coordinate space),
// placed by one CSS transform, so the polygons and the image can never drift apart.

const MIN_ZOOM = 0.5; // relative to "fit to width"
const MAX_ZOOM = 10;
const STEP = 1.25;
const PAN_STEP = 60; // px per arrow key
const CLICK_SLOP = 6; // px a pointer may move and still count as a tap

export class Stage {
  constructor(stage, { width, height, onPick, onZoom }) {
    this.stage = stage;
    this.canvas = stage.querySelector(".stage__canvas");
    this.image = stage.querySelector(".stage__image");
    this.onPick = onPick;
    this.onZoom = onZoom;
    this.width = width;
    this.height = height;
    this.zoom = 1;
    this.x = 0;
    this.y = 0;
    this.pointers = new Map();
    this.gesture = null;
    this.listeners = [];
    if (!this.width || !this.height) {
      // No size recorded for the page yet: the image's own proportions give the space.
      const sized = () => {
        this.width = this.image.naturalWidth;
        this.height = this.image.naturalHeight;
        this.layout();
      };
      if (this.image.complete && this.image.naturalWidth) sized();
      else this.image.addEventListener("load", sized, { once: true });
    }
    this.canvas.style.width = `${this.width || 1}px`;
    this.canvas.style.height = `${this.height || 1}px`;
    this.on(stage, "wheel", (event) => this.wheel(event), { passive: false });
    this.on(stage, "pointerdown", (event) => this.pointerDown(event));
    this.on(stage, "pointermove", (event) => this.pointerMove(event));
    this.on(stage, "pointerup", (event) => this.pointerUp(event));
    this.on(stage, "pointercancel", (event) => this.pointerUp(event, true));
    this.on(stage, "keydown", (event) => this.key(event));
    this.resizer = new ResizeObserver(() => this.layout());
    this.resizer.observe(stage);
    this.layout();
  }

  on(target, type, handler, options) {
    target.addEventListener(type, handler, options);
    this.listeners.push(() => target.removeEventListener(type, handler, options));
  }

  destroy() {
    this.resizer.disconnect();
    for (const remove of this.listeners) remove();
  }

  /** Pixels on screen per pixel of the page at "fit to width". */
  fit() {
    return this.width ? this.stage.clientWidth / this.width : 1;
  }

  scale() {
    return this.fit() * this.zoom;
  }

  layout() {
    if (!this.width) return;
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${this.height}px`;
    this.apply();
  }

  apply() {
    const scale = this.scale();
    const viewWidth = this.stage.clientWidth;
    const viewHeight = this.stage.clientHeight;
    const shownWidth = this.width * scale;
    const shownHeight = this.height * scale;
    // Smaller than the view: centred; larger: never pulled past its edges.
    this.x = shownWidth <= viewWidth ? (viewWidth - shownWidth) / 2 : Math.min(0, Math.max(viewWidth - shownWidth, this.x));
    this.y = shownHeight <= viewHeight ? (viewHeight - shownHeight) / 2 : Math.min(0, Math.max(viewHeight - shownHeight, this.y));
    this.canvas.style.transform = `translate(${this.x}px, ${this.y}px) scale(${scale})`;
    this.onZoom?.(this.zoom);
  }

  /** Zoom to `zoom` keeping the point (px, py) of the view where it is. */
  zoomTo(zoom, px = this.stage.clientWidth / 2, py = this.stage.clientHeight / 2) {
    const next = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, zoom));
    const ratio = next / this.zoom;
    this.x = px - (px - this.x) * ratio;
    this.y = py - (py - this.y) * ratio;
    this.zoom = next;
    this.apply();
  }

  zoomIn() {
    this.zoomTo(this.zoom * STEP);
  }

  zoomOut() {
    this.zoomTo(this.zoom / STEP);
  }

  reset() {
    this.zoom = 1;
    this.x = 0;
    this.y = 0;
    this.apply();
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.apply();
  }

  /** Bring a line's box (page pixels) into view, centred, if any of it is outside. */
  show([left, top, boxWidth, boxHeight]) {
    if (!this.width) return;
    const scale = this.scale();
    const viewWidth = this.stage.clientWidth;
    const viewHeight = this.stage.clientHeight;
    const x0 = this.x + left * scale;
    const y0 = this.y + top * scale;
    const x1 = x0 + boxWidth * scale;
    const y1 = y0 + boxHeight * scale;
    if (x0 >= 0 && y0 >= 0 && x1 <= viewWidth && y1 <= viewHeight) return;
    if (x0 < 0 || x1 > viewWidth) this.x = viewWidth / 2 - (left + boxWidth / 2) * scale;
    if (y0 < 0 || y1 > viewHeight) this.y = viewHeight / 2 - (top + boxHeight / 2) * scale;
    this.apply();
  }

  local(event) {
    const box = this.stage.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  wheel(event) {
    event.preventDefault();
    const lines = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? 400 : 1;
    const [px, py] = this.local(event);
    this.zoomTo(this.zoom * Math.exp(-event.deltaY * lines * 0.0015), px, py);
  }

  pointerDown(event) {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    try {
      this.stage.setPointerCapture(event.pointerId);
    } catch {
      // A pointer the browser no longer knows as active: follow it without capture.
    }
    this.pointers.set(event.pointerId, this.local(event));
    if (this.pointers.size === 1) {
      const target = event.target.closest?.("[data-line-id]");
      this.gesture = { moved: 0, pick: target?.dataset.lineId ?? null };
    } else if (this.gesture) {
      this.gesture.pick = null; // two fingers: a pinch, never a tap
    }
    this.stage.classList.add("is-dragging");
  }

  pointerMove(event) {
    const previous = this.pointers.get(event.pointerId);
    if (!previous) return;
    const now = this.local(event);
    if (this.pointers.size === 1) {
      const dx = now[0] - previous[0];
      const dy = now[1] - previous[1];
      if (this.gesture) this.gesture.moved += Math.abs(dx) + Math.abs(dy);
      this.pointers.set(event.pointerId, now);
      this.panBy(dx, dy);
      return;
    }
    const [otherId] = [...this.pointers.keys()].filter((id) => id !== event.pointerId);
    const other = this.pointers.get(otherId);
    const before = Math.hypot(previous[0] - other[0], previous[1] - other[1]);
    const after = Math.hypot(now[0] - other[0], now[1] - other[1]);
    this.pointers.set(event.pointerId, now);
    // The midpoint follows the fingers (pan) and the image grows around it (pinch).
    const midBefore = [(previous[0] + other[0]) / 2, (previous[1] + other[1]) / 2];
    const midAfter = [(now[0] + other[0]) / 2, (now[1] + other[1]) / 2];
    this.x += midAfter[0] - midBefore[0];
    this.y += midAfter[1] - midBefore[1];
    if (before > 0) this.zoomTo(this.zoom * (after / before), midAfter[0], midAfter[1]);
    else this.apply();
  }

  pointerUp(event, cancelled = false) {
    if (!this.pointers.has(event.pointerId)) return;
    this.pointers.delete(event.pointerId);
    if (this.pointers.size === 0) {
      this.stage.classList.remove("is-dragging");
      const gesture = this.gesture;
      this.gesture = null;
      if (!cancelled && gesture?.pick && gesture.moved < CLICK_SLOP) this.onPick(gesture.pick);
    }
  }

  key(event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const actions = {
      "+": () => this.zoomIn(),
      "=": () => this.zoomIn(),
      "-": () => this.zoomOut(),
      0: () => this.reset(),
      ArrowLeft: () => this.panBy(PAN_STEP, 0),
      ArrowRight: () => this.panBy(-PAN_STEP, 0),
      ArrowUp: () => this.panBy(0, PAN_STEP),
      ArrowDown: () => this.panBy(0, -PAN_STEP),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  }
}
