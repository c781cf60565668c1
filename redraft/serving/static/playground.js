/* redraft playground: one streaming request per run with per-step trajectory events, drawn by the shared
 * trajectory renderer. Model text only ever reaches the page as text (textContent or the renderer's esc()). */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let model = null, controller = null, view = null, running = false, started = 0, finalStats = null;

  fetch("/v1/models").then((r) => r.json()).then((j) => { model = j.data[0].id; $("model").textContent = model; })
    .catch((e) => showError("cannot list models: " + e));
  $("legend").append(RedraftTrajectory.legend());

  async function pollHealth() {
    try {
      const h = await (await fetch("/health")).json();
      $("health").textContent = h.status === "ok" ? `${h.in_flight} request(s) in flight` : h.status;
    } catch (e) { $("health").textContent = "server unreachable"; }
  }
  pollHealth();
  setInterval(pollHealth, 2000);

  function showError(text) { $("error").textContent = text; }
  function setStatus(text) { $("status").textContent = text; }

  function number(id, integer) {
    const raw = $(id).value.trim();
    if (raw === "") return undefined;
    const v = integer ? parseInt(raw, 10) : parseFloat(raw);
    return Number.isFinite(v) ? v : undefined;
  }

  function request() {
    const chat = document.querySelector("input[name=format]:checked").value === "chat";
    const body = {model, stream: true, trajectory: true, mode: $("mode").value};
    for (const [id, integer] of [["tau_mask", false], ["tau_edit", false], ["block_length", true],
                                 ["mbe_blocks", true], ["max_tokens", true]]) {
      const v = number(id, integer);
      if (v !== undefined) body[id] = v;
    }
    const prompt = $("prompt").value;
    if (chat) body.messages = [{role: "user", content: prompt}];
    else body.prompt = prompt;
    return {url: chat ? "/v1/chat/completions" : "/v1/completions", body, chat};
  }

  function updateCounters(k, tot) {
    $("c-forwards").textContent = tot.forwards;
    $("c-tpf").textContent = tot.forwards ? (tot.tokens / tot.forwards).toFixed(2) : "0";
    $("c-fills").textContent = tot.fills;
    $("c-edits").textContent = tot.edits;
    if (running) {
      const s = (performance.now() - started) / 1000;
      $("c-tps").textContent = s > 0 ? (tot.tokens / s).toFixed(1) : "0";
    } else if (finalStats) {
      $("c-tps").textContent = finalStats.tokens_per_s.toFixed(1);
    }
  }

  function onTrajectory(ev) {
    if (ev.index !== 0) return;
    if (ev.type === "start") {
      const box = $("view");
      box.replaceChildren();
      view = new RedraftTrajectory.View(box, Object.assign({steps: [], end: null}, ev),
                                        {live: true, onStep: updateCounters});
      view.show(0);
    } else if (ev.type === "steps" && view) {
      view.addSteps(ev.steps, ev.vocab);
    } else if (ev.type === "end" && view) {
      finalStats = ev.stats;
      running = false;
      view.setEnd(ev.end);
    }
  }

  function onChunk(obj, chat) {
    if (obj.error) { showError(obj.error.message || JSON.stringify(obj.error)); return; }
    for (const c of obj.choices || []) {
      if (c.index !== 0) continue;
      const text = chat ? (c.delta && c.delta.content) || "" : c.text || "";
      if (text) $("answer").textContent += text;
      if (c.finish_reason) setStatus("finished: " + c.finish_reason);
    }
  }

  function handleEvent(raw, chat) {
    let name = null, data = "";
    for (const line of raw.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (!data) return;
    if (data === "[DONE]") { finish(); return; }
    const obj = JSON.parse(data);
    if (name === "redraft.trajectory") onTrajectory(obj);
    else onChunk(obj, chat);
  }

  function finish() {
    running = false;
    $("run").disabled = false;
    $("stop").disabled = true;
    if (view) {
      view.opts.live = false;
      view.root.classList.remove("rd-live");
      view.show(view.k);
    }
    document.body.dataset.state = "done";
    if ($("status").textContent === "running") setStatus("done");
  }

  async function run(ev) {
    ev.preventDefault();
    if (!model) { showError("no model yet"); return; }
    if (controller) controller.abort();
    controller = new AbortController();
    const req = request();
    $("answer").textContent = "";
    showError("");
    $("view").replaceChildren();
    view = null;
    finalStats = null;
    document.body.dataset.state = "running";
    setStatus("running");
    $("run").disabled = true;
    $("stop").disabled = false;
    running = true;
    started = performance.now();
    try {
      const resp = await fetch(req.url, {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify(req.body), signal: controller.signal});
      if (!resp.ok) {
        let msg = resp.status + " " + resp.statusText;
        try { const j = await resp.json(); msg = (j.error && j.error.message) || msg; } catch (e) { /* not JSON */ }
        showError(msg);
        setStatus("error");
        finish();
        return;
      }
      const reader = resp.body.getReader(), decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        buf += decoder.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          handleEvent(buf.slice(0, i), req.chat);
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") { showError(String(e)); setStatus("error"); }
      else setStatus("stopped");
    }
    finish();
  }

  $("form").addEventListener("submit", run);
  $("stop").addEventListener("click", () => { if (controller) controller.abort(); });
})();
