// Ironflow dashboard: plain modern JavaScript, no framework, no build step.
// Every value from the store is put on the page with textContent (never innerHTML),
// so a run's data can never inject markup.

const $main = document.getElementById("main");
let session = null; // {csrf, dev, statuses}
let current = null; // the page on screen: {refresh: async () => void}

// -- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path) {
  const res = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (res.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
  return body;
}

async function act(path, body) {
  const res = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Ironflow-CSRF": session.csrf },
    body: JSON.stringify(body || {}),
  });
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(answer.error ? answer.error.message : res.statusText);
  return answer;
}

function badge(status, extra) {
  return h("span", { class: `badge ${status} ${extra || ""}`, dataset: { status } }, status);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 0) return `in ${human(-s)}`;
  return `${human(s)} ago`;
}

function human(s) {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function ms(n) { return n < 1000 ? `${n.toFixed(n < 10 ? 1 : 0)} ms` : human(n / 1000); }

function runLink(id) { return h("a", { href: `#/runs/${encodeURIComponent(id)}`, class: "mono" }, id); }

function flash(text, bad) {
  const old = document.querySelector(".flash");
  if (old) old.remove();
  const el = h("div", { class: `flash ${bad ? "bad" : ""}`, role: "status" }, text);
  $main.prepend(el);
  setTimeout(() => el.remove(), 8000);
}

// A JSON value as a collapsible tree: objects and arrays are <details>, open to `open` levels.
function json(value, open = 1) {
  return h("div", { class: "json" }, jsonNode(value, null, open));
}

function jsonNode(value, key, open) {
  const label = key === null ? [] : [h("span", { class: "k" }, JSON.stringify(key)), ": "];
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [o, c] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    if (!entries.length) return h("div", {}, label, `${o}${c}`);
    const details = h("details", { open: open > 0 },
      h("summary", {}, label, `${o} `, h("span", { class: "z" }, `${entries.length} ${Array.isArray(value) ? (entries.length === 1 ? "item" : "items") : (entries.length === 1 ? "key" : "keys")}`), ` ${c}`));
    // Children are built when first opened: a 1,000-step run stays quick to draw.
    const fill = () => {
      if (details.dataset.filled) return;
      details.dataset.filled = "1";
      for (const [k, v] of entries) details.append(jsonNode(v, Array.isArray(value) ? null : k, open - 1));
    };
    if (open > 0) fill(); else details.addEventListener("toggle", fill);
    return details;
  }
  let cls = "z", text = String(value);
  if (typeof value === "string") { cls = "s"; text = JSON.stringify(value); }
  else if (typeof value === "number") cls = "n";
  else if (typeof value === "boolean") cls = "b";
  else if (value === null) text = "null";
  return h("div", { class: "row" }, label, h("span", { class: cls }, text));
}

// A confirmation: resolves to null (backed out) or {reason}.
function confirmDialog(title, text, { reason = false, danger = false, ok = "Confirm" } = {}) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const reasonLabel = document.getElementById("confirm-reason-label");
  const reasonBox = document.getElementById("confirm-reason");
  reasonLabel.hidden = !reason;
  reasonBox.value = "";
  const okButton = document.getElementById("confirm-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok" ? { reason: reasonBox.value.trim() || null } : null);
    }, { once: true });
    dlg.returnValue = "";
    dlg.showModal();
  });
}

async function confirmed(title, text, doIt, opts) {
  const answer = await confirmDialog(title, text, opts);
  if (!answer) return;
  try {
    await doIt(answer);
    flash(`${title}: done`);
    refreshSoon();
  } catch (err) {
    flash(`${title}: ${err.message}`, true);
  }
}

// -- live updates ----------------------------------------------------------------------------

let refreshing = false, again = false;
async function refreshSoon() {
  if (!current || !current.refresh) return;
  if (refreshing) { again = true; return; }
  refreshing = true;
  try { await current.refresh(); } catch (err) { console.warn(err); }
  refreshing = false;
  if (again) { again = false; refreshSoon(); }
}

function startLive() {
  const badgeEl = document.getElementById("live");
  const source = new EventSource("/ui/api/live");
  source.addEventListener("open", () => { badgeEl.textContent = "live"; badgeEl.className = "live on"; });
  source.addEventListener("error", () => { badgeEl.textContent = "reconnecting"; badgeEl.className = "live off"; });
  // The first message names the store's state when the stream opened: the page was
  // drawn from that state already unless something was written in between.
  let known = session.marker;
  source.addEventListener("change", (e) => {
    const marker = JSON.parse(e.data).marker;
    if (marker === known) return;
    known = marker;
    refreshSoon();
  });
}

// -- the runs list ---------------------------------------------------------------------------

const pagerStack = [];

async function runsPage(params) {
  const status = params.get("status") || "";
  const agent = params.get("agent") || "";
  const q = params.get("q") || "";
  const before = params.get("before") || "";
  const form = h("form", { class: "filters", id: "run-filters", onsubmit: (e) => { e.preventDefault(); go(); } });
  const statusSel = h("select", { name: "status", id: "filter-status", onchange: () => go() },
    h("option", { value: "" }, "any status"), session.statuses.map((s) => h("option", { value: s, selected: s === status }, s)));
  const agentSel = h("select", { name: "agent", id: "filter-agent", onchange: () => go() }, h("option", { value: "" }, "any agent"));
  const search = h("input", { type: "search", name: "q", id: "filter-q", value: q, placeholder: "run id, or a value in the event data", size: 34 });
  form.append(h("label", {}, "Status", statusSel), h("label", {}, "Agent", agentSel), h("label", {}, "Search", search), h("button", { type: "submit" }, "Search"));
  function go(extra) {
    const p = new URLSearchParams();
    if (statusSel.value) p.set("status", statusSel.value);
    if (agentSel.value) p.set("agent", agentSel.value);
    if (search.value.trim()) p.set("q", search.value.trim());
    if (extra) for (const [k, v] of Object.entries(extra)) p.set(k, v);
    if (!extra) pagerStack.length = 0;
    location.hash = `#/runs${p.toString() ? "?" + p : ""}`;
  }
  const tbody = h("tbody", { id: "runs-body" });
  const table = h("table", { id: "runs-table" },
    h("thead", {}, h("tr", {}, ["Run", "Agent", "Status", "Steps", "Event", "Created", "Updated"].map((t) => h("th", {}, t)))), tbody);
  const info = h("span", { class: "muted", id: "runs-info" });
  const older = h("button", { class: "secondary", id: "older" }, "Older →");
  const newer = h("button", { class: "secondary", id: "newer", disabled: !before }, "← Newer");
  newer.addEventListener("click", () => {
    const prev = pagerStack.pop();
    const p = new URLSearchParams(params);
    if (prev) p.set("before", prev); else p.delete("before");
    location.hash = `#/runs${p.toString() ? "?" + p : ""}`;
  });
  $main.replaceChildren(h("h1", {}, "Runs"), form, table, h("div", { class: "pager" }, newer, older, info));
  let nextBefore = null;
  older.addEventListener("click", () => {
    if (!nextBefore) return;
    pagerStack.push(before);
    const extra = { before: nextBefore };
    const p = new URLSearchParams(params);
    p.set("before", extra.before);
    location.hash = `#/runs?${p}`;
  });
  async function refresh() {
    const p = new URLSearchParams({ limit: "50" });
    if (status) p.set("status", status);
    if (agent) p.set("agent", agent);
    if (q) p.set("q", q);
    if (before) p.set("before", before);
    const data = await api(`/ui/api/runs?${p}`);
    if (agentSel.options.length === 1) {
      for (const a of data.agents) agentSel.append(h("option", { value: a, selected: a === agent }, a));
    }
    nextBefore = data.next_before;
    older.disabled = !nextBefore;
    older.textContent = data.exhausted ? "Older →" : "Search older →";
    tbody.replaceChildren(...data.runs.map((r) => h("tr", { dataset: { runId: r.id, status: r.status } },
      h("td", {}, runLink(r.id), r.parent_id ? h("span", { class: "muted" }, " (child)") : null),
      h("td", {}, r.agent),
      h("td", { class: "status" }, badge(r.status), r.orphaned ? h("span", { class: "muted" }, " orphaned") : null),
      h("td", { class: "steps" }, String(r.steps)),
      h("td", { class: "mono" }, r.event.name),
      h("td", { title: r.created_at }, when(r.created_at)),
      h("td", { title: r.updated_at }, ago(r.updated_at)))));
    if (!data.runs.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, data.exhausted ? "No runs match." : `No match among the ${data.scanned.toLocaleString()} runs searched; search older runs to go on.`)));
    info.textContent = `${data.total.toLocaleString()} run${data.total === 1 ? "" : "s"} stored · ${data.runs.length} shown · ${data.scanned.toLocaleString()} examined in ${data.server_ms} ms`;
  }
  await refresh();
  return { refresh };
}

// -- one run ---------------------------------------------------------------------------------

function errorBox(err) {
  if (!err) return null;
  const frame = err.user_frame;
  return h("div", { class: "error-box" },
    h("strong", {}, `${err.type}: `), err.message,
    err.step ? h("div", { class: "muted" }, `in step ${err.step}`) : null,
    frame ? h("div", { class: "frame" }, h("div", { class: "muted" }, "your code:"),
      h("div", { class: "mono" }, `${frame.file}:${frame.line} in ${frame.function}`),
      frame.code ? h("pre", {}, frame.code) : null) : null,
    err.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", { class: "traceback" }, err.traceback)) : null);
}

function llmView(step) {
  const input = step.input || {};
  const out = step.output || {};
  const messages = Array.isArray(input.messages) ? input.messages : [];
  const usage = out.usage || {};
  return h("div", { class: "llm" },
    h("h3", {}, `Model ${input.model || ""}`),
    h("div", {}, h("strong", {}, "Messages"), messages.map((m) => h("div", { class: "msg" },
      h("div", { class: "role" }, m.role, m.name ? ` (${m.name})` : ""),
      m.content ? h("pre", {}, m.content) : null,
      (m.tool_calls || []).map((c) => h("div", { class: "mono" }, `→ ${c.name}(${JSON.stringify(c.arguments)})`))))),
    h("div", {}, h("strong", {}, "Response"), h("div", { class: "msg response" },
      out.content ? h("pre", {}, out.content) : h("span", { class: "muted" }, "(no text)"),
      (out.tool_calls || []).length ? h("div", {}, h("strong", {}, "Tool calls"),
        out.tool_calls.map((c) => h("div", { class: "mono tool-call" }, `${c.name}(${JSON.stringify(c.arguments)})`))) : null)),
    h("div", { class: "usage" }, `Tokens: ${usage.input_tokens ?? "?"} in, ${usage.output_tokens ?? "?"} out`,
      out.stop_reason ? ` · stop: ${out.stop_reason}` : ""));
}

function stepDetail(step, run) {
  const parts = [];
  if (step.kind === "llm" && step.status === "completed") parts.push(llmView(step));
  parts.push(h("div", { class: "cols" },
    h("div", {}, h("strong", {}, "Input"), json(step.input, 2)),
    h("div", { class: "output" }, h("strong", {}, "Output "), step.status === "completed" ? json(step.output, 2) : h("span", { class: "muted" }, "(failed)"))));
  if (step.error) parts.push(errorBox(step.error));
  if (step.tries.length) {
    parts.push(h("div", {}, h("strong", {}, `${step.tries.length} failed ${step.tries.length === 1 ? "try" : "tries"} before this outcome`),
      step.tries.map((t, i) => h("div", {}, h("div", { class: "muted" }, `try ${i + 1}: ${when(t.started_at)} → ${when(t.ended_at)}`), errorBox(t.error)))));
  }
  parts.push(h("div", { class: "muted" },
    `position ${step.position} · attempt ${step.attempt} · ${step.replayed ? "replayed from the record in later attempts" : "executed in the latest attempt"}`,
    step.worker ? ` · worker ${step.worker}` : "", ` · ${when(step.started_at)} → ${when(step.ended_at)}`));
  if (run.finished) {
    parts.push(h("div", { class: "actions" }, h("button", {
      class: "secondary rerun", onclick: () => confirmed("Re-run", `Re-run ${run.id} from step ${step.id}? The records from this step on are dropped and the run starts again from here (ironflow run resume --from-step).`,
        () => act(`/ui/api/runs/${encodeURIComponent(run.id)}/resume`, { from_step: step.id }), { ok: "Re-run" }),
    }, "Re-run from this step")));
  }
  return h("div", { class: "step-detail" }, parts);
}

function timeline(run) {
  const steps = run.steps;
  const t0 = Date.parse(run.created_at);
  const ends = steps.map((s) => Date.parse(s.ended_at));
  let t1 = Math.max(t0 + 1, ...ends, run.finished ? Date.parse(run.updated_at) : Date.now());
  const span = t1 - t0;
  const box = h("div", { class: "timeline", id: "timeline" },
    h("div", { class: "step-row head" }, h("span", {}, "#"), h("span", {}, "Step"), h("span", {}, "Status"), h("span", {}, "Attempt"), h("span", {}, "Worker"), h("span", {}, "Timeline"), h("span", { class: "dur" }, "Took")));
  const open = new Set(JSON.parse(sessionStorage.getItem(`open:${run.id}`) || "[]"));
  for (const s of steps) {
    const start = Date.parse(s.started_at) - t0, dur = Date.parse(s.ended_at) - Date.parse(s.started_at);
    const bar = h("div", { class: `bar ${s.status} ${s.replayed ? "replayed" : ""} ${s.kind === "compensate" ? "compensate" : ""}`,
      style: `left:${(100 * start / span).toFixed(3)}%;width:${Math.max(0.15, 100 * dur / span).toFixed(3)}%` });
    const row = h("div", { class: "step-row", dataset: { stepId: s.id, position: s.position }, tabindex: 0, role: "button", "aria-expanded": "false" },
      h("span", { class: "muted" }, String(s.position)),
      h("span", { class: "id", title: s.id }, s.id),
      h("span", {}, badge(s.status)),
      h("span", {}, `${s.attempt}`, s.tries.length ? ` · ${s.tries.length + 1} tries` : "", " ", h("span", { class: `badge ${s.replayed ? "replayed" : "executed"}` }, s.replayed ? "replayed" : "executed")),
      h("span", { class: "worker mono", title: s.worker || "recorded by the store as the wait ended" }, s.worker || "store"),
      h("div", { class: "bar-track" }, bar),
      h("span", { class: "dur" }, ms(s.duration_ms)));
    let detail = null;
    const toggle = () => {
      if (detail) { detail.remove(); detail = null; open.delete(s.position); row.setAttribute("aria-expanded", "false"); }
      else { detail = stepDetail(s, run); row.after(detail); open.add(s.position); row.setAttribute("aria-expanded", "true"); }
      sessionStorage.setItem(`open:${run.id}`, JSON.stringify([...open]));
    };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") toggle(); });
    box.append(row);
    if (open.has(s.position)) { detail = stepDetail(s, run); box.append(detail); row.setAttribute("aria-expanded", "true"); }
  }
  const susp = run.suspension;
  if (susp) {
    const left = susp.since ? Date.parse(susp.since) - t0 : span;
    box.append(h("div", { class: "step-row pending-row", dataset: { stepId: susp.step } },
      h("span", { class: "muted" }, String(susp.position)), h("span", { class: "id" }, susp.step), h("span", {}, badge(run.status)),
      h("span", { class: "muted" }, susp.kind), h("span", {}), h("div", { class: "bar-track" }, h("div", { class: "bar pending", style: `left:${(100 * left / span).toFixed(3)}%;width:${Math.max(0.5, 100 - 100 * left / span).toFixed(3)}%` })), h("span", { class: "dur" }, "…")));
  }
  if (!steps.length && !susp) box.append(h("div", { class: "step-row muted" }, h("span", {}), h("span", {}, "no steps recorded yet")));
  return box;
}

function suspensionBox(run) {
  const s = run.suspension;
  if (!s) return null;
  const lines = [];
  if (s.kind === "sleep") lines.push(h("div", {}, `Sleeping in step ${s.step} until `, h("strong", { class: "wake" }, when(s.wake_at)), ` (${ago(s.wake_at)}).`));
  else if (s.kind === "retry") lines.push(h("div", {}, `Step ${s.step} failed ${s.tries.length} ${s.tries.length === 1 ? "time" : "times"}; trying again at `, h("strong", { class: "wake" }, when(s.wake_at)), ` (${ago(s.wake_at)}).`),
    s.tries.map((t, i) => h("div", {}, h("div", { class: "muted" }, `try ${i + 1}`), errorBox(t.error))));
  else if (s.kind === "child") lines.push(h("div", {}, `Waiting for child run `, runLink(s.child_id), ` to finish`, s.wake_at ? `, at most until ${when(s.wake_at)}` : "", "."));
  else if (s.kind === "event") {
    lines.push(h("div", {}, `Waiting in step ${s.step} for the event `, h("code", {}, s.event),
      s.match ? [" matching ", h("code", {}, JSON.stringify(s.match))] : "",
      s.wake_at ? [", timing out at ", h("strong", { class: "wake" }, when(s.wake_at)), ` (${ago(s.wake_at)})`] : ", with no timeout", "."));
  }
  const box = h("div", { class: "notice", id: "suspension" }, lines);
  if (run.approval) {
    const name = run.approval;
    const approver = h("input", { id: "approver", placeholder: "your name (default: dashboard)", size: 24 });
    const answer = (approved) => confirmed(approved ? "Approve" : "Reject",
      `${approved ? "Approve" : "Reject"} "${name}" for run ${run.id}? This emits ${s.event}, as ironflow approve${approved ? "" : " --reject"} does.`,
      ({ reason }) => act(`/ui/api/runs/${encodeURIComponent(run.id)}/approvals/${encodeURIComponent(name)}`, { approved, reason, approver: approver.value.trim() || null }),
      { reason: true, danger: !approved, ok: approved ? "Approve" : "Reject" });
    box.append(h("div", { class: "actions" }, h("strong", {}, `Approval "${name}": `), approver,
      h("button", { id: "approve", onclick: () => answer(true) }, "Approve…"),
      h("button", { id: "reject", class: "danger", onclick: () => answer(false) }, "Reject…")));
  }
  return box;
}

function runActions(run) {
  const id = encodeURIComponent(run.id);
  const buttons = [];
  if (!run.finished) {
    buttons.push(h("button", { class: "danger", id: "cancel", onclick: () => confirmed("Cancel", `Cancel run ${run.id}? A pending, sleeping or waiting run stops now, a running one at its next step boundary; its child runs are cancelled too (ironflow run cancel).`, () => act(`/ui/api/runs/${id}/cancel`), { danger: true, ok: "Cancel run" }) }, run.cancel_requested ? "Cancel requested" : "Cancel…"));
    if (run.status === "paused") buttons.push(h("button", { id: "resume", onclick: () => confirmed("Resume", `Resume run ${run.id} (ironflow run resume)?`, () => act(`/ui/api/runs/${id}/resume`)) }, "Resume…"));
    else buttons.push(h("button", { class: "secondary", id: "pause", onclick: () => confirmed("Pause", `Pause run ${run.id} at its next step boundary (ironflow run pause)?`, () => act(`/ui/api/runs/${id}/pause`)) }, "Pause…"));
  } else {
    buttons.push(h("span", { class: "muted" }, "Open a step to re-run the run from it."));
  }
  return h("div", { class: "actions", id: "run-actions" }, buttons);
}

async function runPage(id) {
  async function refresh() {
    const run = await api(`/ui/api/runs/${encodeURIComponent(id)}`);
    const compensations = run.steps.filter((s) => s.kind === "compensate");
    const view = [
      h("h1", {}, "Run ", h("span", { class: "mono", id: "run-id" }, run.id), " ", h("span", { id: "run-status" }, badge(run.status))),
      h("div", { class: "card" }, h("dl", { class: "kv" },
        h("dt", {}, "Agent"), h("dd", {}, run.agent, run.version ? ` (version ${run.version})` : ""),
        h("dt", {}, "Event"), h("dd", {}, h("code", {}, run.event.name), ` ${run.event.id} at ${when(run.event.ts)}`),
        h("dt", {}, "Created"), h("dd", {}, when(run.created_at)),
        h("dt", {}, "Updated"), h("dd", {}, `${when(run.updated_at)} (${ago(run.updated_at)})`),
        h("dt", {}, "Attempt"), h("dd", {}, `${run.attempt}`, run.attempt > 1 ? " (leased more than once: a crash, hand-over or resume)" : ""),
        h("dt", {}, "Worker"), h("dd", {}, run.lease ? `${run.lease.worker} (${run.lease.host}, pid ${run.lease.pid})` : "none", run.orphaned ? " — orphaned" : ""),
        run.parent_id ? [h("dt", {}, "Parent"), h("dd", { id: "parent" }, "spawned by ", runLink(run.parent_id))] : [],
        run.children.length ? [h("dt", {}, "Children"), h("dd", { id: "children" }, run.children.map((c) => h("div", {}, runLink(c.id), ` ${c.agent} (step ${c.step})`)))] : [],
        h("dt", {}, "Steps"), h("dd", {}, `${run.steps.length} recorded`))),
      runActions(run),
      suspensionBox(run),
      run.error ? h("div", { id: "run-error" }, h("h2", {}, "Error"), errorBox(run.error)) : null,
      h("h2", {}, "Timeline"),
      timeline(run),
      compensations.length ? [h("h2", {}, "Compensations"), h("ul", { id: "compensations" }, compensations.map((s) => h("li", {}, h("code", {}, s.id), " ", badge(s.status))))] : null,
      run.reruns.length ? [h("h2", {}, "Re-runs"), h("ul", { id: "reruns" }, run.reruns.map((r) => h("li", {}, `from step ${r.from_step} (position ${r.position}) at ${when(r.at)}; it had been ${r.previous_status} after attempt ${r.previous_attempt}`)))] : null,
      h("div", { class: "cols" },
        h("div", {}, h("h2", {}, "Event data"), json(run.event.data, 2)),
        h("div", { id: "run-output" }, h("h2", {}, "Output"), run.status === "completed" ? json(run.output, 2) : h("span", { class: "muted" }, "(none yet)"))),
      h("p", { class: "muted" }, `server time ${run.server_ms} ms`),
    ];
    $main.replaceChildren(...view.flat().filter(Boolean));
  }
  await refresh();
  return { refresh };
}

// -- events ----------------------------------------------------------------------------------

async function eventsPage(params) {
  const before = params.get("before") || "";
  const name = h("input", { id: "emit-name", placeholder: "doc.received", required: true, size: 24 });
  const data = h("textarea", { id: "emit-data", rows: 3, cols: 50 }, "{}");
  const eid = h("input", { id: "emit-id", placeholder: "optional: an id makes it idempotent", size: 28 });
  const result = h("div", { id: "emit-result" });
  const form = h("form", { class: "card filters", id: "emit-form", onsubmit: async (e) => {
    e.preventDefault();
    let parsed;
    try { parsed = JSON.parse(data.value || "{}"); } catch (err) { result.replaceChildren(h("span", { class: "flash bad" }, `The data is not JSON: ${err.message}`)); return; }
    const answer = await confirmDialog("Emit", `Emit ${name.value} (as ironflow emit does)?`, { ok: "Emit" });
    if (!answer) return;
    try {
      const r = await act("/ui/api/events", { name: name.value.trim(), data: parsed, id: eid.value.trim() || null });
      result.replaceChildren(r.created
        ? h("span", {}, `Emitted ${r.event_id} at position ${r.seq}; `, r.runs.length ? ["runs: ", r.runs.map((id) => [runLink(id), " "])] : "it started no run.")
        : h("span", {}, `The id ${r.event_id} was seen before: nothing new was emitted (its runs: `, r.runs.map((id) => [runLink(id), " "]), ")."));
      refreshSoon();
    } catch (err) { result.replaceChildren(h("span", { class: "flash bad" }, err.message)); }
  } }, h("label", {}, "Event name", name), h("label", {}, "Data (JSON)", data), h("label", {}, "Id", eid), h("button", { type: "submit" }, "Emit…"), result);
  const tbody = h("tbody", { id: "events-body" });
  const older = h("button", { class: "secondary", id: "events-older" }, "Older →");
  $main.replaceChildren(h("h1", {}, "Events"), form,
    h("table", {}, h("thead", {}, h("tr", {}, ["#", "Name", "Data", "Runs it started", "At"].map((t) => h("th", {}, t)))), tbody),
    h("div", { class: "pager" }, before ? h("a", { href: "#/events" }, "← Newest") : null, older));
  let next = null;
  older.addEventListener("click", () => { if (next) location.hash = `#/events?before=${next}`; });
  async function refresh() {
    const page = await api(`/ui/api/events?limit=50${before ? `&before=${before}` : ""}`);
    next = page.next_before;
    older.disabled = !next;
    tbody.replaceChildren(...page.events.map((e) => h("tr", { dataset: { eventId: e.id } },
      h("td", { class: "muted" }, String(e.seq)),
      h("td", { class: "mono" }, e.name, e.stream ? h("div", { class: "muted" }, `stream ${e.stream} v${e.version}`) : null),
      h("td", {}, json(e.data, 0)),
      h("td", {}, e.runs.length ? e.runs.map((id) => h("div", {}, runLink(id))) : h("span", { class: "muted why" }, e.why_none)),
      h("td", { title: e.ts }, ago(e.ts)))));
    if (!page.events.length) tbody.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No events yet.")));
  }
  await refresh();
  return { refresh };
}

// -- agents and workers ----------------------------------------------------------------------

async function agentsPage() {
  const agentsBody = h("tbody", { id: "agents-body" });
  const workersBody = h("tbody", { id: "workers-body" });
  $main.replaceChildren(h("h1", {}, "Agents"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Agent", "Triggers", "Flow", "Cron", "Queued per key"].map((t) => h("th", {}, t)))), agentsBody),
    h("h2", {}, "Live workers"),
    h("p", { class: "muted" }, "Workers holding a run or a projection now, and idle workers asking this server for runs. A worker that opens the store itself (not through IRONFLOW_URL) shows only while it holds something."),
    h("table", {}, h("thead", {}, h("tr", {}, ["Worker", "Host", "Pid", "Agents", "Runs held", "Projections"].map((t) => h("th", {}, t)))), workersBody));
  async function refresh() {
    const [agents, workers] = await Promise.all([api("/ui/api/agents"), api("/ui/api/workers")]);
    agentsBody.replaceChildren(...agents.agents.map((a) => h("tr", { dataset: { agent: a.id } },
      h("td", {}, h("strong", {}, a.id), a.description ? h("div", { class: "muted" }, a.description) : null, a.version ? h("div", { class: "muted" }, `version ${a.version}`) : null),
      h("td", { class: "mono" }, a.triggers.map((t) => h("div", {}, t))),
      h("td", {},
        a.filter ? h("div", {}, "filter ", h("code", {}, a.filter)) : null,
        a.concurrency ? h("div", {}, `concurrency ${a.concurrency.limit}`, a.concurrency.key ? [" per ", h("code", {}, a.concurrency.key)] : "") : null,
        a.debounce ? h("div", {}, `debounce ${a.debounce.period} s`, a.debounce.key ? [" per ", h("code", {}, a.debounce.key)] : "", a.debounce.max_wait ? `, at most ${a.debounce.max_wait} s` : "") : null,
        a.cancel_on.map((c) => h("div", {}, "cancel on ", h("code", {}, c.event), c.match ? [" matching ", h("code", {}, c.match)] : "")),
        !a.filter && !a.concurrency && !a.debounce && !a.cancel_on.length ? h("span", { class: "muted" }, "none") : null),
      h("td", {}, a.crons.map((c) => h("div", {}, h("code", {}, c.cron), ` ${c.timezone}`, h("div", { class: "muted next-fire" }, c.next_fire ? `next ${when(c.next_fire)} (${ago(c.next_fire)})` : "never fires again")))),
      h("td", {}, a.queued.length ? a.queued.map((q) => h("div", {}, h("code", {}, q.key), `: ${q.runs}`)) : h("span", { class: "muted" }, "none")))));
    if (!agents.agents.length) agentsBody.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No agent registered yet: start a worker.")));
    workersBody.replaceChildren(...workers.workers.map((w) => h("tr", { dataset: { worker: w.id } },
      h("td", { class: "mono" }, w.id), h("td", {}, w.host), h("td", {}, String(w.pid)),
      h("td", {}, w.agents.join(", ") || h("span", { class: "muted" }, "not known here")),
      h("td", {}, w.runs.length ? w.runs.map((id) => h("div", {}, runLink(id))) : h("span", { class: "muted idle" }, w.polling_here ? "none: idle, waiting for runs" : "none")),
      h("td", {}, w.projections.join(", ") || h("span", { class: "muted" }, "none")))));
    if (!workers.workers.length) workersBody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No worker holds anything or asks this server for runs right now.")));
  }
  await refresh();
  return { refresh };
}

// -- memory ----------------------------------------------------------------------------------

async function memoryPage(params) {
  const chosen = params.get("projection");
  const stream = params.get("stream");
  const projBody = h("tbody", { id: "projections-body" });
  const streamsBody = h("tbody", { id: "streams-body" });
  const detail = h("div", { id: "memory-detail" });
  $main.replaceChildren(h("h1", {}, "Memory"),
    h("h2", {}, "Projections"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Projection", "Events", "Position", "Lag", "Runner", "Updated", ""].map((t) => h("th", {}, t)))), projBody),
    detail,
    h("h2", {}, "Entity streams"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Stream", "Version"].map((t) => h("th", {}, t)))), streamsBody));
  async function refresh() {
    const [projections, streams] = await Promise.all([api("/ui/api/projections"), api("/ui/api/streams")]);
    projBody.replaceChildren(...projections.projections.map((p) => h("tr", { dataset: { projection: p.name } },
      h("td", {}, h("a", { href: `#/memory?projection=${encodeURIComponent(p.name)}` }, p.name), p.partitioned ? h("span", { class: "muted" }, " (partitioned)") : null),
      h("td", { class: "mono" }, p.events.join(", ")),
      h("td", {}, String(p.position)),
      h("td", { class: "lag" }, p.lag ? `${p.lag} behind the log` : "caught up"),
      h("td", {}, p.runner_alive ? h("span", { class: "mono" }, p.runner) : h("span", { class: "muted" }, "no live runner")),
      h("td", {}, ago(p.updated_at), p.rebuild_pending ? h("div", { class: "badge waiting" }, "rebuild pending") : null),
      h("td", {}, h("button", { class: "secondary rebuild", onclick: () => confirmed("Rebuild", `Rebuild ${p.name} from the log (ironflow projection rebuild)? Its runner folds every event again into fresh state.`, () => act(`/ui/api/projections/${encodeURIComponent(p.name)}/rebuild`), { ok: "Rebuild" }) }, "Rebuild…")))));
    if (!projections.projections.length) projBody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No projection registered.")));
    streamsBody.replaceChildren(...streams.streams.map((s) => h("tr", {},
      h("td", {}, h("a", { href: `#/memory?stream=${encodeURIComponent(s.id)}`, class: "mono" }, s.id)), h("td", {}, String(s.version)))));
    if (!streams.streams.length) streamsBody.append(h("tr", {}, h("td", { colspan: 2, class: "muted" }, "No entity stream yet.")));
    if (chosen) {
      const p = await api(`/ui/api/projections/${encodeURIComponent(chosen)}`);
      detail.replaceChildren(h("div", { class: "card" }, h("h2", {}, `State of ${p.name} at position ${p.state.position}`), json(p.state.state, 2)));
    } else if (stream) {
      const s = await api(`/ui/api/streams/${encodeURIComponent(stream)}`);
      detail.replaceChildren(h("div", { class: "card" }, h("h2", {}, `Stream ${s.stream}`),
        h("table", {}, h("thead", {}, h("tr", {}, ["Version", "Name", "Data", "Log position", "At"].map((t) => h("th", {}, t)))),
          h("tbody", {}, s.events.map((e) => h("tr", {}, h("td", {}, String(e.version)), h("td", { class: "mono" }, e.name), h("td", {}, json(e.data, 1)), h("td", {}, String(e.seq)), h("td", {}, when(e.ts))))))));
    }
  }
  await refresh();
  return { refresh };
}

// -- routing ---------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  current = null;
  try {
    if (parts[0] === "runs" && parts[1]) { document.title = `Run ${parts[1]} — Ironflow`; current = await runPage(parts[1]); }
    else if (parts[0] === "events") { document.title = "Events — Ironflow"; current = await eventsPage(params); }
    else if (parts[0] === "agents") { document.title = "Agents — Ironflow"; current = await agentsPage(); }
    else if (parts[0] === "memory") { document.title = "Memory — Ironflow"; current = await memoryPage(params); }
    else { document.title = "Runs — Ironflow"; current = await runsPage(params); }
  } catch (err) {
    $main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "flash bad" }, err.message), h("a", { href: "#/runs" }, "Back to the runs"));
  }
  document.body.dataset.ready = "1";
}

async function main() {
  session = await api("/ui/api/session");
  if (!session.dev) document.getElementById("logout").hidden = false;
  window.addEventListener("hashchange", route);
  await route();
  startLive();
}

main();
