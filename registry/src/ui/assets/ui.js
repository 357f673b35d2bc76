// berth registry UI: progressive extras only; every page works without this file.
"use strict";
document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-copy]");
  if (!b || !navigator.clipboard) return;
  navigator.clipboard.writeText(b.dataset.copy).then(() => {
    const was = b.textContent;
    b.textContent = "Copied";
    setTimeout(() => { b.textContent = was; }, 1500);
  });
});
// The tag filter narrows the rows of this page as you type.
for (const input of document.querySelectorAll("input[data-filter]")) {
  input.closest("label").hidden = false;
  const table = document.getElementById(input.dataset.filter);
  input.addEventListener("input", () => {
    const q = input.value.trim().toLowerCase();
    for (const row of table.tBodies[0].rows) {
      row.hidden = q !== "" && !row.dataset.name.toLowerCase().includes(q);
    }
  });
}
