// web_view.cpp: the web view at GET / (DESIGN.md "mailnetd's HTTP API and web view"): one page,
// style and script inline under a CSP that allows them by SHA-256 (CSP3 6.7.2.5); mail text reaches the DOM only as text.
#include "mailnet/mailnetd/web_view.hpp"

#include <openssl/evp.h>

#include <array>

namespace mailnet::mailnetd {
namespace {

constexpr std::string_view style = R"css(
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#1b1b1b;background:#f4f5f7;height:100vh;display:flex;flex-direction:column}
header{display:flex;gap:.75em;align-items:center;padding:.5em 1em;background:#24323f;color:#fff}
header h1{font-size:1.1em;margin:0 1em 0 0}
header select,header button{font:inherit}header select{max-width:20em;text-overflow:ellipsis}
#status{margin-left:auto;font-size:.9em;opacity:.85}
main{flex:1;display:flex;min-height:0}
#list-pane{width:40%;min-width:18em;overflow:auto;border-right:1px solid #ccd;background:#fff}
#count{margin:.4em .8em;color:#556;font-size:.9em}
#list{list-style:none;margin:0;padding:0}
#list li a{display:grid;grid-template-columns:1fr auto;gap:0 .8em;padding:.45em .8em;border-bottom:1px solid #eef;color:inherit;text-decoration:none}
#list li a:hover{background:#eef3fb}
#list li.selected a{background:#dce8f8}
#list .subject{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#list .received,#list .mailbox{color:#667;font-size:.85em;white-space:nowrap}
#list .from{color:#334;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#view{flex:1;overflow:auto;padding:.8em 1.2em}
#view .bar{display:flex;gap:.8em;align-items:center}
#view h2{margin:.5em 0;font-size:1.25em;overflow-wrap:anywhere}
#view h3{margin:1em 0 .3em;font-size:1em;color:#445}
#v-headers{border-collapse:collapse;font-size:.9em}
#v-headers th{text-align:left;vertical-align:top;padding:.1em .8em .1em 0;color:#556;white-space:nowrap}
#v-headers td{overflow-wrap:anywhere}
#v-text{white-space:pre-wrap;overflow-wrap:anywhere;background:#fff;border:1px solid #dde;padding:.6em;margin:0}
#v-html-frame{width:100%;height:24em;border:1px solid #dde;background:#fff}
#empty-view{color:#667;margin:2em}
[hidden]{display:none!important}
)css";

// Every string that comes from mail is put into the DOM with textContent or as the value of an
// href/src this script builds itself; nothing from mail goes through innerHTML or a handler.
constexpr std::string_view script = R"js(
'use strict';
(() => {
  const api = '/api/v1/messages';
  const $ = (id) => document.getElementById(id);
  const list = $('list');
  const rows = new Map();        // id -> <li>, the list as shown
  let mailbox = '';              // the mailbox shown; '' for all
  let total = 0;
  let current = null;            // the id of the message in the pane
  let loading = false;           // a list load in flight: events wait in `queued`
  let queued = [];
  let wasDown = false;

  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const url = (id, tail) => api + '/' + encodeURIComponent(id) + (tail || '');
  const status = (text) => { $('status').textContent = text; };
  const when = (s) => { const d = new Date(s); return isNaN(d) ? String(s) : d.toLocaleString(); };
  // The API's mailbox names match in any ASCII case, and only that: É is not é there.
  const fold = (s) => String(s).replace(/[A-Z]+/g, (c) => c.toLowerCase());
  const mine = (m) => !mailbox || fold(m.mailbox) === fold(mailbox);
  const showCount = () => { $('count').textContent = total + (total === 1 ? ' message' : ' messages'); };

  function row(m) {
    const li = el('li');
    const a = el('a');
    a.href = '#id=' + encodeURIComponent(m.id);
    a.append(el('span', m.subject || '(no subject)', 'subject'), el('time', when(m.received), 'received'),
             el('span', m.from || '<>', 'from'), el('span', m.mailbox, 'mailbox'));
    li.append(a);
    if (m.id === current) li.className = 'selected';
    return li;
  }

  function apply(kind, m) {
    if (kind === 'new') {
      // A new mailbox joins the chooser also while another one is shown.
      if (![...$('mailbox').options].some((o) => o.value === fold(m.mailbox))) mailboxes();
      if (!mine(m) || rows.has(m.id)) return;
      const li = row(m);
      rows.set(m.id, li);
      list.prepend(li);
      total++;
      showCount();
    } else if (kind === 'deleted') {
      const li = rows.get(m.id);
      if (li) { li.remove(); rows.delete(m.id); total = Math.max(0, total - 1); showCount(); }
      if (m.id === current) { $('v-gone').hidden = false; }
    }
  }

  async function load() {
    loading = true;
    queued = [];
    try {
      const q = new URLSearchParams({ limit: '1000' });
      if (mailbox) q.set('mailbox', mailbox);
      const r = await fetch(api + '?' + q, { cache: 'no-store' });
      if (!r.ok) throw new Error('list: HTTP ' + r.status);
      const j = await r.json();
      rows.clear();
      list.replaceChildren(...j.messages.map((m) => { const li = row(m); rows.set(m.id, li); return li; }));
      total = j.total;
      showCount();
    } catch (e) {
      status(String(e.message || e));
    } finally {
      loading = false;
      const q = queued;
      queued = [];
      for (const [kind, m] of q) apply(kind, m);
    }
  }

  async function mailboxes() {
    try {
      const r = await fetch('/api/v1/mailboxes', { cache: 'no-store' });
      if (!r.ok) return;
      const sel = $('mailbox');
      const all = el('option', 'all mailboxes');
      all.value = '';
      const opts = [all];
      for (const b of await r.json()) {
        const o = el('option', b.name);
        o.value = fold(b.name);
        opts.push(o);
      }
      sel.replaceChildren(...opts);
      sel.value = mailbox;
    } catch (e) { /* the list still works */ }
  }

  function section(id, show) { $(id).hidden = !show; }

  async function show(id) {
    current = id;
    for (const [k, li] of rows) li.className = k === id ? 'selected' : '';
    $('empty-view').hidden = true;
    $('view').hidden = false;
    $('v-gone').hidden = true;
    $('v-subject').textContent = '…';
    let m;
    try {
      const r = await fetch(url(id), { cache: 'no-store' });
      if (current !== id) return;
      if (r.status === 404) { $('v-subject').textContent = ''; $('v-gone').hidden = false; return; }
      if (!r.ok) throw new Error('message: HTTP ' + r.status);
      m = await r.json();
    } catch (e) { status(String(e.message || e)); return; }
    if (current !== id) return;
    $('v-subject').textContent = m.subject || '(no subject)';
    $('raw').href = url(id, '/raw');
    const hs = $('v-headers');
    hs.replaceChildren(...(m.headers || []).map(([n, v]) => {
      const tr = el('tr');
      tr.append(el('th', n), el('td', v));
      return tr;
    }));
    $('v-text').textContent = m.text || '';
    section('v-text-box', !!m.text);
    // A fresh iframe per message, sandbox set before src: the HTML runs no script and, under
    // the CSP mailnetd serves it with, loads nothing remote.
    const old = $('v-html-frame');
    const frame = document.createElement('iframe');
    frame.id = 'v-html-frame';
    frame.setAttribute('sandbox', '');
    frame.setAttribute('referrerpolicy', 'no-referrer');
    frame.setAttribute('title', 'HTML part');
    if (m.html) frame.src = url(id, '/html');
    old.replaceWith(frame);
    section('v-html-box', !!m.html);
    const atts = (m.attachments || []).map((a) => {
      const li = el('li');
      const link = el('a', a.filename || ('part ' + a.part));
      link.href = url(id, '/parts/' + encodeURIComponent(a.part));
      li.append(link, el('span', ' ' + (a.content_type || '') + ', ' + a.size + ' octets', 'meta'));
      return li;
    });
    $('v-atts').replaceChildren(...atts);
    section('v-atts-box', atts.length > 0);
    const links = [];
    for (const u of m.links || []) {
      let p;
      try { p = new URL(u); } catch (e) { continue; }
      if (p.protocol !== 'http:' && p.protocol !== 'https:') continue;
      const li = el('li');
      const a = el('a', u);
      a.href = p.href;
      a.rel = 'noopener noreferrer';
      a.target = '_blank';
      li.append(a);
      links.push(li);
    }
    $('v-links').replaceChildren(...links);
    section('v-links-box', links.length > 0);
  }

  function hide() {
    current = null;
    for (const li of rows.values()) li.className = '';
    $('view').hidden = true;
    $('empty-view').hidden = false;
    const old = $('v-html-frame');
    const frame = document.createElement('iframe');
    frame.id = 'v-html-frame';
    frame.setAttribute('sandbox', '');
    old.replaceWith(frame);
  }

  function route() {
    // An id is 16 base32 characters: anything else (".", which a browser would take out of
    // the message's URL) shows nothing and can delete nothing.
    const m = /^#id=([a-z2-7]{16})$/.exec(location.hash);
    if (!m) return hide();
    let id;
    try { id = decodeURIComponent(m[1]); } catch (e) { return hide(); }
    show(id);
  }

  $('close').addEventListener('click', () => { location.hash = ''; });
  $('delete').addEventListener('click', async () => {
    const id = current;
    if (!id) return;
    const r = await fetch(url(id), { method: 'DELETE' });
    if (r.status !== 204 && r.status !== 404) { status('delete: HTTP ' + r.status); return; }
    apply('deleted', { id });
    location.hash = '';
  });
  $('empty').addEventListener('click', async () => {
    const what = mailbox ? 'every message of ' + mailbox : 'every message of every mailbox';
    if (!confirm('Delete ' + what + '?')) return;
    const r = await fetch(api + (mailbox ? '?' + new URLSearchParams({ mailbox }) : ''), { method: 'DELETE' });
    if (r.status !== 204) status('empty: HTTP ' + r.status);
    location.hash = '';
    await load();
    await mailboxes();
  });
  $('mailbox').addEventListener('change', (e) => { mailbox = e.target.value; load(); });
  window.addEventListener('hashchange', route);

  const on = (kind) => (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch (x) { return; }
    if (loading) queued.push([kind, m]); else apply(kind, m);
  };
  const listen = () => {
    const events = new EventSource('/api/v1/events');
    events.addEventListener('new', on('new'));
    events.addEventListener('deleted', on('deleted'));
    events.addEventListener('open', () => {
      status('live');
      // Back after a break: what happened meanwhile is in the list, not in the stream.
      if (wasDown) { wasDown = false; load(); }
    });
    events.addEventListener('error', () => {
      wasDown = true;
      status('reconnecting…');
      // A broken stream the browser retries itself; one refused (a 503 while 64 streams are
      // open, the server restarting) it gives up for good: a new one, a little later.
      if (events.readyState === EventSource.CLOSED) setTimeout(listen, 3000);
    });
  };
  listen();

  load();
  mailboxes();
  route();
})();
)js";

constexpr std::string_view body = R"html(
<header>
<h1>mailnetd</h1>
<label>Mailbox <select id="mailbox"><option value="">all mailboxes</option></select></label>
<button id="empty" type="button">Empty mailbox</button>
<span id="status" role="status"></span>
</header>
<main>
<section id="list-pane" aria-label="Messages"><p id="count"></p><ul id="list"></ul></section>
<p id="empty-view">Choose a message.</p>
<section id="view" aria-label="Message" hidden>
<div class="bar">
<button id="close" type="button">Close</button>
<button id="delete" type="button">Delete</button>
<a id="raw" href="#">Raw source</a>
<span id="v-gone" hidden>This message has been deleted.</span>
</div>
<h2 id="v-subject"></h2>
<table id="v-headers"></table>
<div id="v-text-box"><h3>Text</h3><pre id="v-text"></pre></div>
<div id="v-html-box"><h3>HTML</h3><iframe id="v-html-frame" sandbox="" title="HTML part"></iframe></div>
<div id="v-atts-box"><h3>Attachments</h3><ul id="v-atts"></ul></div>
<div id="v-links-box"><h3>Links</h3><ul id="v-links"></ul></div>
</section>
</main>
)html";

// 'sha256-BASE64' of `text` (CSP3 hash-source: the digest of the element's text as UTF-8).
std::string hash_source(std::string_view text) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int md_len = 0;
    EVP_Digest(text.data(), text.size(), md.data(), &md_len, EVP_sha256(), nullptr);
    std::array<unsigned char, 4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1> b64{};
    const int n = EVP_EncodeBlock(b64.data(), md.data(), static_cast<int>(md_len));
    return "'sha256-" + std::string(reinterpret_cast<const char*>(b64.data()), static_cast<std::size_t>(n)) + "'";
}

}  // namespace

const std::string& web_view_page() {
    static const std::string page = [] {
        std::string p = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                        "<meta name=\"referrer\" content=\"no-referrer\"><title>mailnetd</title><style>";
        p += style;
        p += "</style></head><body>";
        p += body;
        p += "<script>";
        p += script;
        p += "</script></body></html>\n";
        return p;
    }();
    return page;
}

const std::string& web_view_csp() {
    // NOTE: built once (a function-local constant, not mutable state): the hashes depend only
    // on the two literals above.
    static const std::string csp = "default-src 'none'; script-src " + hash_source(script) + "; style-src " +
                                   hash_source(style) +
                                   "; img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
                                   "form-action 'none'; frame-ancestors 'none'";
    return csp;
}

}  // namespace mailnet::mailnetd
