// The token travels in the URL's fragment, which browsers never send to a server, so it
// appears in no access log; it goes only into the body of the one request that uses it.
import { announce, announceError, api, clearNotices, t } from "./api.js";

const form = document.getElementById("setup-form");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
if (!token) announce(t("noToken"), "error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearNotices();
  const data = new FormData(form);
  const password = String(data.get("password"));
  if (password.length < 10) return void announce(t("tooShort"), "error");
  if (password !== data.get("again")) return void announce(t("mismatch"), "error");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("POST", "/api/setup", { token, username: data.get("username"), password }, { redirectOnLogout: false });
    history.replaceState(null, "", location.pathname);
    announce(t("created"), "success");
    setTimeout(() => location.assign("/login"), 1500);
  } catch (error) {
    button.disabled = false;
    announceError(error);
  }
});
