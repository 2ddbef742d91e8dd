// Talking to the backend's /api from the pages, and telling the person what happened.
// Every change sends the CSRF token (from the cookie the login set) as a header, which a page
// of another site can neither read nor send.

const CSRF_COOKIE = "archiv_csrf";
const LANGUAGE_COOKIE = "archiv_lang";

function readJson(id) {
  const element = document.getElementById(id);
  if (!element) return {};
  try {
    return JSON.parse(element.textContent || "{}");
  } catch {
    return {};
  }
}

const uiMessages = readJson("ui-messages");
const pageMessages = readJson("page-messages");

// The page's language's plural categories ("one", "other", "many", ...), as CLDR defines them.
const pluralRules = new Intl.PluralRules(document.documentElement.lang || undefined);

/**
 * A message of this page or of the layout, in the page's language (the template put it there).
 * A plural message (the template's plural_forms: a text per plural category) takes the form for
 * ``count``, the number it shows.
 */
export function t(key, values = {}, count = undefined) {
  const message = pageMessages[key] ?? uiMessages[key] ?? key;
  const text = typeof message === "string" ? message : (message[pluralRules.select(count)] ?? message.other);
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

// The message of every error code is a static file per language (cached for a year under its
// content's hash), fetched only once an error is to be shown: pages without errors never load it.
// Until it is here, or where it cannot be had (offline), the page's own general message stands in.
const ERROR_MESSAGES_WAIT_MS = 5000;
let errorMessages = {};
let errorMessagesLoading = null;

/** The catalog of error messages, fetched once; resolves (never rejects) when it is here or cannot be had. */
export function loadErrorMessages() {
  const url = document.querySelector('meta[name="error-messages"]')?.content;
  if (!errorMessagesLoading && url) {
    errorMessagesLoading = fetch(url, { credentials: "same-origin", signal: AbortSignal.timeout(ERROR_MESSAGES_WAIT_MS) })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(String(response.status)))))
      .then((messages) => {
        errorMessages = messages;
      })
      .catch(() => {
        errorMessagesLoading = null; // the next error tries again
      });
  }
  return errorMessagesLoading ?? Promise.resolve();
}

/**
 * What a person reads for an error code (both services' codes), in the page's language, at once:
 * the general message while the catalog is not loaded (see errorMessage for the awaited one).
 */
export function errorText(code) {
  return errorMessages[code] ?? uiMessages.unexpectedError;
}

/** What a person reads for an error code, the catalog loaded first where it can be. */
export async function errorMessage(code) {
  if (!(code in errorMessages)) await loadErrorMessages();
  return errorText(code);
}

export function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    // Its message is likely to be shown: the catalog is fetched meanwhile (api() waits for it).
    if (code !== "NETWORK") loadErrorMessages();
  }
  /** The text to show: the catalog's message for the code, never the API's English (errorText). */
  get text() {
    return this.code === "NETWORK" ? uiMessages.networkError : errorText(this.code);
  }
}

/**
 * A JSON call to the API. `body` is sent as JSON, or as it is when it is FormData.
 * Resolves to the parsed JSON (or null for 204); rejects with an ApiError.
 */
export async function api(method, url, body = undefined, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (method !== "GET" && method !== "HEAD") {
    const token = cookie(CSRF_COOKIE);
    if (token) headers["X-CSRF-Token"] = token;
  }
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, credentials: "same-origin", signal: options.signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "NETWORK", String(error));
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && options.redirectOnLogout !== false) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    const error = new ApiError(response.status, data?.code ?? "INTERNAL_ERROR", data?.message ?? "", data?.details);
    await loadErrorMessages(); // so that error.text is the code's own message
    throw error;
  }
  return data;
}

/** The CSRF header for requests made by other means (XMLHttpRequest uploads, say). */
export function csrfHeader() {
  return cookie(CSRF_COOKIE) ?? "";
}

/**
 * Tell the person something in the notices area (a polite live region). Errors stay until the
 * person closes them: someone who looked away must still find them. The same message again
 * replaces its earlier notice (one failure seen by several parts of a page is one notice, not a
 * pile of identical ones) and, being a new node, is read out again.
 */
export function announce(text, kind = "info") {
  const area = document.getElementById("notices");
  if (!area) return null;
  let hadFocus = false;
  for (const earlier of area.querySelectorAll(`:scope > .notice--${kind}`)) {
    if (earlier.querySelector("p")?.textContent !== text) continue;
    hadFocus ||= earlier.contains(document.activeElement);
    earlier.remove();
  }
  const notice = document.createElement("div");
  notice.className = `notice notice--${kind}`;
  const message = document.createElement("p");
  message.textContent = text;
  notice.append(message);
  const close = document.createElement("button");
  close.type = "button";
  close.className = "button button--quiet notice__close";
  close.textContent = uiMessages.close ?? "×";
  close.addEventListener("click", () => notice.remove());
  notice.append(close);
  area.append(notice);
  if (hadFocus) close.focus(); // the keyboard stays on the notice it was on, now the new one
  return notice;
}

/** Announce an error from a failed call (an ApiError or anything else); resolves to the notice. */
export async function announceError(error) {
  if (error?.name === "AbortError") return null;
  if (error instanceof ApiError && error.code !== "NETWORK") await loadErrorMessages();
  return announce(error instanceof ApiError ? error.text : uiMessages.unexpectedError, "error");
}

/** Clear the notices (e.g. after a retry succeeded). */
export function clearNotices() {
  document.getElementById("notices")?.replaceChildren();
}

/** Keep the UI's language in a cookie too: the login page and error pages know it without asking. */
export function rememberLanguage(language) {
  document.cookie = `${LANGUAGE_COOKIE}=${encodeURIComponent(language)}; path=/; max-age=31536000; samesite=lax`;
}
