// On every page: the language switch and logging out.
// (Loaded by every page's layout; page scripts import api.js, never this module, so it runs once.)
import { announceError, api, cookie, rememberLanguage } from "./api.js";

function wireLanguageSwitch() {
  const choice = document.getElementById("language-choice");
  const form = document.getElementById("language-switch");
  if (!choice || !form) return;
  form.addEventListener("submit", (event) => event.preventDefault());
  choice.addEventListener("change", async () => {
    const language = choice.value;
    try {
      // Logged in (the CSRF cookie says a session may be open, also on an error page, which does
      // not look the person up): the choice is kept with the person, on every device.
      if (cookie("archiv_csrf")) {
        try {
          await api("PUT", "/api/auth/language", { language }, { redirectOnLogout: false });
        } catch (error) {
          if (error.status !== 401) throw error;
        }
      }
      rememberLanguage(language);
      location.reload();
    } catch (error) {
      announceError(error);
    }
  });
}

function wireLogout() {
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", "/api/auth/logout", undefined, { redirectOnLogout: false });
    } catch (error) {
      // Logged out already (401) is what we want; anything else is worth telling.
      if (error.status !== 401) {
        button.disabled = false;
        announceError(error);
        return;
      }
    }
    location.assign("/login");
  });
}

wireLanguageSwitch();
wireLogout();
