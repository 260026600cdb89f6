/* edge-specens chat page: plain script, no build step (vendor/ holds marked, DOMPurify, highlight.js).
 *
 * Talks to the server it came from: /v1/chat/completions (streamed), /v1/models, /health, and
 * /webui/ensemble.json when the server is edge-specens (members, defaults, provenance). Against any other
 * OpenAI-compatible server it still chats: the ensemble's extras are simply not shown.
 *
 * Everything a model writes is escaped: Markdown is rendered with raw HTML turned into text, then
 * sanitized by DOMPurify; a provenance view builds its spans with textContent. The page's CSP
 * (server/webui.py) forbids inline scripts besides.
 */
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEYS = {
    convs: "edge-specens.conversations.v1",
    settings: "edge-specens.settings.v1",
    key: "edge-specens.api-key",
  };
  const SAMPLING = ["temperature", "max_tokens", "top_k", "top_p", "min_p", "seed", "strategy"];
  const INTEGER = new Set(["max_tokens", "top_k", "seed"]);
  const N_COLOURS = 6; // .p-m0 .. .p-m5 in style.css
  const HEALTH_EVERY_MS = 4000;

  let props = null; // /webui/ensemble.json of an edge-specens server; null for any other server
  let modelId = null; // the model id /v1/models names
  let apiKey = localStorage.getItem(KEYS.key) || "";
  let settings = load(KEYS.settings, {});
  let store = load(KEYS.convs, null);
  let running = null; // {controller, msg} while a reply streams
  let editing = -1; // index of the user message being edited, or -1
  let keyPrompt = null; // the open API-key question (one at a time)

  // ------------------------------------------------------------------ storage
  function load(key, fallback) {
    try {
      const v = JSON.parse(localStorage.getItem(key));
      return v === null || v === undefined ? fallback : v;
    } catch (e) {
      return fallback;
    }
  }
  function save() {
    try {
      localStorage.setItem(KEYS.convs, JSON.stringify(store));
    } catch (e) {
      notice("This browser's storage is full: export and delete old conversations to keep new ones.");
    }
  }
  function saveSettings() {
    localStorage.setItem(KEYS.settings, JSON.stringify(settings));
  }
  function newId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  }
  function newConversation(system) {
    const c = { id: newId(), title: "New chat", system: system || "", created: Date.now(), messages: [] };
    store.convs.unshift(c);
    store.current = c.id;
    return c;
  }
  function current() {
    let c = store.convs.find((x) => x.id === store.current);
    if (!c) c = store.convs[0] || newConversation("");
    store.current = c.id;
    return c;
  }
  if (!store || !Array.isArray(store.convs)) store = { convs: [], current: null };

  // ------------------------------------------------------------------ the server
  async function api(path, options = {}) {
    for (;;) {
      const headers = Object.assign({}, options.headers || {});
      if (apiKey) headers.Authorization = "Bearer " + apiKey;
      const r = await fetch(path, Object.assign({}, options, { headers }));
      if (r.status !== 401) return r;
      await askKey(apiKey ? "The server refused that key; try again." : "");
    }
  }

  function askKey(message) {
    if (keyPrompt) return keyPrompt;
    const dialog = $("key-dialog");
    $("key-error").hidden = !message;
    $("key-error").textContent = message;
    $("key-input").value = "";
    keyPrompt = new Promise((resolve, reject) => {
      dialog.addEventListener(
        "close",
        () => {
          keyPrompt = null;
          const value = $("key-input").value.trim();
          if (dialog.returnValue === "ok" && value) {
            apiKey = value;
            localStorage.setItem(KEYS.key, value);
            resolve();
          } else {
            reject(new Error("this server needs an API key"));
          }
        },
        { once: true },
      );
    });
    dialog.returnValue = "";
    dialog.showModal();
    return keyPrompt;
  }

  async function connect() {
    try {
      const r = await api("/webui/ensemble.json");
      if (r.ok) {
        const p = await r.json();
        if (p && p.server === "edge-specens") props = p;
      }
    } catch (e) {
      /* not an edge-specens server, or no key given: chat still works */
    }
    try {
      const r = await api("/v1/models");
      if (r.ok) modelId = ((await r.json()).data || [])[0]?.id || null;
    } catch (e) {
      /* the chat request will say what is wrong */
    }
    renderHeader();
    renderLegend();
    pollHealth();
    document.body.dataset.ready = "1";
  }

  let healthTimer = null;
  async function pollHealth() {
    clearTimeout(healthTimer);
    const el = $("health");
    try {
      const r = await fetch("/health", { cache: "no-store" });
      if (r.status === 404) {
        el.hidden = true;
        return;
      }
      const h = await r.json();
      showHealth(h);
    } catch (e) {
      el.className = "health bad";
      el.textContent = "server unreachable";
    }
    healthTimer = setTimeout(pollHealth, HEALTH_EVERY_MS);
  }

  function showHealth(h) {
    const el = $("health");
    const lost = (h.members || []).filter((m) => m.status && m.status !== "ok");
    let cls = "ok";
    let text = "ready";
    if (h.status === "error") {
      cls = "bad";
      text = "the server's worker stopped";
    } else if (lost.length) {
      cls = "bad";
      text = "lost: " + lost.map((m) => m.name).join(", ");
    } else if (h.busy) {
      cls = "busy";
      text = "busy" + (h.waiting ? ` · ${h.waiting} waiting` : "");
    } else if (h.status && h.status !== "ok") {
      cls = "busy";
      text = String(h.status);
    }
    el.className = "health " + cls;
    el.textContent = text;
    el.title = lost.map((m) => `${m.name}: ${m.error || m.status}`).join("\n");
    const names = new Set(lost.map((m) => m.name));
    for (const li of $("members").children) li.classList.toggle("lost", names.has(li.dataset.name));
  }

  // ------------------------------------------------------------------ header and legend
  function fmtCount(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "B";
    if (n >= 1e6) return Math.round(n / 1e6) + "M";
    if (n >= 1e3) return Math.round(n / 1e3) + "k";
    return String(n);
  }
  function fmtBytes(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + " GB";
    if (n >= 1e6) return Math.round(n / 1e6) + " MB";
    return Math.max(1, Math.round(n / 1e3)) + " kB";
  }
  function fmtDevice(d) {
    if (!d) return "";
    if (d.startsWith("rpc:")) return "remote " + d.slice(4);
    return d.toUpperCase();
  }
  function swatch(cls) {
    const s = document.createElement("span");
    s.className = "swatch " + cls;
    s.setAttribute("aria-hidden", "true");
    return s;
  }
  function memberName(k) {
    const m = props && props.members[k];
    return m ? m.name : k === null || k === undefined ? "?" : `member ${k}`;
  }

  function renderHeader() {
    $("model-name").textContent = (props && props.model) || modelId || "chat";
    document.title = ((props && props.model) || modelId || "chat") + " · edge-specens";
    const ul = $("members");
    ul.textContent = "";
    if (!props) return;
    for (const m of props.members) {
      const li = document.createElement("li");
      li.dataset.name = m.name;
      li.appendChild(swatch("p-m" + (m.index % N_COLOURS)));
      const bits = [m.name];
      if (m.n_params) bits.push(fmtCount(m.n_params) + " params");
      if (m.file_bytes) bits.push(fmtBytes(m.file_bytes));
      if (m.weight !== undefined) bits.push("w " + +m.weight.toFixed(3));
      if (m.role) bits.push(m.role + (m.role === "amateur" && props.mu !== null ? ` μ ${props.mu}` : ""));
      bits.push(fmtDevice(m.device));
      li.appendChild(document.createTextNode(bits.filter(Boolean).join(" · ")));
      ul.appendChild(li);
    }
  }

  function renderLegend() {
    const el = $("legend");
    el.hidden = !settings.provenance;
    el.textContent = "";
    if (!settings.provenance) return;
    const item = (cls, text) => {
      const s = document.createElement("span");
      s.appendChild(swatch(cls));
      s.appendChild(document.createTextNode(text));
      el.appendChild(s);
    };
    if (!props) {
      el.textContent = "This server does not say where tokens came from (an edge-specens server does).";
      return;
    }
    props.members.forEach((m) => item("p-m" + (m.index % N_COLOURS), `${m.name}'s draft`));
    item("p-lookup", "prompt lookup");
    item("p-resampled", "resampled after a rejection");
    item("p-sampled", "drawn from r");
  }

  function notice(text) {
    const n = document.createElement("p");
    n.className = "note error";
    n.setAttribute("role", "alert");
    n.textContent = text;
    $("messages").appendChild(n);
  }

  // ------------------------------------------------------------------ rendering messages
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  const haveMarkdown = () => window.marked && window.DOMPurify;
  function setupMarkdown() {
    if (!haveMarkdown()) return;
    // raw HTML in a reply is shown as the text it is, never parsed as HTML
    window.marked.use({ gfm: true, renderer: { html: (token) => escapeHtml(token.text) } });
  }

  function renderMarkdown(el, text, final) {
    if (!haveMarkdown()) {
      el.textContent = text; // the libraries did not load: plain text is still safe and readable
      el.style.whiteSpace = "pre-wrap";
      return;
    }
    const html = window.marked.parse(text, { async: false });
    el.innerHTML = window.DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form"] });
    for (const a of el.querySelectorAll("a")) {
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
    for (const code of el.querySelectorAll("pre > code")) {
      if (final && window.hljs) {
        const lang = [...code.classList].find((c) => c.startsWith("language-"));
        if (!lang || window.hljs.getLanguage(lang.slice(9))) window.hljs.highlightElement(code);
      }
      const b = document.createElement("button");
      b.type = "button";
      b.className = "copy";
      b.textContent = "Copy";
      b.setAttribute("aria-label", "Copy this code");
      b.addEventListener("click", () => copyText(code.textContent, b));
      code.parentElement.appendChild(b);
    }
  }

  function describe(how, member) {
    switch (how) {
      case "accepted":
        return `${memberName(member)}'s draft, accepted`;
      case "bonus":
        return `${memberName(member)}'s draft at the extra position, accepted`;
      case "lookup":
        return "a prompt-lookup draft, accepted";
      case "resampled":
        return "resampled from the residual after a rejected draft";
      case "sampled":
        return "drawn from r";
      case "flush":
        return "held-back text released at the end";
      default:
        return "origin not reported";
    }
  }
  function provClass(how, member) {
    if (how === "lookup") return "p-lookup";
    if (how === "resampled") return "p-resampled";
    if ((how === "accepted" || how === "bonus") && member !== null && member !== undefined) return "p-m" + (member % N_COLOURS);
    return "p-sampled";
  }
  function renderProvenance(el, spans) {
    el.textContent = "";
    el.className = "body prov";
    const frag = document.createDocumentFragment();
    for (const [text, how, member, p] of spans) {
      const s = document.createElement("span");
      s.className = provClass(how, member);
      s.dataset.how = how;
      s.textContent = text; // text, never HTML
      let title = JSON.stringify(text) + " — " + describe(how, member);
      if (typeof p === "number") title += ` · p(r) = ${p.toFixed(3)}`;
      s.title = title;
      frag.appendChild(s);
    }
    el.appendChild(frag);
  }

  function whatRan(s) {
    if (!s || !s.strategy) return "";
    const alg = s.algorithm || s.strategy;
    let txt = alg + (s.gamma && s.gamma.length ? ` [${s.gamma.join(",")}]` : "");
    if (s.lookup) txt += " + lookup";
    if (s.parallel) txt += " side by side";
    return s.strategy !== alg ? `${s.strategy} → ${txt}` : txt;
  }
  function rate(n, seconds) {
    const r = n / seconds;
    return r >= 100 ? Math.round(r) : r.toFixed(1);
  }
  function statsLine(m) {
    const s = m.stats;
    const parts = [];
    if (s) {
      parts.push(`${s.new_tokens} tokens`);
      const read = (s.prompt_tokens || 0) - (s.reused_tokens || 0);
      if (s.prompt_seconds > 0 && read > 0) {
        parts.push(`prompt ${rate(read, s.prompt_seconds)} tok/s` + (s.reused_tokens ? ` (${s.reused_tokens} reused)` : ""));
      }
      const gen = s.seconds - s.prompt_seconds;
      if (gen > 0 && s.new_tokens) parts.push(`generation ${rate(s.new_tokens, gen)} tok/s`);
      const ran = whatRan(s);
      if (ran) parts.push(ran);
      if (typeof s.acceptance_rate === "number") parts.push(`${Math.round(s.acceptance_rate * 100)}% of proposals accepted`);
    } else if (m.t && m.t.chunks) {
      const n = (m.usage && m.usage.completion_tokens) || m.t.chunks;
      parts.push(`${n} tokens`);
      if (m.t.first) parts.push(`first token after ${m.t.first.toFixed(2)} s`);
      if (m.t.gen > 0 && n > 1) parts.push(`generation ≈ ${rate(n - 1, m.t.gen)} tok/s`);
    }
    if (m.stopped) parts.push("stopped");
    else if (m.finish === "length") parts.push("max tokens reached");
    if (s && s.note && !m.stopped) parts.push(s.note);
    return parts.join(" · ");
  }

  function messageView(m, i, conv) {
    const div = document.createElement("div");
    div.className = "msg " + m.role;
    div.dataset.index = i;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = m.role === "user" ? "you" : "assistant";
    div.appendChild(who);
    const body = document.createElement("div");
    body.className = "body";
    div.appendChild(body);
    const last = i === conv.messages.length - 1;
    const lastUser = conv.messages.map((x) => x.role).lastIndexOf("user");
    if (m.role === "user" && i === editing) {
      const box = document.createElement("textarea");
      box.className = "edit-box";
      box.value = m.content;
      box.setAttribute("aria-label", "Edit your message");
      body.appendChild(box);
      const acts = actions(div);
      acts.appendChild(button("Send", "primary", () => resendEdited(i, box.value), "resend"));
      acts.appendChild(button("Cancel", "", () => { editing = -1; renderMessages(); }, "cancel-edit"));
      box.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          resendEdited(i, box.value);
        } else if (e.key === "Escape") {
          editing = -1;
          renderMessages();
        }
      });
      setTimeout(() => box.focus(), 0);
      return div;
    }
    fillBody(body, m, !(running && running.msg === m));
    if (m.role === "assistant") {
      const st = document.createElement("div");
      st.className = "stats";
      if (m.error) {
        st.classList.add("error");
        st.textContent = "error: " + m.error;
      } else {
        st.textContent = statsLine(m);
      }
      div.appendChild(st);
    }
    if (!running) {
      const acts = actions(div);
      if (m.content) acts.appendChild(button("Copy", "link", (e) => copyText(m.content, e.target), "copy"));
      if (m.role === "assistant" && last) acts.appendChild(button("Regenerate", "link", regenerate, "regenerate"));
      if (m.role === "user" && i === lastUser) {
        acts.appendChild(button("Edit", "link", () => { editing = i; renderMessages(); }, "edit"));
      }
    }
    return div;
  }
  function actions(div) {
    const a = document.createElement("div");
    a.className = "actions";
    div.appendChild(a);
    return a;
  }
  function button(text, cls, onClick, name) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = text;
    if (name) b.dataset.action = name;
    b.addEventListener("click", onClick);
    return b;
  }

  function fillBody(body, m, final) {
    body.className = "body";
    if (m.role === "user") {
      body.textContent = m.content;
      return;
    }
    if (settings.provenance && m.p) {
      renderProvenance(body, m.p);
    } else {
      renderMarkdown(body, m.content, final);
      if (settings.provenance && m.content && final) {
        const n = document.createElement("p");
        n.className = "note";
        n.textContent = "(no provenance was recorded for this reply)";
        body.appendChild(n);
      }
    }
    if (!final) body.classList.add("streaming");
  }

  function renderMessages() {
    const box = $("messages");
    const conv = current();
    box.textContent = "";
    if (!conv.messages.length) {
      const e = document.createElement("div");
      e.className = "empty";
      e.textContent = props
        ? "Ask something. Switch on Provenance to see which member drafted each token of the reply."
        : "Ask something.";
      box.appendChild(e);
    }
    conv.messages.forEach((m, i) => box.appendChild(messageView(m, i, conv)));
    box.scrollTop = box.scrollHeight;
  }

  let frame = 0;
  function renderStreaming() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (!running) return;
      const box = $("messages");
      const view = box.lastElementChild;
      if (!view || !view.classList.contains("assistant")) return;
      const near = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      fillBody(view.querySelector(".body"), running.msg, false);
      view.querySelector(".stats").textContent = "";
      if (near) box.scrollTop = box.scrollHeight;
    });
  }

  function renderConversations() {
    const ul = $("conversations");
    ul.textContent = "";
    for (const c of store.convs) {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      if (c.id === store.current) li.classList.add("current");
      const open = button(c.title || "Untitled", "open-conv", () => switchTo(c.id));
      open.title = c.title || "Untitled";
      if (c.id === store.current) open.setAttribute("aria-current", "true");
      li.appendChild(open);
      const acts = document.createElement("span");
      acts.className = "conv-actions";
      const ren = button("✎", "", () => rename(c), "rename");
      ren.setAttribute("aria-label", `Rename “${c.title}”`);
      const del = button("✕", "", () => remove(c), "delete");
      del.setAttribute("aria-label", `Delete “${c.title}”`);
      acts.append(ren, del);
      li.appendChild(acts);
      ul.appendChild(li);
    }
  }

  function renderAll() {
    renderConversations();
    renderMessages();
  }

  // ------------------------------------------------------------------ conversations
  function switchTo(id) {
    if (running) return;
    store.current = id;
    editing = -1;
    save();
    renderAll();
    $("sidebar").classList.remove("open");
    $("input").focus();
  }
  function rename(c) {
    const d = $("rename-dialog");
    $("rename-input").value = c.title;
    d.returnValue = "";
    d.addEventListener(
      "close",
      () => {
        const v = $("rename-input").value.trim();
        if (d.returnValue === "ok" && v) {
          c.title = v.slice(0, 200);
          save();
          renderConversations();
        }
      },
      { once: true },
    );
    d.showModal();
  }
  function remove(c) {
    if (running) return;
    if (!window.confirm(`Delete “${c.title}”?`)) return;
    store.convs = store.convs.filter((x) => x !== c);
    if (store.current === c.id) store.current = store.convs[0] ? store.convs[0].id : null;
    current();
    save();
    renderAll();
  }

  function exportAll() {
    const data = { format: "edge-specens-chats", version: 1, exported: new Date().toISOString(), conversations: store.convs };
    const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 1)], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "edge-specens-chats.json";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function validConversation(c) {
    return (
      c && typeof c === "object" && Array.isArray(c.messages) &&
      c.messages.every((m) => m && ["user", "assistant", "system"].includes(m.role) && typeof m.content === "string")
    );
  }
  function importText(text) {
    let data;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new Error("that file is not JSON");
    }
    const list = Array.isArray(data) ? data : data && data.conversations;
    if (!Array.isArray(list) || !list.every(validConversation)) {
      throw new Error("that file holds no conversations exported from this page");
    }
    const ids = new Set(store.convs.map((c) => c.id));
    for (const c of list.slice().reverse()) {
      const conv = {
        id: typeof c.id === "string" && !ids.has(c.id) ? c.id : newId(),
        title: typeof c.title === "string" && c.title ? c.title.slice(0, 200) : "Imported chat",
        system: typeof c.system === "string" ? c.system : "",
        created: typeof c.created === "number" ? c.created : Date.now(),
        messages: c.messages
          .filter((m) => m.role !== "system")
          .map((m) => cleanMessage(m)),
      };
      ids.add(conv.id);
      store.convs.unshift(conv);
      store.current = conv.id;
    }
    save();
    renderAll();
    return list.length;
  }
  function cleanMessage(m) {
    const out = { role: m.role, content: m.content };
    if (Array.isArray(m.p) && m.p.every((s) => Array.isArray(s) && typeof s[0] === "string")) out.p = m.p;
    if (m.stats && typeof m.stats === "object") out.stats = m.stats;
    for (const k of ["finish", "error"]) if (typeof m[k] === "string") out[k] = m[k];
    if (m.stopped === true) out.stopped = true;
    return out;
  }

  // ------------------------------------------------------------------ chatting
  function extraFields() {
    if (!settings.extra) return {};
    try {
      const v = JSON.parse(settings.extra);
      return v && typeof v === "object" && !Array.isArray(v) ? v : {};
    } catch (e) {
      return {};
    }
  }
  function requestBody(conv, upto) {
    const messages = [];
    if (conv.system && conv.system.trim()) messages.push({ role: "system", content: conv.system });
    for (const m of conv.messages.slice(0, upto)) {
      if (m.role === "assistant" && !m.content) continue; // a failed reply
      messages.push({ role: m.role, content: m.content });
    }
    const body = { messages, stream: true };
    if (modelId) body.model = modelId;
    for (const f of SAMPLING) {
      const v = settings[f];
      if (v === undefined || v === null || v === "") continue;
      if (f === "strategy" && !props) continue; // only edge-specens knows strategies
      body[f] = v;
    }
    if (props) body.provenance = true; // an extra only edge-specens reads: others never see it
    if (settings.logprobs) body.logprobs = true; // OpenAI's own field: hover shows p(r)
    return Object.assign(body, extraFields());
  }

  async function readEvents(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = event
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }

  function keepStats(s) {
    const out = {};
    for (const k of ["strategy", "algorithm", "gamma", "new_tokens", "seconds", "prompt_seconds", "prompt_tokens",
      "reused_tokens", "acceptance_rate", "parallel", "note"]) {
      if (s[k] !== undefined) out[k] = s[k];
    }
    out.lookup = !!(s.lookup_stats && s.lookup_stats.tries > 0);
    return out;
  }

  async function generate(conv) {
    const upto = conv.messages.length;
    const msg = { role: "assistant", content: "" };
    if (props) msg.p = [];
    conv.messages.push(msg);
    const controller = new AbortController();
    running = { controller, msg };
    setBusy(true);
    renderMessages();
    const t0 = performance.now();
    const t = { chunks: 0 };
    const tokenSpans = []; // the spans of real tokens, in order (log-probabilities attach to them)
    let seenLogprobs = 0;
    try {
      const r = await api("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(requestBody(conv, upto)),
        signal: controller.signal,
      });
      if (!r.ok) {
        msg.error = await errorText(r);
        return;
      }
      await readEvents(r, (chunk) => {
        if (chunk.error) {
          msg.error = chunk.error.message || "the server reported an error";
          return;
        }
        const choice = (chunk.choices || [])[0];
        const piece = choice ? (choice.delta && choice.delta.content) || choice.text || "" : "";
        const es = chunk.edge_specens;
        if (piece) {
          const now = performance.now();
          if (!t.chunks) t.first = (now - t0) / 1000;
          else t.gen = (now - t0) / 1000 - t.first;
          t.chunks += 1;
          msg.content += piece;
          if (msg.p) {
            if (es && Array.isArray(es.provenance)) {
              for (const s of es.provenance) {
                const span = [s.text, s.how, s.member === undefined ? null : s.member];
                msg.p.push(span);
                if (s.token !== null && s.token !== undefined) tokenSpans.push(span);
              }
            } else {
              msg.p.push([piece, "?", null]);
            }
          }
          renderStreaming();
        }
        // log-probabilities, one per token in order: the k-th belongs to the k-th token's span
        const lps = choice && choice.logprobs && Array.isArray(choice.logprobs.content) ? choice.logprobs.content : [];
        for (const lp of lps) {
          const span = tokenSpans[seenLogprobs++];
          if (span && typeof lp.logprob === "number") span[3] = Math.exp(lp.logprob);
        }
        if (es && es.strategy) msg.stats = keepStats(es);
        if (chunk.usage) msg.usage = chunk.usage;
        if (choice && choice.finish_reason) msg.finish = choice.finish_reason;
      });
    } catch (e) {
      if (e.name === "AbortError") msg.stopped = true;
      else msg.error = e.message || String(e);
    } finally {
      if (!msg.stats && t.chunks) msg.t = t;
      running = null;
      if (conv.title === "New chat") conv.title = titleFrom(conv);
      save();
      setBusy(false);
      renderAll();
      pollHealth();
    }
  }

  async function errorText(r) {
    try {
      const j = await r.json();
      if (j && j.error) return j.error.message || JSON.stringify(j.error);
    } catch (e) {
      /* not JSON */
    }
    return `HTTP ${r.status}`;
  }

  function titleFrom(conv) {
    const first = conv.messages.find((m) => m.role === "user");
    const t = first ? first.content.trim().replace(/\s+/g, " ") : "";
    return t ? (t.length > 48 ? t.slice(0, 47) + "…" : t) : "New chat";
  }

  function setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    document.body.dataset.state = busy ? "running" : "idle";
    for (const id of ["new-chat", "import"]) $(id).disabled = busy;
  }

  function send() {
    const input = $("input");
    const text = input.value;
    if (running || !text.trim()) return;
    const conv = current();
    conv.messages.push({ role: "user", content: text });
    if (conv.title === "New chat") conv.title = titleFrom(conv);
    input.value = "";
    autogrow();
    editing = -1;
    save();
    renderConversations();
    generate(conv);
  }

  function regenerate() {
    const conv = current();
    if (running || !conv.messages.length) return;
    if (conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
    generate(conv);
  }

  function resendEdited(i, text) {
    if (running || !text.trim()) return;
    const conv = current();
    conv.messages = conv.messages.slice(0, i);
    conv.messages.push({ role: "user", content: text });
    editing = -1;
    generate(conv);
  }

  async function copyText(text, el) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch (e) {
      ok = false;
    }
    if (!ok) {
      const ta = document.createElement("textarea"); // http:// on another machine has no clipboard API
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.style.position = "fixed";
      ta.style.opacity = "0";
      document.body.appendChild(ta);
      ta.select();
      try {
        ok = document.execCommand("copy");
      } catch (e) {
        ok = false;
      }
      ta.remove();
    }
    if (el) {
      const was = el.textContent;
      el.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(() => (el.textContent = was), 1200);
    }
  }

  // ------------------------------------------------------------------ settings
  function applyTheme() {
    const t = settings.theme || "auto";
    if (t === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = t;
  }
  function openSettings() {
    const d = (props && props.defaults) || {};
    for (const f of SAMPLING) {
      const el = $("s-" + f);
      if (f === "strategy") {
        el.textContent = "";
        const def = document.createElement("option");
        def.value = "";
        def.textContent = props ? `server default (${d.strategy || "auto"})` : "server default";
        el.appendChild(def);
        for (const s of (props && props.strategies) || []) {
          const o = document.createElement("option");
          o.value = s;
          o.textContent = s;
          el.appendChild(o);
        }
        el.disabled = !props;
      } else {
        const v = d[f];
        el.placeholder = v === null || v === undefined ? (f === "max_tokens" ? "until the context is full" : f === "seed" ? "random" : "") : String(v);
      }
      el.value = settings[f] === undefined || settings[f] === null ? "" : String(settings[f]);
    }
    $("s-system").value = current().system || "";
    $("s-theme").value = settings.theme || "auto";
    $("s-extra").value = settings.extra || "";
    $("s-logprobs").checked = !!settings.logprobs;
    $("settings-error").hidden = true;
    $("settings").returnValue = "";
    $("settings").showModal();
  }
  function readSettingsForm() {
    const out = {};
    for (const f of SAMPLING) {
      const raw = $("s-" + f).value.trim();
      if (raw === "") continue;
      if (f === "strategy") {
        out[f] = raw;
        continue;
      }
      const n = Number(raw);
      if (!Number.isFinite(n) || (INTEGER.has(f) && !Number.isInteger(n))) {
        throw new Error(`${f.replace("_", " ")} must be ${INTEGER.has(f) ? "a whole number" : "a number"}`);
      }
      out[f] = n;
    }
    const extra = $("s-extra").value.trim();
    if (extra) {
      let v;
      try {
        v = JSON.parse(extra);
      } catch (e) {
        throw new Error("extra request fields must be a JSON object");
      }
      if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("extra request fields must be a JSON object");
      out.extra = extra;
    }
    return out;
  }

  // ------------------------------------------------------------------ wiring
  function autogrow() {
    const el = $("input");
    el.style.height = "auto";
    el.style.height = Math.min(el.scrollHeight + 2, window.innerHeight * 0.4) + "px";
  }

  function wire() {
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      send();
    });
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      }
    });
    $("input").addEventListener("input", autogrow);
    $("stop").addEventListener("click", () => running && running.controller.abort());
    $("new-chat").addEventListener("click", () => {
      if (running) return;
      const c = current();
      if (c.messages.length) newConversation(c.system);
      editing = -1;
      save();
      renderAll();
      $("sidebar").classList.remove("open");
      $("input").focus();
    });
    $("open-sidebar").addEventListener("click", () => {
      $("sidebar").classList.add("open");
      $("new-chat").focus();
    });
    $("close-sidebar").addEventListener("click", () => $("sidebar").classList.remove("open"));
    $("export").addEventListener("click", exportAll);
    $("import").addEventListener("click", () => $("import-file").click());
    $("import-file").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      e.target.value = "";
      if (!file) return;
      try {
        importText(await file.text());
      } catch (err) {
        notice(err.message);
      }
    });
    $("provenance-toggle").checked = !!settings.provenance;
    $("provenance-toggle").addEventListener("change", (e) => {
      settings.provenance = e.target.checked;
      saveSettings();
      renderLegend();
      renderMessages();
    });
    $("open-settings").addEventListener("click", openSettings);
    $("settings-form").addEventListener("submit", (e) => {
      if (!e.submitter || e.submitter.value !== "save") return;
      try {
        const form = readSettingsForm();
        for (const f of [...SAMPLING, "extra"]) delete settings[f];
        Object.assign(settings, form);
        settings.theme = $("s-theme").value;
        settings.logprobs = $("s-logprobs").checked;
        current().system = $("s-system").value;
        saveSettings();
        save();
        applyTheme();
      } catch (err) {
        e.preventDefault();
        $("settings-error").textContent = err.message;
        $("settings-error").hidden = false;
      }
    });
    $("settings-reset").addEventListener("click", () => {
      for (const f of SAMPLING) $("s-" + f).value = "";
      $("s-extra").value = "";
      $("s-logprobs").checked = false;
    });
    $("forget-key").addEventListener("click", () => {
      apiKey = "";
      localStorage.removeItem(KEYS.key);
      $("settings").close();
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && running && !document.querySelector("dialog[open]")) running.controller.abort();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) pollHealth();
    });
  }

  function start() {
    setupMarkdown();
    applyTheme();
    current();
    wire();
    setBusy(false);
    renderAll();
    connect();
    $("input").focus();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  // for tests and curious users: what the page knows (read-only copies)
  window.edgeSpecensChat = {
    props: () => props && JSON.parse(JSON.stringify(props)),
    importText,
  };
})();
