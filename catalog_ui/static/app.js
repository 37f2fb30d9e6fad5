// Copy buttons for code snippets: <button data-copy="ID"> copies the text of #ID.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  try {
    await navigator.clipboard.writeText(source.innerText);
    button.textContent = button.dataset.done;
  } catch (err) {
    button.textContent = button.dataset.failed;
  }
});
