// agentkit run report. Reads the run summary embedded as JSON, draws the header, answer, DAG,
// timeline and tables at load, and renders a node's conversation only when it is opened (its
// JSON sits in its own <script type="application/json"> block, parsed on click). Every string
// from the ledger goes through esc() or textContent: the ledger holds untrusted web text.
"use strict";
const R = JSON.parse(document.getElementById("run-data").textContent);
const rows = R.rows;
const $ = (id) => document.getElementById(id);

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmtMs(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} m ${String(Math.round((ms % 60000) / 1000)).padStart(2, "0")} s`;
}
const fmtN = (n) => (n || 0).toLocaleString("en-US");
const fmtCost = (c) => (c ? `$${c < 0.01 ? c.toFixed(5) : c.toFixed(4)}` : "$0");
const badge = (s) => `<span class="badge st-${esc(s)}">${esc(s)}</span>`;
const safeHref = (u) => /^https?:\/\//i.test(u) ? esc(u) : null;

function rowSpan(r) {  // [start, end] of a row on the time axis
  const a = r.att.length ? r.att : null;
  const s = a ? a[0][0] : r.first;
  const e = a ? Math.max(...a.map((x) => x[1] ?? R.run.dur)) : r.last;
  return [s ?? 0, e ?? s ?? 0];
}

function renderHeader() {
  const run = R.run, tok = run.tokens || [0, 0, 0, 0];
  $("head").innerHTML = `<h1>${esc(run.task || "run")} ${badge(run.status || "unknown")}</h1>
    <div class="goal">${esc(run.goal)}</div>
    <div class="stats"><span>run <b class="nid">${esc(run.id)}</b></span>
    <span>${fmtMs(run.dur)}</span><span>${rows.filter((r) => r.kind === "node").length} nodes</span>
    <span>${fmtN(tok[0])} in / ${fmtN(tok[1])} out tokens (${fmtN(tok[2])} reasoning)</span>
    <span>${fmtCost(run.cost)}</span><span>${fmtN(run.events)} events · ${esc(run.ledger)}</span>
    <span>${new Date(run.t0 * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC</span></div>
    ${run.error ? `<div class="err">${esc(run.error)}</div>` : ""}`;
}

function renderVerify() {
  const v = R.verify;
  $("verify").innerHTML = v.ok
    ? `<div class="intact">Ledger intact: ${fmtN(v.count)} records, hash chain verified, head
       <span class="nid">${esc(v.head)}</span></div>`
    : `<div class="tampered">Ledger TAMPERED: the hash chain breaks at seq ${esc(v.bad_seq)}
       (${esc(v.reason)}). ${fmtN(v.count)} records verified before it; what follows is shown
       but unverified${v.bad_t != null ? ` (red line on the timeline, +${fmtMs(v.bad_t)})` : ""}.
       ${v.unreadable ? `${v.unreadable} unreadable line(s).` : ""}</div>`;
}

function renderAnswer() {
  const box = $("answer");
  if (!R.answer) { box.innerHTML = `<p class="note">No answer recorded.</p>`; return; }
  const div = document.createElement("div");
  div.className = "answer";
  const items = (R.ungrounded || []).filter(Boolean)
    .map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).sort((a, b) => b.length - a.length);
  const re = items.length ? new RegExp(`(?<![\\w.])(${items.join("|")})(?![\\d])`, "g") : null;
  let last = 0;
  for (const m of re ? R.answer.matchAll(re) : []) {
    div.append(R.answer.slice(last, m.index));
    const mark = document.createElement("mark");
    mark.className = "ungrounded";
    mark.title = "no tool output or fetched page contains this";
    mark.textContent = m[0];
    div.append(mark);
    last = m.index + m[0].length;
  }
  div.append(R.answer.slice(last));
  box.replaceChildren(div);
  const notes = [];
  if (items.length) notes.push(`Highlighted: not found in any tool output or fetched page (${
    (R.ungrounded || []).map(esc).join(", ")}).`);
  if (R.dropped.length) notes.push(`Removed, never fetched in this run: ${R.dropped.map(esc).join(", ")}.`);
  box.insertAdjacentHTML("beforeend", notes.map((n) => `<p class="note">${n}</p>`).join(""));
}

function renderDag() {
  const W = 160, H = 24, GX = 50, GY = 8, P = 6;
  const at = (i) => [P + R.pos[i][0] * (W + GX), P + R.pos[i][1] * (H + GY)];
  let width = 0, height = 0;
  const nodes = rows.map((r, i) => {
    const [x, y] = at(i);
    width = Math.max(width, x + W + P); height = Math.max(height, y + H + P);
    const label = r.id.length > 22 ? r.id.slice(0, 21) + "…" : r.id;
    return `<g class="dn st-${esc(r.status)}${r.kind === "node" ? "" : " pseudo"}" data-i="${i}">
      <title>${esc(r.id)} (${esc(r.status)})${r.goal ? "\n" + esc(r.goal) : ""}</title>
      <rect x="${x}" y="${y}" width="${W}" height="${H}"></rect>
      <text x="${x + 6}" y="${y + 16}">${esc(label)}</text></g>`;
  });
  const edges = R.edges.map(([a, b, k]) => {
    const [x1, y1] = at(a), [x2, y2] = at(b), mx = (x1 + W + x2) / 2;
    return `<path class="e${k}" d="M${x1 + W} ${y1 + H / 2}C${mx} ${y1 + H / 2} ${mx} ${y2 + H / 2} ${x2} ${y2 + H / 2}"/>`;
  });
  $("dag").innerHTML = `<svg class="dag" width="${width}" height="${height}"
    xmlns="http://www.w3.org/2000/svg">${edges.join("")}${nodes.join("")}</svg>`;
}

function renderTimeline() {
  const dur = Math.max(R.run.dur, 1);
  const pct = (t) => (100 * Math.max(0, t) / dur).toFixed(3);
  const w = (s, e) => (100 * Math.max(0, (e ?? s) - s) / dur).toFixed(3);
  const bar = (cls, s, e, title) =>
    `<i class="${cls}" style="left:${pct(s)}%;width:${w(s, e)}%"${title ? ` title="${esc(title)}"` : ""}></i>`;
  const out = [axis(dur)];
  rows.forEach((r, i) => {
    const [s, e] = rowSpan(r);
    const parts = [bar(`nb st-${esc(r.status)}`, s, e,
      `${r.id}: ${r.status}, ${fmtMs(e - s)} from +${fmtMs(s)}`).replace("<i ", `<i data-node="${esc(r.id)}" `)];
    r.att.forEach((a) => { if (a[2] === "failed") parts.push(bar("af", a[0], a[1], "failed attempt")); });
    r.waits.forEach((x) => parts.push(bar("wt", x[0], x[1], `waited ${fmtMs(x[1] - x[0])}`)));
    r.calls.forEach((c) => parts.push(bar(c[2] ? "mc" : "mc x", c[0], c[1], `model call ${fmtMs(c[1] - c[0])}`)));
    r.tbars.forEach((c) => parts.push(bar(c[2] ? "tc" : "tc x", c[0], c[1], `tool call ${fmtMs(c[1] - c[0])}`)));
    r.marks.forEach((m) => parts.push(`<i class="mk" style="left:${pct(m[0])}%" title="${esc(m[1])} +${fmtMs(m[0])}"></i>`));
    out.push(`<div class="tl-row" data-i="${i}"><div class="tl-label" title="${esc(r.id)}">${esc(r.id)}</div>
      <div class="tl-track">${parts.join("")}</div></div>`);
  });
  const bad = R.verify.bad_t != null
    ? `<div class="badline" style="left:calc(190px + (100% - 190px) * ${pct(R.verify.bad_t) / 100})"></div>` : "";
  $("timeline").innerHTML = `<div id="tl-inner">${bad}${out.join("")}</div>`;
}

function axis(dur) {
  const raw = dur / 8, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = 0; t <= dur; t += step) {
    ticks.push(`<span class="tk" style="left:${(100 * t / dur).toFixed(3)}%">${fmtMs(Math.round(t))}</span>`);
  }
  return `<div class="tl-row tl-axis"><div class="tl-label"></div><div class="tl-track">${ticks.join("")}</div></div>`;
}

const COLS = [
  ["id", "Node", (r) => r.id], ["kind", "Kind", (r) => r.kind], ["status", "Status", (r) => r.status],
  ["att", "Attempts", (r) => r.att.length, 1], ["start", "Start", (r) => rowSpan(r)[0], 1],
  ["dur", "Duration", (r) => rowSpan(r)[1] - rowSpan(r)[0], 1],
  ["calls", "Model calls", (r) => r.calls.length, 1], ["ntools", "Tool calls", (r) => r.ntools, 1],
  ["in", "In", (r) => r.tok[0], 1], ["out", "Out", (r) => r.tok[1], 1],
  ["rs", "Reasoning", (r) => r.tok[2], 1], ["cost", "Cost", (r) => r.cost, 1],
];
let sortBy = null, sortDir = 1;

function renderNodes() {
  const order = rows.map((_, i) => i);
  if (sortBy) {
    const get = COLS.find((c) => c[0] === sortBy)[2];
    order.sort((a, b) => (get(rows[a]) > get(rows[b]) ? 1 : get(rows[a]) < get(rows[b]) ? -1 : 0) * sortDir);
  }
  const fmt = { start: (v) => "+" + fmtMs(v), dur: fmtMs, cost: fmtCost, in: fmtN, out: fmtN, rs: fmtN };
  const head = COLS.map((c) => `<th data-k="${c[0]}"${c[3] ? ' class="n"' : ""}>${c[1]}</th>`).join("");
  const body = order.map((i) => {
    const r = rows[i];
    return `<tr class="pick" data-i="${i}" title="${esc(r.error || r.goal)}">${COLS.map((c) => {
      const v = c[2](r);
      if (c[0] === "status") return `<td>${badge(v)}</td>`;
      return `<td${c[3] ? ' class="n"' : c[0] === "id" ? ' class="nid"' : ""}>${esc(fmt[c[0]] ? fmt[c[0]](v) : v)}</td>`;
    }).join("")}</tr>`;
  }).join("");
  $("nodes").innerHTML = `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function renderModels() {
  const body = R.models.map((m) => `<tr><td class="nid">${esc(m.name)}</td><td class="nid">${
    esc(m.pm.join(", "))}</td><td>${esc(m.provider)}</td><td class="n">${fmtN(m.calls)}</td>${
    m.tok.map((t) => `<td class="n">${fmtN(t)}</td>`).join("")}<td class="n">${fmtCost(m.cost)}</td></tr>`);
  $("models").innerHTML = body.length ? `<table><thead><tr><th>Model</th><th>Provider model</th>
    <th>Provider</th><th class="n">Calls</th><th class="n">In</th><th class="n">Out</th>
    <th class="n">Reasoning</th><th class="n">Cached</th><th class="n">Cost</th></tr></thead>
    <tbody>${body.join("")}</tbody></table>` : `<p class="note">No model call answered.</p>`;
}

function renderUrls() {
  const body = R.urls.map((u) => {
    const href = safeHref(u.url);
    return `<tr><td>${href ? `<a href="${href}" rel="noreferrer noopener" target="_blank">${esc(u.url)}</a>`
      : esc(u.url)}</td><td>${esc(u.title)}</td><td class="nid">${esc(u.node)}</td>
      <td class="nid" title="${esc(u.hash)}">${esc((u.hash || "").slice(0, 16))}…</td>
      <td>${u.cited === true ? "cited" : u.cited === false ? "refused" : "–"}</td></tr>`;
  });
  $("urls").innerHTML = body.length ? `<table><thead><tr><th>URL</th><th>Title</th><th>Fetched by</th>
    <th>sha256 of the fetched page</th><th>In the answer</th></tr></thead><tbody>${body.join("")}</tbody></table>`
    : `<p class="note">No page was fetched in this run.</p>`;
}

// -- one node's conversation, rendered on demand ------------------------------------------------

const pre = (text, cls) => `<pre${cls ? ` class="${cls}"` : ""}>${esc(text)}</pre>`;
const fold = (title, body, open) => `<details${open ? " open" : ""}><summary>${title}</summary>${body}</details>`;

function diffHtml(text) {
  return `<pre class="diff">${String(text).split("\n").map((l) => {
    const cls = l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : "";
    return cls ? `<span class="${cls}">${esc(l)}</span>` : esc(l) + "\n";
  }).join("")}</pre>`;
}

function itemHtml(d) {
  if (d.t === "attempt") return `<h3>Attempt ${esc(d.n)} · +${fmtMs(d.s)}</h3>`;
  if (d.t === "output") return `<div class="out"><b>Output</b>${pre(d.x)}</div>`;
  if (d.t === "event") return `<div class="ev"><b>${esc(d.k)}</b> +${fmtMs(d.s)} ${esc(d.x)}</div>`;
  if (d.t === "diff") return `<div class="diff-box">${fold(`file diff <span class="nid">${esc(d.path)}</span>`, diffHtml(d.diff), true)}</div>`;
  if (d.t === "tool") {
    return `<div class="tool${d.ok === false ? " x" : ""}"><div class="ch"><b>${esc(d.n)}</b>
      <span class="nid">${esc(d.id)}</span> · +${fmtMs(d.s)} · ${d.e == null ? "no result" : fmtMs(d.e - d.s)}
      ${d.ok === false ? `<span class="err">${esc(d.err)}</span>` : ""}</div>
      ${fold("arguments", pre(d.a), true)}${d.data ? fold("result", pre(d.data)) : ""}
      ${d.read != null ? fold("what the model read", pre(d.read)) : ""}</div>`;
  }
  const tok = d.tok || [0, 0, 0, 0];
  const msgs = d.msgs.map((m) => fold(`<span class="role">${esc(m.r)}</span> ${esc(m.x.slice(0, 90))}…`,
    pre(m.x), m.r === "user" && m.x.length < 600)).join("");
  return `<div class="call${d.err ? " x" : ""}"><div class="ch"><b>${esc(d.m)}</b>${d.pm ? ` (${esc(d.pm)})` : ""}
    ${d.agent ? `· agent <span class="nid">${esc(d.agent)}</span>` : ""} · +${fmtMs(d.s)} ·
    ${d.e == null ? "no answer" : fmtMs(d.e - d.s)} · ${fmtN(tok[0])} in / ${fmtN(tok[1])} out
    (${fmtN(tok[2])} reasoning) · ${fmtCost(d.cost)}${d.fin ? ` · ${esc(d.fin)}` : ""}</div>
    ${msgs}${d.ev.map((e) => `<div class="ev">${esc(e)}</div>`).join("")}
    ${d.rsn ? fold(`reasoning (${fmtN(d.rsn.length)} chars)`, pre(d.rsn)) : ""}
    ${d.txt ? `<div class="msg">${pre(d.txt)}</div>` : ""}
    ${(d.tc || []).map((c) => `<div class="note">calls <b>${esc(c.n)}</b> <span class="nid">${esc(c.id)}</span></div>`).join("")}
    ${d.err ? `<div class="err">${esc(d.err)}</div>` : ""}</div>`;
}

function openRow(i) {
  const block = $("d" + i);
  if (!block) {  // still being read (a click or a #node link before the page finished loading)
    document.addEventListener("DOMContentLoaded", () => openRow(i), { once: true });
    return;
  }
  const r = rows[i];
  const items = JSON.parse(block.textContent);
  $("panel-body").innerHTML = `<h2 class="nid">${esc(r.id)} ${badge(r.status)}</h2>
    ${r.goal ? `<p>${esc(r.goal)}</p>` : ""}
    <p class="note">${r.deps.length ? `depends on ${r.deps.map(esc).join(", ")} · ` : ""}${
      r.tools.length ? `tools ${r.tools.map(esc).join(", ")} · ` : ""}${r.calls.length} model calls ·
      ${r.ntools} tool calls · ${fmtN(r.tok[0])} in / ${fmtN(r.tok[1])} out tokens · ${fmtCost(r.cost)}</p>
    ${r.error ? `<p class="err">${esc(r.error)}</p>` : ""}
    <div id="calls">${items.map(itemHtml).join("") || `<p class="note">Nothing recorded.</p>`}</div>`;
  $("panel").hidden = false;
  $("panel").scrollTop = 0;
  history.replaceState(null, "", "#" + encodeURIComponent(r.id));
}

function wire() {
  document.body.addEventListener("click", (ev) => {
    const th = ev.target.closest("th[data-k]");
    if (th) {
      sortDir = sortBy === th.dataset.k ? -sortDir : 1;
      sortBy = th.dataset.k;
      renderNodes();
      return;
    }
    const hit = ev.target.closest("[data-i]");
    if (hit && !ev.target.closest("#panel")) openRow(Number(hit.dataset.i));
  });
  $("close").addEventListener("click", () => { $("panel").hidden = true; });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") $("panel").hidden = true; });
  $("zoom").addEventListener("input", (ev) => {
    $("tl-inner").style.width = `calc(190px + (100% - 190px) * ${ev.target.value})`;
  });
  const wanted = decodeURIComponent(location.hash.slice(1));
  const at = rows.findIndex((r) => r.id === wanted);
  if (at >= 0) openRow(at);
}

// What the first screen shows is drawn at once; the tables below it right after that frame.
renderHeader();
renderVerify();
renderAnswer();
renderDag();
renderTimeline();
wire();
performance.mark("agentkit-rendered");
requestAnimationFrame(() => setTimeout(() => {
  performance.mark("agentkit-painted");
  renderNodes();
  renderModels();
  renderUrls();
  document.body.dataset.rendered = "1";
  document.dispatchEvent(new Event("agentkit:rendered"));
}));
