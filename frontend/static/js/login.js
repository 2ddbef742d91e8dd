import { announceError, api, clearNotices, rememberLanguage } from "./api.js";

const form = document.getElementById("login-form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button[type=submit]");
  const data = new FormData(form);
  button.disabled = true;
  clearNotices();
  try {
    const session = await api(
      "POST",
      "/api/auth/login",
      { username: data.get("username"), password: data.get("password") },
      { redirectOnLogout: false },
    );
    if (session.user.language) rememberLanguage(session.user.language);
    location.assign(form.dataset.next || "/documents");
  } catch (error) {
    button.disabled = false;
    announceError(error);
    form.querySelector("#login-password").focus();
  }
});
