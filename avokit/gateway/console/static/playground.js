// avokit playground: posts the conversation to /console/api/chat (session cookie + CSRF
// header; the API key never reaches the browser) and renders the server-sent events.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const model = document.getElementById("model");
  if (!model) { return; }
  const transcript = document.getElementById("transcript");
  const prompt = document.getElementById("prompt");
  const send = document.getElementById("send");
  const maxTokens = document.getElementById("max_tokens");
  const history = [];

  function showPrice() {
    const opt = model.selectedOptions[0];
    document.getElementById("price").textContent =
      "Price per 1M tokens: " + opt.dataset.priceIn + " in, " + opt.dataset.priceOut +
      " out (micro-units). Max tokens up to " + opt.dataset.maxTokens + ".";
    maxTokens.max = opt.dataset.maxTokens;
    if (Number(maxTokens.value) > Number(opt.dataset.maxTokens)) { maxTokens.value = opt.dataset.maxTokens; }
  }

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    const r = document.createElement("div"); r.className = "role"; r.textContent = role;
    const t = document.createElement("div"); t.className = "text"; t.textContent = text;
    const m = document.createElement("div"); m.className = "meta";
    div.append(r, t, m);
    transcript.append(div);
    return div;
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { break; }
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (line.startsWith("data: ")) { onEvent(JSON.parse(line.slice(6))); }
      }
    }
  }

  async function ask(event) {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) { return; }
    const system = document.getElementById("system").value.trim();
    history.push({ role: "user", content: text });
    bubble("user", text);
    prompt.value = "";
    send.disabled = true;
    const answer = bubble("assistant", "");
    const out = answer.querySelector(".text");
    const meta = answer.querySelector(".meta");
    const messages = (system ? [{ role: "system", content: system }] : []).concat(history);
    try {
      const response = await fetch("/console/api/chat", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ model: model.value, messages: messages,
          temperature: Number(document.getElementById("temperature").value),
          top_p: Number(document.getElementById("top_p").value),
          max_tokens: Number(maxTokens.value),
          json_mode: document.getElementById("json_mode").checked }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        meta.textContent = "Refused (" + response.status + "): " +
          ((body.error && body.error.message) || response.statusText);
        answer.classList.add("refused");
        history.pop();
        return;
      }
      let deltas = 0;
      await readEvents(response, (ev) => {
        if (ev.type === "delta") { out.textContent += ev.text; deltas += 1; }
        else if (ev.type === "error") { meta.textContent = "Error: " + ev.message; }
        else if (ev.type === "done") {
          history.push({ role: "assistant", content: out.textContent });
          answer.dataset.deltas = deltas;
          answer.dataset.cost = ev.cost_micros;
          meta.textContent = ev.prompt_tokens + " prompt + " + ev.completion_tokens +
            " completion tokens · cost " + ev.cost_micros + " micro-units · " + ev.finish_reason;
        }
      });
    } finally {
      send.disabled = false;
    }
  }

  model.addEventListener("change", showPrice);
  document.getElementById("ask").addEventListener("submit", ask);
  document.getElementById("clear").addEventListener("click", () => {
    history.length = 0; transcript.textContent = "";
  });
  showPrice();
})();
