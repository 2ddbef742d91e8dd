// What the documents page and the trash page share: their data island and the confirmation dialog.

/** The JSON a page's template put in a <script type="application/json" id="...">. */
export function readData(id) {
  try {
    return JSON.parse(document.getElementById(id)?.textContent || "{}");
  } catch {
    return {};
  }
}

/**
 * Ask in a modal <dialog> (its text set to `question`); resolves true when the person confirms.
 * The dialog's first button confirms, its last cancels; Escape cancels too. Focus goes back to
 * `opener` either way (a caller that removes the opener moves focus on itself).
 */
export function confirmDialog(dialog, question, opener) {
  const [confirm, cancel] = [dialog.querySelector(".button--danger"), dialog.querySelector(".button:not(.button--danger)")];
  dialog.querySelector("p").textContent = question;
  return new Promise((resolve) => {
    const finish = (answer) => {
      confirm.removeEventListener("click", onConfirm);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      opener?.focus();
      resolve(answer);
    };
    const onConfirm = () => finish(true);
    const onCancel = () => finish(false);
    const onClose = () => finish(false);
    confirm.addEventListener("click", onConfirm);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    // The safe choice has the focus: Enter on an unread dialog never deletes anything.
    cancel.focus();
  });
}
