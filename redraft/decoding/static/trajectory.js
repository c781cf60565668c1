/* redraft trajectory renderer: one implementation for the `redraft generate --trace` page and the playground.
 *
 * Data (JSON, see redraft.decoding.trace.trajectory_data):
 *   {prompt_len, block_length, mask_id, canvas: [id...], vocab: {id: text}, end: int|null,
 *    steps: [{block, forward, filled: [[pos, tok]...], edited: [[pos, old, new]...], final_blocks}],
 *    eos_ids: [id...] (optional: live token counts stop after the first one, like the engine's output)}
 * `end` is the answer's end (absolute canvas position, exclusive) once known: positions after the block holding it
 * collapse into one line. While it is unknown (live), only the blocks decoded so far and the current one show.
 *
 *   const v = new RedraftTrajectory.View(element, data, {live: false});
 *   v.show(v.defaultStep());      // replay; v.addSteps(steps, vocab) / v.setEnd(end) while decoding live
 *
 * Every token text goes through esc(): model output is untrusted HTML.
 */
(function (global) {
  "use strict";
  const MASK_GLYPH = "\u2591";

  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  class View {
    constructor(root, data, opts) {
      this.opts = Object.assign({live: false, onStep: null}, opts || {});
      this.data = {prompt_len: data.prompt_len, block_length: data.block_length, mask_id: data.mask_id,
                   canvas: data.canvas.slice(), vocab: Object.assign({}, data.vocab || {}),
                   end: data.end === undefined ? null : data.end, steps: [],
                   eos: new Set(data.eos_ids || [])};
      this.k = 0;
      this.follow = true;  // live: keep showing the newest step while the slider sits at the end
      root.classList.add("rd-view");
      if (this.opts.live) root.classList.add("rd-live");
      this.root = root;
      const controls = el("div", "rd-controls");
      this.prev = el("button", "rd-prev", "\u25c0");
      this.prev.type = "button";
      this.prev.title = "previous step (\u2190)";
      this.slider = el("input", "rd-slider");
      this.slider.type = "range";
      this.slider.min = 0;
      this.slider.max = 0;
      this.slider.value = 0;
      this.next = el("button", "rd-next", "\u25b6");
      this.next.type = "button";
      this.next.title = "next step (\u2192)";
      controls.append(this.prev, this.slider, this.next);
      this.info = el("div", "rd-info");
      this.canvas = el("div", "rd-canvas");
      root.append(controls, this.info, this.canvas);
      this.slider.addEventListener("input", () => this._user(+this.slider.value));
      this.prev.addEventListener("click", () => this._user(this.k - 1));
      this.next.addEventListener("click", () => this._user(this.k + 1));
      root.tabIndex = 0;
      root.addEventListener("keydown", (ev) => {
        if (ev.target !== root && ev.target !== this.slider) return;
        if (ev.key === "ArrowLeft") { this._user(this.k - 1); ev.preventDefault(); }
        if (ev.key === "ArrowRight") { this._user(this.k + 1); ev.preventDefault(); }
      });
      this.addSteps(data.steps || [], {});
    }

    get numSteps() { return this.data.steps.length; }

    addSteps(steps, vocab) {
      Object.assign(this.data.vocab, vocab || {});
      for (const s of steps) this.data.steps.push(s);
      this.slider.max = this.numSteps;
      if (this.opts.live && this.follow) this.show(this.numSteps);
    }

    setEnd(end) {
      this.data.end = end;
      this.show(this.k);
    }

    /** The step a replay opens on: the first step with a T2T edit, else the last step that changed anything. */
    defaultStep() {
      const steps = this.data.steps;
      for (let i = 0; i < steps.length; i++) if (steps[i].edited.length) return i + 1;
      for (let i = steps.length - 1; i >= 0; i--) if (steps[i].filled.length) return i + 1;
      return steps.length;
    }

    /** Totals over steps 1..k: forwards, M2T fills, T2T edits and decoded (non-mask) answer tokens. */
    totals(k) {
      k = k === undefined ? this.numSteps : k;
      const t = {forwards: 0, fills: 0, edits: 0, tokens: 0};
      for (let i = 0; i < k; i++) {
        const s = this.data.steps[i];
        t.forwards += s.forward ? 1 : 0;
        t.fills += s.filled.length;
        t.edits += s.edited.length;
      }
      const cur = this.canvasAt(k), d = this.data;
      const stop = d.end === null ? cur.length : Math.min(d.end, cur.length);
      for (let p = d.prompt_len; p < stop; p++) {
        if (cur[p] === d.mask_id) continue;
        t.tokens += 1;
        if (d.eos.has(cur[p])) break;
      }
      return t;
    }

    canvasAt(k) {
      const cur = this.data.canvas.slice();
      for (let i = 0; i < k; i++) {
        for (const [p, t] of this.data.steps[i].filled) cur[p] = t;
        for (const [p, , t] of this.data.steps[i].edited) cur[p] = t;
      }
      return cur;
    }

    text(tok) {
      const t = this.data.vocab[tok];
      return t === undefined ? "<" + tok + ">" : t;
    }

    _user(k) {
      k = Math.max(0, Math.min(this.numSteps, k));
      this.follow = k === this.numSteps;
      this.show(k);
    }

    show(k) {
      const d = this.data, L = d.block_length;
      k = Math.max(0, Math.min(this.numSteps, k));
      this.k = k;
      this.slider.value = k;
      const cur = this.canvasAt(k);
      const last = k > 0 ? d.steps[k - 1] : null;
      const filled = new Set(last ? last.filled.map((x) => x[0]) : []);
      const edited = new Map(last ? last.edited.map((x) => [x[0], x[1]]) : []);
      const firstBlock = Math.floor(d.prompt_len / L);
      let reached = firstBlock;  // the furthest block decoded up to step k
      for (let i = 0; i < k; i++) reached = Math.max(reached, d.steps[i].block);
      const finalBlocks = last ? last.final_blocks : firstBlock;
      let stop = (reached + 1) * L;
      if (d.end !== null) stop = Math.min(stop, Math.ceil(Math.max(d.end, d.prompt_len + 1) / L) * L);
      stop = Math.min(stop, cur.length);
      const parts = [];
      for (let b = 0; b * L < stop; b++) {
        const cls = b < firstBlock ? "rd-blk rd-pb" : b < finalBlocks ? "rd-blk rd-fin"
          : b === (last ? last.block : firstBlock) ? "rd-blk rd-cur" : "rd-blk";
        parts.push(`<span class="${cls}" data-block="${b}">`);
        for (let p = b * L; p < Math.min((b + 1) * L, stop); p++) {
          const t = cur[p];
          if (p < d.prompt_len) { parts.push(`<span class="rd-t rd-p">${esc(this.text(t))}</span>`); continue; }
          if (t === d.mask_id) { parts.push(`<span class="rd-t rd-m">${MASK_GLYPH}</span>`); continue; }
          if (edited.has(p)) {
            const old = edited.get(p), oldText = old === d.mask_id ? MASK_GLYPH : this.text(old);
            parts.push(`<span class="rd-t rd-e" data-pos="${p}" title="T2T edit: ${esc(JSON.stringify(oldText))}` +
              ` \u2192 ${esc(JSON.stringify(this.text(t)))}"><span class="rd-old">${esc(oldText)}</span>` +
              `${esc(this.text(t))}</span>`);
          } else {
            parts.push(`<span class="rd-t${filled.has(p) ? " rd-f" : ""}" data-pos="${p}">${esc(this.text(t))}</span>`);
          }
        }
        parts.push("</span>");
      }
      const hidden = cur.length - stop;
      if (hidden > 0) {
        const why = d.end !== null && stop >= d.end ? "after the end of the answer" : "not reached yet";
        parts.push(`<span class="rd-tail">\n\u2026 ${hidden} more positions ${why}</span>`);
      }
      this.canvas.innerHTML = parts.join("");
      const tot = this.totals(k);
      const what = last ? `block ${last.block}: ${last.filled.length} filled, ${last.edited.length} edited` +
        (last.forward ? "" : " (block ended without a forward)") : "initial canvas";
      this.info.textContent = `step ${k}/${this.numSteps}, ${what} \u2014 totals: ${tot.forwards} forwards, ` +
        `${tot.fills} fills, ${tot.edits} edits`;
      if (this.opts.onStep) this.opts.onStep(k, tot);
    }
  }

  function legend() {
    const box = el("div", "rd-legend");
    box.innerHTML = '<span class="rd-p">prompt</span><span class="rd-m">' + MASK_GLYPH + "</span> mask " +
      '<span class="rd-f">fill (M2T)</span><span class="rd-e"><span class="rd-old">old</span>edit (T2T)</span>' +
      '<span class="rd-blk rd-fin"><span class="rd-t">final block</span></span>';
    return box;
  }

  global.RedraftTrajectory = {View, legend, esc, MASK_GLYPH};
})(typeof window !== "undefined" ? window : this);
