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

// "Try it" for a capability that streams: <form data-stream="URL"> posts the form there
// and shows each item as it arrives (server-sent events carrying rendered HTML); Stop
// (or leaving the page) closes the connection, which stops the work at its origin.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-stream]");
  if (!form) return;
  event.preventDefault();
  const result = document.getElementById("try-result");
  const run = form.querySelector("button[type=submit]");
  const stop = document.getElementById("try-stop");
  const busy = document.getElementById("try-busy");
  const controller = new AbortController();
  const list = document.createElement("ol");
  list.className = "stream-items";
  const status = document.createElement("p");
  status.className = "meta stream-status";
  result.replaceChildren(status, list);
  run.disabled = true;
  stop.hidden = false;
  busy.classList.add("htmx-request");
  stop.onclick = () => controller.abort();
  let count = 0;
  const show = (kind, data) => {
    if (kind === "item") {
      const item = document.createElement("li");
      item.innerHTML = data.html; // rendered and escaped by the node
      list.append(item);
      count += 1;
      status.textContent = form.dataset.received.replace("{n}", count);
    } else {
      status.innerHTML = data.html;
      status.dataset.kind = kind;
    }
  };
  try {
    const answer = await fetch(form.dataset.stream, {
      method: "POST", body: new FormData(form), signal: controller.signal,
      headers: {Accept: "text/event-stream"},
    });
    if (!(answer.headers.get("content-type") || "").startsWith("text/event-stream")) {
      result.innerHTML = await answer.text(); // refused before it started: the problem
      return;
    }
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffered += value;
      let cut;
      while ((cut = buffered.indexOf("\n\n")) >= 0) {
        const block = buffered.slice(0, cut);
        buffered = buffered.slice(cut + 2);
        let kind = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) show(kind, JSON.parse(data));
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      status.textContent = form.dataset.stopped;
      status.dataset.kind = "stopped";
    } else {
      status.textContent = String(err);
    }
  } finally {
    run.disabled = false;
    stop.hidden = true;
    busy.classList.remove("htmx-request");
  }
});
