// StreamView's front end (an anywidget ES module). The kernel sends the text as custom
// messages: {t: "append", text, at} (a delta starting at offset `at`), {t: "reset"} (a retry
// starts over) and {t: "sync", text} (the whole text, the answer to {t: "hello"}, which a
// view sends only when it lacks text: see rtq_nb/notebook/_stream_widget.py). State traits:
// status, reason, stats (metrics), markdown, stall_s. The view sends {t: "cancel"} from its button.
const LABELS = {
  queued: "queued", running: "running", retrying: "retrying", done: "done", failed: "failed",
  timeout: "timeout", expired: "expired", cancelled: "cancelled", error: "error",
};
const TERMINAL = new Set(["done", "failed", "timeout", "expired", "cancelled", "error"]);

function esc(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

const KW = /\b(def|class|return|if|elif|else|for|while|import|from|as|with|try|except|finally|raise|async|await|yield|lambda|function|const|let|var|new|in|not|and|or|is|None|True|False|null|true|false|fn|pub|struct|impl|match|type|interface|export|SELECT|FROM|WHERE)\b/g;

function highlight(code) {  // escaped code -> spans for strings, comments, numbers, keywords
  const out = [];
  const re = /("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|#[^\n]*|\/\/[^\n]*)/g;
  let last = 0;
  for (const m of code.matchAll(re)) {
    out.push(plain(code.slice(last, m.index)));
    const cls = m[0][0] === "#" || m[0][0] === "/" ? "c" : "s";
    out.push(`<span class="rtq-hl-${cls}">${esc(m[0])}</span>`);
    last = m.index + m[0].length;
  }
  out.push(plain(code.slice(last)));
  return out.join("");
  function plain(s) {
    return esc(s).replace(KW, '<span class="rtq-hl-k">$1</span>')
      .replace(/\b(\d+(?:\.\d+)?)\b/g, '<span class="rtq-hl-n">$1</span>');
  }
}

function inline(s) {  // escaped inline markdown: code, bold, italic, links (http/https only)
  const parts = s.split(/(`[^`]+`)/g);
  return parts.map((p, i) => {
    if (i % 2) return `<code>${esc(p.slice(1, -1))}</code>`;
    return esc(p)
      .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
      .replace(/__([^_]+)__/g, "<strong>$1</strong>")
      .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>")
      .replace(/\[([^\]]+)\]\((https?:\/\/[^)\s]+)\)/g,
        '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>');
  }).join("");
}

function cells(row) {
  return row.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
}

// A small Markdown renderer: headings, paragraphs, fenced code (highlighted), tables, lists,
// block quotes, rules, inline code/bold/italic/links. Everything else is escaped text. An
// unclosed fence (mid-stream) renders as code so far.
export function renderMarkdown(text) {
  const lines = text.split("\n");
  const html = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++;
      const lang = fence[2] ? ` data-lang="${esc(fence[2])}"` : "";
      html.push(`<pre class="rtq-code"${lang}><code>${highlight(body.join("\n"))}</code></pre>`);
      continue;
    }
    if (/^\s*\|.*\|\s*$/.test(line) && i + 1 < lines.length && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1])) {
      const head = cells(line);
      i += 2;
      const rows = [];
      while (i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i])) rows.push(cells(lines[i++]));
      html.push("<table><thead><tr>" + head.map((c) => `<th>${inline(c)}</th>`).join("") +
        "</tr></thead><tbody>" + rows.map((r) => "<tr>" +
          r.map((c) => `<td>${inline(c)}</td>`).join("") + "</tr>").join("") + "</tbody></table>");
      continue;
    }
    const h = line.match(/^(#{1,6})\s+(.*)$/);
    if (h) { html.push(`<h${h[1].length}>${inline(h[2])}</h${h[1].length}>`); i++; continue; }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { html.push("<hr>"); i++; continue; }
    const li = /^\s*([-*+]|\d+[.)])\s+/;
    if (li.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const items = [];
      while (i < lines.length && li.test(lines[i])) items.push(lines[i++].replace(li, ""));
      const tag = ordered ? "ol" : "ul";
      html.push(`<${tag}>` + items.map((t) => `<li>${inline(t)}</li>`).join("") + `</${tag}>`);
      continue;
    }
    if (/^\s*>/.test(line)) {
      const q = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) q.push(lines[i++].replace(/^\s*>\s?/, ""));
      html.push(`<blockquote>${inline(q.join(" "))}</blockquote>`);
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^(\s*(```|~~~|#{1,6}\s|>|[-*+]\s|\d+[.)]\s|\|))/.test(lines[i])) {
      para.push(lines[i++]);
    }
    if (!para.length) para.push(lines[i++]);
    html.push(`<p>${inline(para.join("\n"))}</p>`);
  }
  return html.join("");
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
}

function metricsText(m) {
  const parts = [`queue wait ${fmtMs(m.queue_wait_ms)}`, `TTFT ${fmtMs(m.ttft_ms)}`,
    `${m.tokens ?? 0} tokens`];
  if (m.tokens_per_s !== null && m.tokens_per_s !== undefined) {
    parts.push(`${m.tokens_per_s.toFixed(1)} tok/s`);
  }
  if (m.elapsed_ms !== null && m.elapsed_ms !== undefined) parts.push(`elapsed ${fmtMs(m.elapsed_ms)}`);
  if (m.usage) parts.push(`usage ${m.usage.prompt_tokens} + ${m.usage.completion_tokens} tokens`);
  return parts.join(" · ");
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render({ model, el: root }) {
  let text = "";
  let lastToken = 0;
  let follow = true;
  let frame = 0;
  const box = el("div", "rtq-sv");
  const head = el("div", "rtq-sv-head");
  const badge = el("span", "rtq-sv-badge");
  const reason = el("span", "rtq-sv-reason");
  const metrics = el("span", "rtq-sv-metrics");
  const stall = el("span", "rtq-sv-stall");
  const copy = el("button", "rtq-sv-btn rtq-sv-copy", "Copy");
  const cancel = el("button", "rtq-sv-btn rtq-stream-cancel", "Cancel");
  const scroll = el("div", "rtq-sv-scroll");
  const body = el("div", "rtq-stream-text");
  head.append(badge, metrics, stall, reason, el("span", "rtq-sv-gap"), copy, cancel);
  scroll.append(body);
  box.append(head, scroll);
  root.append(box);

  scroll.addEventListener("scroll", () => {
    follow = scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 24;
  });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(text); copy.textContent = "Copied"; }
    catch { copy.textContent = "Copy failed"; }
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });
  cancel.addEventListener("click", () => {
    cancel.disabled = true; cancel.textContent = "Cancelling…";
    model.send({ t: "cancel" });
  });

  function paint() {
    frame = 0;
    if (model.get("markdown")) {
      body.classList.add("rtq-md");
      body.innerHTML = renderMarkdown(text);
    } else {
      body.classList.remove("rtq-md");
      if (body.childNodes.length !== 1 || body.firstChild.nodeType !== 3) body.textContent = "";
      if (!body.firstChild) body.append(document.createTextNode(""));
      const node = body.firstChild;
      if (text.startsWith(node.data)) node.appendData(text.slice(node.data.length));
      else node.data = text;
    }
    if (follow) scroll.scrollTop = scroll.scrollHeight;
  }
  function schedule() {
    if (frame) return;
    frame = (typeof requestAnimationFrame === "function" ? requestAnimationFrame : setTimeout)(paint);
  }
  function state() {
    const st = model.get("status");
    badge.textContent = LABELS[st] || st;
    box.dataset.status = st;
    badge.className = `rtq-sv-badge rtq-status rtq-status-${st}`;
    reason.textContent = model.get("reason") || "";
    const stats = model.get("stats") || {};
    metrics.textContent = metricsText(stats);
    if ((stats.chars || 0) > text.length) hello();
    if (TERMINAL.has(st)) { cancel.disabled = true; cancel.textContent = "Cancel"; stall.textContent = ""; }
  }
  let asked = false;  // a hello is on its way: the sync brings the whole text
  function hello() {
    if (!asked) { asked = true; model.send({ t: "hello" }); }
  }
  function onMsg(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.t === "append") {
      if (msg.at > text.length) { hello(); return; }  // missed a delta: the sync has it
      text = text.slice(0, msg.at) + msg.text;
      lastToken = Date.now();
    } else if (msg.t === "reset") { text = ""; }
    else if (msg.t === "sync") { text = msg.text; asked = false; if (text) lastToken = Date.now(); }
    else return;
    stall.textContent = "";
    schedule();
  }
  const tick = setInterval(() => {
    const st = model.get("status");
    const limit = (model.get("stall_s") || 3) * 1000;
    const quiet = lastToken ? Date.now() - lastToken : 0;
    stall.textContent = st === "running" && lastToken && quiet >= limit
      ? `no tokens for ${Math.floor(quiet / 1000)} s` : "";
  }, 500);
  model.on("msg:custom", onMsg);
  model.on("change:status", state);
  model.on("change:reason", state);
  model.on("change:stats", state);
  model.on("change:markdown", schedule);
  state();
  if (model.get("status") !== "queued") hello();  // text was sent before this view existed
  return () => {
    clearInterval(tick);
    model.off("msg:custom", onMsg);
    model.off("change:status", state);
    model.off("change:reason", state);
    model.off("change:stats", state);
    model.off("change:markdown", schedule);
  };
}

export default { render };
