// Your account: change your own password (the current one is asked for; other sessions end).
import { announce, announceError, api, clearNotices, t } from "./api.js";

const MIN_PASSWORD = 10;
const form = document.getElementById("password-form");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearNotices();
  const data = new FormData(form);
  const newPassword = String(data.get("password"));
  if (newPassword.length < MIN_PASSWORD) {
    announce(t("tooShort"), "error");
    form.elements.password.focus();
    return;
  }
  if (newPassword !== data.get("again")) {
    announce(t("mismatch"), "error");
    form.elements.again.focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("POST", "/api/auth/password", { currentPassword: data.get("current"), newPassword });
    form.reset();
    announce(t("changed"), "success");
  } catch (error) {
    // What was typed stays; the current password is the one to look at again.
    announceError(error);
    if (error.code === "WRONG_PASSWORD") form.elements.current.select();
  } finally {
    button.disabled = false;
  }
});
