// Visible controls smaller than minimum x minimum CSS pixels (a checkbox counts with its label).
(minimum) => {
  const small = [];
  const controls = "button, input:not([type=hidden]), select, textarea, a.button, nav a, summary, [role=button]";
  for (const el of document.querySelectorAll(controls)) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || getComputedStyle(el).visibility === "hidden") continue;
    if (el.type === "checkbox" || el.type === "radio") {
      const label = el.closest("label") || (el.id && document.querySelector(`label[for="${el.id}"]`));
      const area = label ? label.getBoundingClientRect() : box;
      if (Math.max(area.height, box.height) >= minimum) continue;
    }
    if (box.width < minimum || box.height < minimum) {
      const text = (el.textContent || el.value || "").trim().slice(0, 40);
      small.push({ tag: el.tagName, id: el.id, text, w: Math.round(box.width), h: Math.round(box.height) });
    }
  }
  return small;
}
