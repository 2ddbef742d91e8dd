// The admins' trash: restore a document, or delete it for good after a confirmation.
import { announce, announceError, api, t } from "./api.js";
import { confirmDialog } from "./documents_common.js";

const body = document.getElementById("trash-body");

function removeRow(row) {
  const next = row.nextElementSibling ?? row.previousElementSibling;
  row.remove();
  const empty = body.rows.length === 0;
  document.getElementById("trash-wrap").hidden = empty;
  document.getElementById("empty-state").hidden = !empty;
  (next?.querySelector(".restore-button") ?? document.getElementById("trash-heading")).focus();
}

async function restore(row, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/trash/${row.dataset.documentId}/restore`);
  } catch (error) {
    button.disabled = false;
    announceError(error);
    return;
  }
  announce(t("restored", { title: row.dataset.title }), "success");
  removeRow(row);
}

async function deleteForGood(row, button) {
  const title = row.dataset.title;
  const confirmed = await confirmDialog(document.getElementById("delete-dialog"), t("deleteQuestion", { title }), button);
  if (!confirmed) return;
  try {
    await api("DELETE", `/api/trash/${row.dataset.documentId}`);
  } catch (error) {
    announceError(error);
    button.focus();
    return;
  }
  announce(t("deleted", { title }), "success");
  removeRow(row);
}

for (const row of body.rows) {
  row.querySelector(".restore-button").addEventListener("click", (event) => restore(row, event.currentTarget));
  row.querySelector(".delete-button").addEventListener("click", (event) => deleteForGood(row, event.currentTarget));
}
