// Admin → Training: start, cancel and adopt runs through the API, follow a running run, and
// show the history's older runs. The server renders every part; after a change this script
// re-reads the page and swaps its parts (marked data-refresh), keeping focus and the toggle.
import { announce, announceError, api, t } from "./api.js";

const POLL_MS = 3000;
const ENDED = ["DONE", "FAILED", "CANCELLED"];
let pollTimer = null;
let followed = null; // {id, status, epoch} of the run being followed

function showLocalTimes(root = document) {
  const format = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
  for (const element of root.querySelectorAll("time[data-local]")) {
    const moment = new Date(element.dateTime);
    if (!Number.isNaN(moment.getTime())) element.textContent = format.format(moment);
  }
}

function setExpanded(expanded) {
  const toggle = document.getElementById("training-history-toggle");
  const more = document.getElementById("training-history-more");
  if (!toggle || !more) return;
  toggle.setAttribute("aria-expanded", String(expanded));
  more.hidden = !expanded;
  toggle.textContent = expanded ? toggle.dataset.less : toggle.dataset.more;
}

function isExpanded() {
  return document.getElementById("training-history-toggle")?.getAttribute("aria-expanded") === "true";
}

/** A selector that finds the focused control again in the re-read page. */
function focusKey(element) {
  if (!element || element === document.body) return null;
  if (element.id) return `#${CSS.escape(element.id)}`;
  for (const name of ["data-start", "data-cancel", "data-adopt"]) {
    if (element.hasAttribute(name)) {
      const writer = element.dataset.writer ? `[data-writer="${CSS.escape(element.dataset.writer)}"]` : "";
      return `[${name}="${CSS.escape(element.getAttribute(name))}"]${writer}`;
    }
  }
  return null;
}

/**
 * Re-read the page and swap its parts. `hint` ({key, region}) names the control that acted,
 * for when the focus left it while it was disabled during the call.
 */
async function refresh(hint = null) {
  const response = await fetch(location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" });
  if (response.redirected || !response.ok) {
    // Logged out or no longer an admin: the page itself says so.
    location.reload();
    return;
  }
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const expanded = isExpanded();
  const focused = document.activeElement;
  const dropped = !focused || focused === document.body;
  const key = dropped && hint ? hint.key : focusKey(focused);
  let lostFocus = dropped && hint ? hint.region : null;
  for (const region of document.querySelectorAll("[data-refresh]")) {
    const replacement = fresh.getElementById(region.id);
    if (!replacement) continue;
    if (region.contains(focused)) lostFocus = region.id;
    region.replaceWith(document.importNode(replacement, true));
  }
  setExpanded(expanded);
  showLocalTimes();
  if (lostFocus) {
    const again = key ? document.querySelector(key) : null;
    if (again && !again.disabled) {
      again.focus();
    } else {
      // The control went away (a run ended): keep the person in the same part of the page.
      const heading = document.getElementById(lostFocus)?.querySelector("h2");
      if (heading) {
        heading.tabIndex = -1;
        heading.focus();
      }
    }
  }
  follow();
}

function follow() {
  const id = document.getElementById("training-history")?.dataset.activeRun;
  if (!id) {
    followed = null;
    clearTimeout(pollTimer);
    return;
  }
  const card = document.getElementById(`run-${id}`);
  if (followed?.id !== id) {
    followed = { id, status: card?.dataset.status, epoch: card?.querySelector(".run__epoch")?.textContent ?? null };
  }
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
  const current = followed;
  if (!current) return;
  try {
    const run = await api("GET", `/api/admin/training/runs/${current.id}`);
    const changed = run.status !== current.status || String(run.epoch ?? "") !== String(current.epoch ?? "");
    if (ENDED.includes(run.status)) {
      followed = null;
      await refresh();
      const badge = document.querySelector(`#run-${run.id} .badge`);
      announce(t("ended", { id: run.id, status: badge?.textContent ?? run.status }), run.status === "DONE" ? "success" : "info");
      return;
    }
    if (changed) {
      followed = { id: current.id, status: run.status, epoch: run.epoch };
      await refresh();
      return;
    }
  } catch (error) {
    // A missed poll is retried; a lasting problem is told once per kind.
    if (error?.code !== "NETWORK") announceError(error);
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

/** Ask with the page's dialog; resolves true when the person confirms. Focus goes back to `opener`. */
function confirmWith(opener, title, text, yes) {
  const dialog = document.getElementById("training-confirm");
  document.getElementById("training-confirm-heading").textContent = title;
  document.getElementById("training-confirm-text").textContent = text;
  document.getElementById("training-confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (opener.isConnected) opener.focus();
        resolve(dialog.returnValue === "yes");
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("training-confirm-yes").focus();
  });
}

async function act(button, work) {
  const hint = { key: focusKey(button), region: button.closest("[data-refresh]")?.id ?? null };
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    announceError(error);
  } finally {
    button.disabled = false;
  }
  try {
    await refresh(hint);
  } catch (error) {
    announceError(error);
  }
}

async function start(button) {
  const body = button.dataset.writer ? { writer: button.dataset.writer } : undefined;
  await act(button, async () => {
    await api("POST", `/api/admin/training/${encodeURIComponent(button.dataset.start)}`, body);
    announce(t("started"), "success");
  });
}

async function cancel(button) {
  if (!(await confirmWith(button, t("cancelTitle"), t("cancelText"), t("cancelYes")))) return;
  await act(button, async () => {
    await api("POST", `/api/admin/training/runs/${encodeURIComponent(button.dataset.cancel)}/cancel`);
    announce(t("cancelled"), "info");
  });
}

async function adopt(button) {
  const model = button.dataset.model;
  if (!(await confirmWith(button, t("adoptTitle"), t("adoptText", { model }), t("adoptYes")))) return;
  await act(button, async () => {
    await api("POST", `/api/admin/training/runs/${encodeURIComponent(button.dataset.adopt)}/adopt`);
    announce(t("adopted", { model }), "success");
  });
}

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target.closest("button") : null;
  if (!target || target.disabled) return;
  if (target.id === "training-history-toggle") setExpanded(!isExpanded());
  else if (target.hasAttribute("data-start")) start(target);
  else if (target.hasAttribute("data-cancel")) cancel(target);
  else if (target.hasAttribute("data-adopt")) adopt(target);
});

showLocalTimes();
follow();
