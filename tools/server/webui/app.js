// chimera's chat page. Three rules hold everywhere below:
// - text from the model or the user reaches the DOM only through text nodes / textContent,
//   never as HTML (the Markdown renderer builds elements one by one);
// - the page talks only to the server it came from (relative URLs; the CSP enforces it);
// - a conversation is a tree of messages: editing a message or regenerating an answer adds a
//   sibling branch instead of overwriting, and the server's prefix cache makes that cheap.
'use strict';
(() => {
  const STORE = {
    chats: 'chimera.chats.v1',
    active: 'chimera.activeChat',
    settings: 'chimera.settings.v1',
    apiKey: 'chimera.apiKey',
  };
  const DEFAULT_SETTINGS = {
    system: '', temperature: 0.8, top_p: 0.95, max_tokens: 512, seed: '', extra: '',
  };
  const SUGGESTIONS = ['And God said', 'Tell me about the creation of the world',
                       'Write a short psalm about the sea'];

  const state = {
    chats: [],
    activeId: null,
    settings: { ...DEFAULT_SETTINGS },
    gen: null,        // the streaming reply: {chatId, nodeId, controller}
    stick: true,      // keep the view scrolled to the newest text
    editingId: null,  // the user message being edited
    renamingId: null,
    deletingId: null,
    modelId: '',
  };

  const $ = (id) => document.getElementById(id);
  const ui = {};

  // ---------------------------------------------------------------- DOM helpers (text only)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else if (k === 'data') Object.assign(e.dataset, v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
    return e;
  }

  const ICONS = {
    pencil: 'M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4',
    trash: 'M5 7h14M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3',
    regen: 'M20 12a8 8 0 1 1-2.34-5.66M20 4v5h-5',
    copy: 'M9 9h10v10H9zM5 15V5h10',
    check: 'M5 12l5 5 9-10',
    left: 'M15 6l-6 6 6 6',
    right: 'M9 6l6 6-6 6',
  };
  function icon(name) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'icon');
    svg.setAttribute('aria-hidden', 'true');
    const p = document.createElementNS(ns, 'path');
    p.setAttribute('d', ICONS[name]);
    svg.append(p);
    return svg;
  }
  function iconButton(name, label, onclick, cls) {
    return el('button', { type: 'button', class: 'icon-btn small ' + (cls || ''), 'aria-label': label,
                          title: label, onclick }, icon(name));
  }

  // ---------------------------------------------------------------- Markdown, rendered safely
  // Block level: fenced code, headings, rules, quotes, lists, paragraphs (single newlines kept).
  // Inline: `code`, **bold**, *em*, ~~strike~~, [text](http...) and bare http(s) links.
  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

  function renderMarkdown(text) {
    const frag = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) { i++; continue; }
      if ((m = FENCE.exec(line))) {
        const fence = m[1];
        const body = [];
        i++;
        while (i < lines.length && !(lines[i].trim().startsWith(fence[0].repeat(fence.length)) &&
                                     /^[`~]+$/.test(lines[i].trim()))) {
          body.push(lines[i]);
          i++;
        }
        i++;  // the closing fence (absent while a reply is still streaming)
        frag.append(codeBlock(body.join('\n'), m[2]));
        continue;
      }
      if ((m = HEADING.exec(line))) {
        frag.append(el('h' + Math.min(6, m[1].length + 2), { class: 'md-h' }, renderInline(m[2])));
        i++;
        continue;
      }
      if (RULE.test(line)) { frag.append(el('hr')); i++; continue; }
      if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) { body.push(m[1]); i++; }
        frag.append(el('blockquote', null, renderMarkdown(body.join('\n'))));
        continue;
      }
      if ((m = LIST_ITEM.exec(line))) {
        const ordered = /\d/.test(m[2]);
        const list = el(ordered ? 'ol' : 'ul');
        if (ordered && parseInt(m[2], 10) !== 1) list.setAttribute('start', parseInt(m[2], 10));
        const indent = m[1].length;
        let item = null;
        while (i < lines.length) {
          const l = lines[i];
          const im = LIST_ITEM.exec(l);
          if (im && im[1].length <= indent + 1 && /\d/.test(im[2]) === ordered) {
            item = { lines: [im[3]] };
            list.append(el('li'));
            list.lastChild.item = item;
          } else if (l.trim() && item && /^\s+/.test(l)) {
            item.lines.push(l.replace(/^\s{1,4}/, ''));
          } else {
            break;
          }
          i++;
        }
        for (const li of list.children) {
          const inner = li.item.lines;
          // A single line stays inline; nested structure goes through the block renderer.
          if (inner.length === 1) li.append(renderInline(inner[0]));
          else li.append(renderMarkdown(inner.join('\n')));
          delete li.item;
        }
        frag.append(list);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) &&
             !HEADING.test(lines[i]) && !RULE.test(lines[i]) && !QUOTE.test(lines[i]) &&
             !(para.length && LIST_ITEM.test(lines[i]))) {
        para.push(lines[i]);
        i++;
      }
      if (!para.length) { para.push(lines[i]); i++; }
      const p = el('p');
      para.forEach((l, k) => {
        if (k) p.append(el('br'));
        p.append(renderInline(l));
      });
      frag.append(p);
    }
    return frag;
  }

  const INLINE = new RegExp([
    '(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)',           // 1,2 code
    '\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*',              // 3 bold
    '__(?=\\S)([\\s\\S]*?\\S)__(?!\\w)',               // 4 bold
    '\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*(?!\\*)',     // 5 em
    '(?<![\\w_])_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?![\\w_])',  // 6 em
    '~~(?=\\S)([\\s\\S]*?\\S)~~',                      // 7 strike
    '\\[([^\\]\\n]+)\\]\\(\\s*([^)\\s]+)\\s*\\)',      // 8,9 link
    '(https?:\\/\\/[^\\s<>()]*[^\\s<>().,;:!?\'"])',   // 10 bare URL
  ].join('|'));

  function safeUrl(href) {
    try {
      const u = new URL(href, window.location.href);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
    } catch (_) {
      return null;
    }
  }
  function link(href, content) {
    const url = safeUrl(href);
    if (!url) return null;
    return el('a', { href: url, target: '_blank', rel: 'noopener noreferrer nofollow' }, content);
  }

  function renderInline(text) {
    const frag = document.createDocumentFragment();
    let rest = String(text);
    while (rest) {
      const m = INLINE.exec(rest);
      if (!m) { frag.append(rest); break; }
      if (m.index) frag.append(rest.slice(0, m.index));
      let node = null;
      if (m[2] !== undefined) node = el('code', { text: m[2] });
      else if (m[3] !== undefined) node = el('strong', null, renderInline(m[3]));
      else if (m[4] !== undefined) node = el('strong', null, renderInline(m[4]));
      else if (m[5] !== undefined) node = el('em', null, renderInline(m[5]));
      else if (m[6] !== undefined) node = el('em', null, renderInline(m[6]));
      else if (m[7] !== undefined) node = el('del', null, renderInline(m[7]));
      else if (m[8] !== undefined) node = link(m[9], renderInline(m[8]));
      else if (m[10] !== undefined) node = link(m[10], m[10]);
      frag.append(node || m[0]);
      rest = rest.slice(m.index + m[0].length);
    }
    return frag;
  }

  function codeBlock(code, lang) {
    const copyBtn = el('button', { type: 'button', class: 'code-copy', text: 'Copy' });
    copyBtn.addEventListener('click', () => copyText(code, copyBtn));
    return el('div', { class: 'code-block' },
              el('div', { class: 'code-head' }, el('span', { class: 'code-lang', text: lang || 'text' }),
                 copyBtn),
              el('pre', null, el('code', { text: code })));
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const ta = el('textarea', { class: 'offscreen' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    if (button) {
      const old = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = old; }, 1200);
    }
  }

  // ---------------------------------------------------------------- storage
  function readJson(key, fallback) {
    try {
      const v = JSON.parse(localStorage.getItem(key));
      return v === null ? fallback : v;
    } catch (_) {
      return fallback;
    }
  }
  function saveChats() {
    try {
      localStorage.setItem(STORE.chats, JSON.stringify(state.chats));
      if (state.activeId) localStorage.setItem(STORE.active, state.activeId);
      else localStorage.removeItem(STORE.active);
    } catch (e) {
      toast('Could not save the conversations: ' + e.message);
    }
  }
  let saveTimer = 0;
  function saveSoon() {
    if (!saveTimer) saveTimer = setTimeout(() => { saveTimer = 0; saveChats(); }, 500);
  }
  function validChat(c) {
    return c && typeof c.id === 'string' && c.nodes && c.nodes.root &&
           Array.isArray(c.nodes.root.children);
  }
  function apiKey() { return localStorage.getItem(STORE.apiKey) || ''; }

  // ---------------------------------------------------------------- conversation trees
  function uid() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }
  function newChatObject() {
    const now = Date.now();
    return { id: uid(), title: 'New chat', created: now, updated: now,
             nodes: { root: { id: 'root', role: 'root', children: [], active: 0 } } };
  }
  function activeChat() { return state.chats.find((c) => c.id === state.activeId) || null; }
  function childOf(chat, node) {
    if (!node.children.length) return null;
    const k = Math.min(Math.max(node.active | 0, 0), node.children.length - 1);
    return chat.nodes[node.children[k]] || null;
  }
  // The messages on screen: from the root, following each node's chosen branch.
  function visiblePath(chat) {
    const out = [];
    for (let n = childOf(chat, chat.nodes.root); n; n = childOf(chat, n)) out.push(n);
    return out;
  }
  function addChild(chat, parent, role, content) {
    const node = { id: uid(), parent: parent.id, role, content, children: [], active: 0 };
    chat.nodes[node.id] = node;
    parent.children.push(node.id);
    parent.active = parent.children.length - 1;
    return node;
  }
  // The conversation that leads to `node` (excluded), oldest first.
  function historyBefore(chat, node) {
    const out = [];
    for (let n = chat.nodes[node.parent]; n && n.role !== 'root'; n = chat.nodes[n.parent]) {
      if (n.role === 'assistant' && n.error && !n.content) continue;
      out.push({ role: n.role, content: n.content });
    }
    return out.reverse();
  }
  function titleFrom(text) {
    const line = text.trim().split('\n')[0];
    return line.length > 48 ? line.slice(0, 47) + '…' : line || 'New chat';
  }

  // ---------------------------------------------------------------- the server
  function headers() {
    const h = { 'Content-Type': 'application/json' };
    const key = apiKey();
    if (key) h.Authorization = 'Bearer ' + key;
    return h;
  }
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function errorFrom(res) {
    let msg = res.statusText || 'request failed';
    try {
      const text = await res.text();
      try {
        const j = JSON.parse(text);
        msg = (j.error && (j.error.message || j.error)) || j.message || text;
      } catch (_) {
        if (text) msg = text;
      }
    } catch (_) { /* body unreadable: keep the status text */ }
    return new ApiError(res.status, `${res.status}: ${msg}`);
  }

  function requestBody(messages) {
    const s = state.settings;
    const body = { messages, stream: true, stream_options: { include_usage: true } };
    if (state.modelId) body.model = state.modelId;
    const num = (v) => (v === '' || v === null || v === undefined ? NaN : Number(v));
    if (Number.isFinite(num(s.temperature))) body.temperature = num(s.temperature);
    if (Number.isFinite(num(s.top_p))) body.top_p = num(s.top_p);
    if (Number.isInteger(num(s.max_tokens)) && num(s.max_tokens) > 0) body.max_tokens = num(s.max_tokens);
    if (Number.isInteger(num(s.seed))) body.seed = num(s.seed);
    if (s.extra && s.extra.trim()) Object.assign(body, JSON.parse(s.extra));
    return body;
  }

  // POSTs a streaming chat completion and calls onChunk for every SSE JSON event.
  async function streamChat(body, signal, onChunk) {
    const res = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(body), signal,
    });
    if (!res.ok) throw await errorFrom(res);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    const handle = (event) => {
      const data = event.split('\n').filter((l) => l.startsWith('data:'))
                        .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data) return false;
      if (data === '[DONE]') return true;
      const obj = JSON.parse(data);
      if (obj.error) throw new ApiError(0, obj.error.message || JSON.stringify(obj.error));
      onChunk(obj);
      return false;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r/g, '');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (handle(event)) { reader.cancel().catch(() => {}); return; }
      }
    }
    if (buf.trim()) handle(buf);
  }

  async function refreshServer() {
    try {
      const res = await fetch('v1/models', { headers: headers() });
      if (res.status === 401) {
        setStatus('locked', 'API key needed');
        ui.modelName.textContent = 'locked: API key needed';
        openKeyDialog();
        return;
      }
      if (!res.ok) throw await errorFrom(res);
      const j = await res.json();
      state.modelId = (j.data && j.data[0] && j.data[0].id) || '';
      ui.modelName.textContent = state.modelId || 'model';
      ui.modelName.title = state.modelId;
      setStatus('ok', 'ready');
      if (!activeChat()) renderMessages();
    } catch (e) {
      setStatus('error', 'offline');
      ui.modelName.textContent = 'server unreachable';
    }
  }
  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.statusText.textContent = text;
  }

  // ---------------------------------------------------------------- generation
  function summarize(usage, timings, t0, tFirst, tEnd) {
    const s = {};
    const n = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    if (timings) {
      s.reused = n(timings.prompt_reused);
      s.processed = n(timings.prompt_processed);
      s.replayed = n(timings.prompt_replayed);
      s.ttft_ms = n(timings.prompt_ms);
      s.generated = n(timings.predicted_n);
      if (n(timings.predicted_n) > 0 && n(timings.predicted_ms) > 0)
        s.tps = timings.predicted_n * 1000 / timings.predicted_ms;
    }
    if (usage) {
      s.prompt_tokens = n(usage.prompt_tokens);
      const cached = usage.prompt_tokens_details ? n(usage.prompt_tokens_details.cached_tokens) : null;
      if (s.reused == null && cached != null) s.reused = cached;
      if (s.processed == null && cached != null && s.prompt_tokens != null)
        s.processed = s.prompt_tokens - cached;
      if (s.generated == null) s.generated = n(usage.completion_tokens);
    }
    // Without server timings (a stopped reply), the page's own clock is the best there is.
    if (s.ttft_ms == null && tFirst != null) s.ttft_ms = tFirst - t0;
    if (s.tps == null && s.generated > 1 && tFirst != null && tEnd > tFirst)
      s.tps = (s.generated - 1) * 1000 / (tEnd - tFirst);
    return s;
  }

  async function generate(chat, node) {
    const controller = new AbortController();
    state.gen = { chatId: chat.id, nodeId: node.id, controller };
    state.stick = true;
    Object.assign(node, { content: '', error: null, stopped: false, stats: null, pending: true });
    chat.updated = Date.now();
    renderAll();
    let usage = null, timings = null, cache = null, finish = null, tFirst = null;
    const t0 = performance.now();
    let body;
    try {
      body = requestBody([...(state.settings.system.trim()
                                ? [{ role: 'system', content: state.settings.system }] : []),
                          ...historyBefore(chat, node)]);
    } catch (e) {
      node.error = 'Extra request fields are not valid JSON: ' + e.message;
    }
    if (body) {
      try {
        await streamChat(body, controller.signal, (chunk) => {
          const choice = chunk.choices && chunk.choices[0];
          if (choice) {
            const text = choice.delta && choice.delta.content;
            if (typeof text === 'string' && text) {
              if (tFirst === null) tFirst = performance.now();
              node.content += text;
              scheduleStreamUpdate(chat, node);
            }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
          if (chunk.usage) usage = chunk.usage;
          if (chunk.timings) timings = chunk.timings;
          if (chunk.cache) cache = chunk.cache;
        });
      } catch (e) {
        if (e.name === 'AbortError') {
          node.stopped = true;
        } else {
          node.error = e.message || String(e);
          if (e.status === 401) openKeyDialog('The server refused the key. Enter the right one.');
        }
      }
    }
    node.pending = false;
    node.finish = finish;
    node.stats = summarize(usage, timings, t0, tFirst, performance.now());
    // Why the server's prefix cache matched less than it could have ("diverged at token 812
    // (message 5)", "snapshot evicted"), when it says.
    if (cache && typeof cache.reason === 'string' && cache.reason) node.stats.cache_reason = cache.reason;
    if (state.gen && state.gen.nodeId === node.id) state.gen = null;
    chat.updated = Date.now();
    saveChats();
    renderAll();
  }

  let streamFrame = 0;
  function scheduleStreamUpdate(chat, node) {
    saveSoon();
    if (streamFrame) return;
    streamFrame = requestAnimationFrame(() => {
      streamFrame = 0;
      if (chat.id !== state.activeId || !node.pending) return;
      const view = ui.messages.querySelector(`[data-id="${node.id}"] .content`);
      if (!view) return;
      view.replaceChildren(withCaret(renderMarkdown(node.content)));
      if (state.stick) scrollToBottom();
    });
  }

  // The blinking caret at the end of the text still streaming, inside its last paragraph.
  function withCaret(frag) {
    let last = frag.lastChild;
    while (last && (last.nodeName === 'UL' || last.nodeName === 'OL' || last.nodeName === 'LI' ||
                    last.nodeName === 'BLOCKQUOTE') && last.lastChild) last = last.lastChild;
    const caret = el('span', { class: 'caret' });
    if (last && (last.nodeName === 'P' || last.nodeName === 'LI' || /^H\d$/.test(last.nodeName))) last.append(caret);
    else frag.append(caret);
    return frag;
  }

  function stop() {
    if (state.gen) state.gen.controller.abort();
  }

  function busy() { return state.gen !== null; }

  function send(text) {
    text = text.replace(/\s+$/, '');
    if (!text.trim() || busy()) return;
    let chat = activeChat();
    if (!chat) {
      chat = newChatObject();
      state.chats.unshift(chat);
      state.activeId = chat.id;
    }
    const path = visiblePath(chat);
    const parent = path.length ? path[path.length - 1] : chat.nodes.root;
    if (!path.length) chat.title = titleFrom(text);
    state.stick = true;
    const user = addChild(chat, parent, 'user', text);
    const reply = addChild(chat, user, 'assistant', '');
    ui.input.value = '';
    autosize(ui.input);
    generate(chat, reply);
  }

  function editAndSend(chat, node, text) {
    if (busy() || !text.trim()) return;
    state.editingId = null;
    const parent = chat.nodes[node.parent];
    const user = addChild(chat, parent, 'user', text.replace(/\s+$/, ''));
    generate(chat, addChild(chat, user, 'assistant', ''));
  }

  function regenerate(chat, node) {
    if (busy()) return;
    generate(chat, addChild(chat, chat.nodes[node.parent], 'assistant', ''));
  }

  function switchBranch(chat, node, delta) {
    const parent = chat.nodes[node.parent];
    const k = parent.children.indexOf(node.id) + delta;
    if (k < 0 || k >= parent.children.length || busy()) return;
    parent.active = k;
    saveChats();
    renderMessages();
  }

  // ---------------------------------------------------------------- rendering
  function renderAll() {
    renderSidebar();
    renderMessages();
    updateComposer();
  }

  function renderSidebar() {
    const chats = [...state.chats].sort((a, b) => b.updated - a.updated);
    ui.chatListEmpty.hidden = chats.length > 0;
    ui.chatList.replaceChildren(...chats.map(chatItem));
  }

  function chatItem(chat) {
    const active = chat.id === state.activeId;
    const li = el('li', { class: 'chat-item' + (active ? ' active' : ''), data: { id: chat.id } });
    if (state.renamingId === chat.id) {
      const input = el('input', { class: 'rename-input', type: 'text', 'aria-label': 'Conversation name' });
      input.value = chat.title;
      let done = false;
      const finish = (commit) => {
        if (done) return;
        done = true;
        if (commit && input.value.trim()) chat.title = input.value.trim();
        state.renamingId = null;
        saveChats();
        renderSidebar();
        ui.title.textContent = activeChat() ? activeChat().title : 'New chat';
      };
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') { e.preventDefault(); finish(true); }
        if (e.key === 'Escape') { e.preventDefault(); finish(false); }
      });
      input.addEventListener('blur', () => finish(true));
      li.append(input);
      requestAnimationFrame(() => { input.focus(); input.select(); });
      return li;
    }
    if (state.deletingId === chat.id) {
      li.classList.add('confirm');
      li.append(el('span', { class: 'chat-item-title', text: 'Delete “' + chat.title + '”?' }),
                el('span', { class: 'chat-item-actions visible' },
                   el('button', { type: 'button', class: 'btn btn-danger small confirm-delete', text: 'Delete',
                                  onclick: () => deleteChat(chat.id) }),
                   el('button', { type: 'button', class: 'btn small', text: 'Keep',
                                  onclick: () => { state.deletingId = null; renderSidebar(); } })));
      return li;
    }
    const open = el('button', { type: 'button', class: 'chat-open', title: chat.title,
                                onclick: () => selectChat(chat.id) },
                    el('span', { class: 'chat-item-title', text: chat.title }),
                    el('span', { class: 'chat-item-date', text: shortDate(chat.updated) }));
    li.append(open, el('span', { class: 'chat-item-actions' },
                       iconButton('pencil', 'Rename', () => { state.renamingId = chat.id; renderSidebar(); }, 'rename'),
                       iconButton('trash', 'Delete', () => { state.deletingId = chat.id; renderSidebar(); }, 'delete')));
    return li;
  }

  function shortDate(ms) {
    const d = new Date(ms);
    const now = new Date();
    if (d.toDateString() === now.toDateString())
      return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
  }

  function selectChat(id) {
    if (busy() && state.gen.chatId !== id) stop();
    state.activeId = id;
    state.editingId = null;
    localStorage.setItem(STORE.active, id);
    closeSidebar();
    state.stick = true;
    renderAll();
  }

  function deleteChat(id) {
    if (state.gen && state.gen.chatId === id) stop();
    state.chats = state.chats.filter((c) => c.id !== id);
    state.deletingId = null;
    if (state.activeId === id) state.activeId = null;
    saveChats();
    renderAll();
  }

  function renderMessages() {
    const chat = activeChat();
    ui.title.textContent = chat ? chat.title : 'New chat';
    const path = chat ? visiblePath(chat) : [];
    if (!path.length) {
      ui.messages.replaceChildren(emptyState());
      return;
    }
    ui.messages.replaceChildren(el('div', { class: 'thread' }, ...path.map((n) => messageView(chat, n))));
    if (state.stick) scrollToBottom();
  }

  function emptyState() {
    return el('div', { class: 'empty' },
              el('div', { class: 'empty-mark', 'aria-hidden': 'true' }),
              el('h2', { text: 'Start a conversation' }),
              el('p', { text: (state.modelId ? state.modelId + ' runs' : 'The model runs') +
                              ' on this machine. Edit any message or regenerate any answer: the ' +
                              'server reuses what it has already computed.' }),
              el('div', { class: 'suggestions' }, ...SUGGESTIONS.map((s) =>
                el('button', { type: 'button', class: 'suggestion', text: s, onclick: () => send(s) }))));
  }

  function branchNav(chat, node) {
    const siblings = chat.nodes[node.parent].children;
    if (siblings.length < 2) return null;
    const k = siblings.indexOf(node.id);
    return el('span', { class: 'branch-nav' },
              iconButton('left', 'Previous version', () => switchBranch(chat, node, -1), k === 0 ? 'disabled' : ''),
              el('span', { class: 'branch-pos', text: `${k + 1} / ${siblings.length}` }),
              iconButton('right', 'Next version', () => switchBranch(chat, node, 1),
                         k === siblings.length - 1 ? 'disabled' : ''));
  }

  function messageView(chat, node) {
    const art = el('article', { class: 'msg msg-' + node.role, data: { id: node.id, role: node.role } });
    if (node.role === 'user') {
      if (state.editingId === node.id) {
        const ta = el('textarea', { class: 'edit-input', 'aria-label': 'Edit message' });
        ta.value = node.content;
        const save = () => editAndSend(chat, node, ta.value);
        ta.addEventListener('keydown', (e) => {
          if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); save(); }
          if (e.key === 'Escape') { state.editingId = null; renderMessages(); }
        });
        ta.addEventListener('input', () => autosize(ta));
        art.append(el('div', { class: 'bubble editing' }, ta,
                      el('div', { class: 'edit-actions' },
                         el('button', { type: 'button', class: 'btn small', text: 'Cancel',
                                        onclick: () => { state.editingId = null; renderMessages(); } }),
                         el('button', { type: 'button', class: 'btn btn-primary small edit-send', text: 'Send',
                                        onclick: save }))));
        requestAnimationFrame(() => { autosize(ta); ta.focus(); });
        return art;
      }
      art.append(el('div', { class: 'bubble', text: node.content }),
                 el('div', { class: 'msg-actions' }, branchNav(chat, node),
                    iconButton('pencil', 'Edit', () => {
                      if (busy()) return;
                      state.editingId = node.id;
                      renderMessages();
                    }, 'edit'),
                    iconButton('copy', 'Copy', (e) => copyText(node.content, null))));
      return art;
    }
    const content = el('div', { class: 'content' });
    if (node.content) content.append(node.pending ? withCaret(renderMarkdown(node.content))
                                                  : renderMarkdown(node.content));
    if (node.pending) {
      if (!node.content) content.append(el('span', { class: 'typing', 'aria-label': 'thinking' }, el('i'), el('i'), el('i')));
    }
    art.append(content);
    if (node.error) art.append(el('div', { class: 'error', role: 'alert', text: node.error }));
    if (!node.pending) {
      art.append(el('div', { class: 'msg-actions' }, branchNav(chat, node),
                    iconButton('regen', 'Regenerate', () => regenerate(chat, node), 'regenerate'),
                    iconButton('copy', 'Copy', () => copyText(node.content, null)),
                    statsView(node)));
    }
    return art;
  }

  function statsView(node) {
    const s = node.stats || {};
    const parts = [];
    const add = (key, text, title) => parts.push(el('span', { class: 'stat', data: { stat: key }, title, text }));
    if (node.stopped) add('stopped', 'stopped', 'you stopped this reply; the server cancelled it');
    if (s.reused != null) add('reused', `${s.reused} reused`, 'prompt tokens taken from the server\'s prefix cache');
    if (s.processed != null) add('processed', `${s.processed} processed`, 'new prompt tokens the model ran');
    if (s.replayed) add('replayed', `${s.replayed} replayed`, 'tokens re-run to roll a recurrent state back exactly');
    if (s.ttft_ms != null) add('ttft', `${formatMs(s.ttft_ms)} to first token`, 'time to first token');
    if (s.tps != null) add('tps', `${s.tps.toFixed(1)} tok/s`, `${s.generated} tokens generated`);
    if (node.finish === 'length') add('length', 'max tokens', 'the reply hit the max-tokens setting');
    if (s.cache_reason) add('cache', s.cache_reason, 'why the prefix cache did not match more of the prompt');
    if (!parts.length) return null;
    return el('span', { class: 'stats' }, ...parts);
  }
  function formatMs(ms) {
    return ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : Math.round(ms) + ' ms';
  }

  function updateComposer() {
    const b = busy();
    ui.send.hidden = b;
    ui.stop.hidden = !b;
    ui.send.disabled = !ui.input.value.trim();
    document.body.classList.toggle('busy', b);
  }

  // The view follows a streaming reply while the reader stays at the bottom; scrolling up to
  // read stops that until they come back down.
  function nearBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 60;
  }
  function scrollToBottom() { ui.messages.scrollTop = ui.messages.scrollHeight; }

  function autosize(ta) {
    ta.style.height = 'auto';
    ta.style.height = Math.min(ta.scrollHeight, 240) + 'px';
  }

  let toastTimer = 0;
  function toast(text) {
    let t = document.querySelector('.toast');
    if (!t) { t = el('div', { class: 'toast', role: 'status' }); document.body.append(t); }
    t.textContent = text;
    t.classList.add('show');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove('show'), 4000);
  }

  // ---------------------------------------------------------------- sidebar (narrow screens)
  function openSidebar() { document.body.classList.add('sidebar-open'); ui.scrim.hidden = false; }
  function closeSidebar() { document.body.classList.remove('sidebar-open'); ui.scrim.hidden = true; }

  // ---------------------------------------------------------------- dialogs
  function openSettings() {
    const s = state.settings;
    $('set-system').value = s.system;
    $('set-temperature').value = s.temperature;
    $('set-top-p').value = s.top_p;
    $('set-max-tokens').value = s.max_tokens;
    $('set-seed').value = s.seed;
    $('set-extra').value = s.extra;
    ui.settingsError.hidden = true;
    ui.settingsDialog.showModal();
  }
  function saveSettings(e) {
    e.preventDefault();
    const extra = $('set-extra').value.trim();
    if (extra) {
      let ok = false;
      try { const v = JSON.parse(extra); ok = v && typeof v === 'object' && !Array.isArray(v); } catch (_) {}
      if (!ok) {
        ui.settingsError.textContent = 'Extra request fields must be a JSON object, e.g. {"top_k": 40}.';
        ui.settingsError.hidden = false;
        return;
      }
    }
    state.settings = {
      system: $('set-system').value,
      temperature: $('set-temperature').value,
      top_p: $('set-top-p').value,
      max_tokens: $('set-max-tokens').value,
      seed: $('set-seed').value,
      extra,
    };
    localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
    ui.settingsDialog.close();
  }

  function openKeyDialog(message) {
    $('key-text').textContent = message ||
        'This server was started with --api-key. Enter the key; it is kept in this browser only.';
    $('key-input').value = apiKey();
    if (!ui.keyDialog.open) ui.keyDialog.showModal();
  }
  function saveKey(e) {
    e.preventDefault();
    const key = $('key-input').value.trim();
    if (key) localStorage.setItem(STORE.apiKey, key);
    else localStorage.removeItem(STORE.apiKey);
    ui.keyDialog.close();
    refreshServer();
  }

  // ---------------------------------------------------------------- start
  function init() {
    Object.assign(ui, {
      messages: $('messages'), input: $('input'), send: $('send'), stop: $('stop'),
      title: $('chat-title'), chatList: $('chat-list'), chatListEmpty: $('chat-list-empty'),
      modelName: $('model-name'), status: $('status'), statusText: $('status-text'),
      scrim: $('scrim'), settingsDialog: $('settings-dialog'), settingsError: $('settings-error'),
      keyDialog: $('key-dialog'),
    });
    state.chats = readJson(STORE.chats, []).filter(validChat);
    for (const c of state.chats) {  // a reply cut short by a closed tab is no longer streaming
      for (const n of Object.values(c.nodes)) if (n.pending) { n.pending = false; n.stopped = true; }
    }
    const saved = readJson(STORE.settings, {});
    state.settings = { ...DEFAULT_SETTINGS, ...(saved && typeof saved === 'object' ? saved : {}) };
    const active = localStorage.getItem(STORE.active);
    state.activeId = state.chats.some((c) => c.id === active) ? active : null;

    $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(ui.input.value); });
    ui.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send(ui.input.value);
      }
    });
    ui.input.addEventListener('input', () => { autosize(ui.input); updateComposer(); });
    ui.stop.addEventListener('click', stop);
    ui.messages.addEventListener('scroll', () => { state.stick = nearBottom(); }, { passive: true });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && busy() && !ui.settingsDialog.open && !ui.keyDialog.open) stop();
    });
    $('new-chat').addEventListener('click', () => {
      state.activeId = null;
      state.editingId = null;
      localStorage.removeItem(STORE.active);
      closeSidebar();
      renderAll();
      ui.input.focus();
    });
    $('toggle-sidebar').addEventListener('click', () =>
      document.body.classList.contains('sidebar-open') ? closeSidebar() : openSidebar());
    ui.scrim.addEventListener('click', closeSidebar);
    $('open-settings').addEventListener('click', openSettings);
    $('settings-form').addEventListener('submit', saveSettings);
    $('settings-cancel').addEventListener('click', () => ui.settingsDialog.close());
    $('settings-reset').addEventListener('click', () => {
      state.settings = { ...DEFAULT_SETTINGS };
      localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
      openSettings();
    });
    $('settings-key').addEventListener('click', () => { ui.settingsDialog.close(); openKeyDialog(); });
    $('key-form').addEventListener('submit', saveKey);
    $('key-cancel').addEventListener('click', () => ui.keyDialog.close());
    $('key-forget').addEventListener('click', () => {
      localStorage.removeItem(STORE.apiKey);
      $('key-input').value = '';
    });

    renderAll();
    scrollToBottom();
    ui.input.focus();
    refreshServer();
  }

  // For tests and the curious: the renderer, so that its safety can be checked in a browser.
  window.chimeraChat = { renderMarkdown, stop, state };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
