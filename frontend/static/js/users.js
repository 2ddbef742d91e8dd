// Admin -> Users: add a user, change a role, reset a password, deactivate or reactivate.
// After each change the table is read again from the server (the same rows the page was
// rendered with), and the focus goes back to the same button of the same user.
import { announce, announceError, api, clearNotices, t } from "./api.js";

const MIN_PASSWORD = 10;
const USERNAME = /^[a-z0-9][a-z0-9._@-]{0,63}$/;

const table = document.querySelector(".users-table");
const createForm = document.getElementById("users-create-form");
const resetDialog = document.getElementById("reset-dialog");
const resetForm = document.getElementById("reset-form");
const deactivateDialog = document.getElementById("deactivate-dialog");
const deactivateForm = document.getElementById("deactivate-form");

/** The rows as the server renders them now; the focus kept on (user, action) where it was. */
async function refreshRows(focus) {
  const response = await fetch(location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`reloading the users failed: ${response.status}`);
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("users-rows");
  document.getElementById("users-rows").replaceWith(document.adoptNode(fresh));
  if (focus) {
    const row = table.querySelector(`tr[data-user-id="${focus.userId}"]`);
    const button = row?.querySelector(`[data-action="${focus.action}"]`) ?? row?.querySelector("button");
    button?.focus();
  }
}

function passwordProblem(password, again) {
  if (password.length < MIN_PASSWORD) return t("tooShort");
  if (password !== again) return t("mismatch");
  return null;
}

createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearNotices();
  const data = new FormData(createForm);
  const username = String(data.get("username")).trim().toLowerCase();
  const password = String(data.get("password"));
  if (!USERNAME.test(username)) {
    announce(t("badUsername"), "error");
    createForm.elements.username.focus();
    return;
  }
  const problem = passwordProblem(password, String(data.get("again")));
  if (problem) {
    announce(problem, "error");
    createForm.elements.password.focus();
    return;
  }
  const button = createForm.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const user = await api("POST", "/api/users", { username, password, role: data.get("role") });
    createForm.reset();
    await refreshRows(null);
    announce(t("created", { name: user.username }), "success");
  } catch (error) {
    announceError(error);
    createForm.elements.username.focus();
  } finally {
    button.disabled = false;
  }
});

// A dialog's opener gets the focus back when it closes, however it closes (Esc, Cancel, done).
function openDialog(dialog, opener, title) {
  dialog.querySelector("h2").textContent = title;
  const error = dialog.querySelector(".dialog-error");
  if (error) error.hidden = true;
  dialog.opener = opener;
  dialog.showModal();
}

for (const dialog of [resetDialog, deactivateDialog]) {
  dialog.addEventListener("close", () => {
    dialog.querySelector("form").reset();
    if (dialog.opener?.isConnected) dialog.opener.focus();
  });
  for (const cancel of dialog.querySelectorAll("[data-close]")) {
    cancel.addEventListener("click", () => dialog.close());
  }
}

async function changeUser(row, action, change, message) {
  clearNotices();
  try {
    await api("PATCH", `/api/users/${row.dataset.userId}`, change);
    await refreshRows({ userId: row.dataset.userId, action });
    announce(t(message, { name: row.dataset.username }), "success");
  } catch (error) {
    announceError(error);
  }
}

table.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const row = button.closest("tr");
  const name = row.dataset.username;
  switch (button.dataset.action) {
    case "role": {
      const role = button.dataset.role;
      // The role button turns into its opposite: the focus stays on it.
      changeUser(row, "role", { role }, role === "admin" ? "roleAdmin" : "roleArchivist");
      break;
    }
    case "reset":
      resetDialog.userRow = row;
      openDialog(resetDialog, button, t("resetTitle", { name }));
      break;
    case "deactivate":
      deactivateDialog.userRow = row;
      openDialog(deactivateDialog, button, t("deactivateTitle", { name }));
      break;
    case "reactivate":
      changeUser(row, "deactivate", { isActive: true }, "reactivated");
      break;
  }
});

resetForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const row = resetDialog.userRow;
  const data = new FormData(resetForm);
  const password = String(data.get("password"));
  const error = resetDialog.querySelector(".dialog-error");
  // Shown inside the dialog: the page behind a modal dialog is out of reach until it closes.
  const problem = passwordProblem(password, String(data.get("again")));
  if (problem) {
    error.textContent = problem;
    error.hidden = false;
    resetForm.elements.password.focus();
    return;
  }
  const button = resetForm.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("PUT", `/api/users/${row.dataset.userId}/password`, { password });
    resetDialog.close();
    clearNotices();
    announce(t("resetDone", { name: row.dataset.username }), "success");
  } catch (failure) {
    if (failure?.name === "AbortError") return;
    error.textContent = failure.text ?? t("unexpectedError");
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});

deactivateForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const row = deactivateDialog.userRow;
  deactivateDialog.close();
  changeUser(row, "reactivate", { isActive: false }, "deactivated");
});
