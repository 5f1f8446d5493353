// failsoft status page: reads the State like any other client and draws it. No framework, no build step.
//
// Live: an EventSource on service-level/events gives each change at once (a fresh snapshot on every connection);
// a small poll of service-level every POLL_MS adds what the stream does not carry (latencies for the
// sparklines, last_error) and notices a dead connection. When the daemon goes away the page says
// "disconnected", retries with backoff, and on the next snapshot notices a new boot (a restarted daemon).
//
// Every piece of State text is attacker-influenced (reasons, last_error come from remote servers): it only ever
// reaches the page through textContent or attributes, never as markup.
'use strict';

(() => {
  const POLL_MS = 2000;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 5000;
  const SPARK_POINTS = 60; // two minutes of samples at POLL_MS
  const SPARK_MIN_SLOTS = 15;
  const TIMELINE_MAX = 60;
  const HISTORY_LIMIT = 50;
  const EVENT_TYPES = ['level_changed', 'dependency_changed', 'llm_failover', 'override_set', 'override_cleared',
    'resync'];
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const DEP_SEVERITY = new Map([['healthy', 'ok'], ['degraded', 'warn'], ['down', 'critical']]);
  const depSeverity = (state) => DEP_SEVERITY.get(state) || 'unknown'; // a Map: no prototype keys to trip on

  const page = {
    state: null, // the newest State accepted
    boot: null, // its boot
    source: null, // the open EventSource
    live: false,
    retryMs: RETRY_MIN_MS,
    retryAt: 0,
    retryTimer: 0,
    pollTimer: 0,
    polling: false,
    spark: new Map(), // dependency -> recent latencies (null where there was none)
    events: [], // timeline entries, oldest first
    seen: new Set(), // "<boot>/<seq>" of the events shown
    demo: false,
    historyFor: '', // "<boot>/<seq>" of the last State that made the poll fetch /history
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function str(value, fallback = '') {
    return typeof value === 'string' ? value : (value === null || value === undefined ? fallback : String(value));
  }

  // -- time ----------------------------------------------------------------------------------------------

  function parseTime(iso) {
    if (typeof iso !== 'string') return null;
    const t = Date.parse(iso);
    return Number.isFinite(t) ? t : null;
  }

  function duration(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s}s`;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  }

  // Elements whose text counts: data-until (a countdown) and data-since (time elapsed). One timer updates all.
  function tick() {
    const now = Date.now();
    for (const node of document.querySelectorAll('[data-until]')) {
      const t = parseTime(node.dataset.until);
      if (t === null) continue;
      const left = t - now;
      node.textContent = left > 500 ? `${node.dataset.prefix || 'in'} ${duration(left)}` : (node.dataset.done || 'now');
    }
    for (const node of document.querySelectorAll('[data-since]')) {
      const t = parseTime(node.dataset.since);
      if (t !== null) node.textContent = `${node.dataset.prefix ?? 'for'} ${duration(now - t)}`.trim();
    }
    if (!page.live && page.retryAt) {
      const left = Math.max(0, page.retryAt - now);
      $('conn-text').textContent = left > 400 ? `disconnected · retrying in ${duration(left)}` : 'disconnected · retrying';
    }
  }

  // -- severity ------------------------------------------------------------------------------------------

  // The level's position in the State's `levels` list (best first) picks its colour.
  function severity(level, levels) {
    const i = Array.isArray(levels) ? levels.indexOf(level) : -1;
    if (i < 0) return 'unknown';
    if (i === 0) return 'ok';
    const r = i / Math.max(1, levels.length - 1);
    if (r <= 0.34) return 'warn';
    if (r <= 0.67) return 'bad';
    return 'critical';
  }

  // -- the State -----------------------------------------------------------------------------------------

  function accept(state) {
    if (!state || typeof state !== 'object' || typeof state.level !== 'string') return;
    const old = page.state;
    if (old && old.boot === state.boot) {
      if (state.seq < old.seq) return; // an answer that left the daemon before the one we have
      if (state.seq === old.seq && str(state.updated_at) < str(old.updated_at)) return;
    }
    if (page.boot !== null && state.boot !== page.boot) restarted(page.boot, state.boot);
    page.boot = state.boot;
    if (!old || old.updated_at !== state.updated_at) sample(state);
    page.state = state;
    render(state);
  }

  function restarted(before, after) {
    showBanner(`The daemon restarted (boot ${str(before)} → ${str(after)}). Showing the new process.`);
    addEvent({ type: 'restart', boot: after, seq: 0, at: new Date().toISOString(), previous_boot: before });
    renderTimeline();
  }

  function sample(state) {
    const deps = state.dependencies && typeof state.dependencies === 'object' ? state.dependencies : {};
    for (const [name, dep] of Object.entries(deps)) {
      const list = page.spark.get(name) || [];
      const v = dep && Number(dep.latency_ms);
      list.push(dep && dep.latency_ms !== null && Number.isFinite(v) ? v : null);
      while (list.length > SPARK_POINTS) list.shift();
      page.spark.set(name, list);
    }
  }

  function render(s) {
    const levels = Array.isArray(s.levels) ? s.levels : [];
    const sev = severity(s.level, levels);
    const service = str(s.service);
    document.title = `${s.level} · ${service} · failsoft`;
    document.documentElement.dataset.severity = sev;
    $('service').textContent = service;
    $('level-card').dataset.severity = sev;
    $('level').textContent = s.level;
    setSince($('level-since'), s.since, 'for');
    $('starting').hidden = s.starting !== true;

    const ladder = $('ladder');
    ladder.replaceChildren(...levels.map((name) => {
      const rung = el('li', 'rung', name);
      rung.dataset.severity = severity(name, levels);
      if (name === s.level) {
        rung.classList.add('current');
        rung.setAttribute('aria-current', 'true');
      }
      return rung;
    }));

    const message = $('message');
    message.hidden = !s.message;
    message.textContent = str(s.message);
    $('reason').textContent = s.reason ? str(s.reason) : (s.level === 'unknown' ? 'waiting for the first probes' : 'all dependencies healthy');

    const caps = $('capabilities');
    if (Array.isArray(s.capabilities)) {
      caps.replaceChildren(...(s.capabilities.length ? s.capabilities.map((c) => el('li', 'chip', c))
        : [el('li', 'chip none', 'none')]));
    } else {
      caps.replaceChildren(el('li', 'chip none', 'not configured'));
    }
    $('active-llm').textContent = s.active_llm ? str(s.active_llm) : 'none';

    const ov = s.override && typeof s.override === 'object' ? s.override : null;
    $('override').hidden = !ov;
    if (ov) {
      $('override-text').textContent = `${str(ov.level)}: ${str(ov.reason)}`;
      const until = $('override-until');
      until.dataset.until = str(ov.until);
      until.dataset.prefix = 'ends in';
      until.dataset.done = 'ending';
      until.title = str(ov.until);
    }

    renderDependencies(s.dependencies && typeof s.dependencies === 'object' ? s.dependencies : {});
    $('boot').textContent = str(s.boot, '-');
    $('seq').textContent = str(s.seq, '-');
    const updated = parseTime(s.updated_at);
    $('updated').textContent = updated === null ? '-' : clock(updated);
    tick();
  }

  function setSince(node, iso, prefix) {
    if (parseTime(iso) === null) {
      delete node.dataset.since;
      node.textContent = '';
      return;
    }
    node.dataset.since = iso;
    node.dataset.prefix = prefix;
    node.title = `since ${iso}`;
  }

  function renderDependencies(deps) {
    const names = Object.keys(deps);
    const grid = $('deps');
    grid.replaceChildren(...names.map((name) => card(name, deps[name] || {})));
    if (!names.length) grid.replaceChildren(el('p', 'empty', 'No dependencies configured.'));
  }

  function card(name, dep) {
    const state = str(dep.state, 'unknown');
    const node = el('article', 'dep');
    node.dataset.dependency = name;
    node.dataset.severity = depSeverity(state);

    const head = el('header', 'dep-head');
    const title = el('div', 'dep-title');
    title.append(el('span', 'dep-name', name), el('span', 'dep-kind', str(dep.kind)));
    const pill = el('span', 'pill', state);
    pill.dataset.field = 'state';
    head.append(title, pill);

    const lat = el('div', 'dep-latency');
    const v = Number(dep.latency_ms);
    const value = el('span', 'latency-value', dep.latency_ms === null || !Number.isFinite(v) ? '—'
      : (v < 10 ? v.toFixed(1) : Math.round(v).toString()));
    value.dataset.field = 'latency';
    const unit = el('span', 'latency-unit', dep.latency_ms === null || !Number.isFinite(v) ? '' : 'ms');
    const figure = el('div', 'latency-figure');
    figure.append(value, unit);
    lat.append(figure, sparkline(page.spark.get(name) || []));

    const facts = el('dl', 'dep-facts');
    const fact = (label, text, field) => {
      const dt = el('dt', '', label);
      const dd = el('dd', '', text);
      if (field) dd.dataset.field = field;
      facts.append(dt, dd);
      return dd;
    };
    const breaker = fact('breaker', str(dep.breaker, 'unknown'), 'breaker');
    breaker.dataset.breaker = str(dep.breaker);
    fact('failures', str(dep.consecutive_failures, '0'));
    setSince(fact('in state', ''), dep.since, '');
    if (dep.prober !== undefined && dep.prober !== null) fact('prober', str(dep.prober), 'prober');
    if (dep.starting === true) fact('starting', 'in startup grace', 'starting');

    node.append(head, lat, facts);
    if (dep.reason) node.append(el('p', 'dep-reason', str(dep.reason)));
    if (dep.last_error) {
      const err = el('p', 'dep-error', str(dep.last_error));
      err.title = str(dep.last_error);
      err.dataset.field = 'last_error';
      node.append(err);
    }
    if (parseTime(dep.retry_at) !== null) {
      const retry = el('p', 'dep-retry');
      retry.dataset.until = dep.retry_at;
      retry.dataset.prefix = 'next call in';
      retry.dataset.done = 'retrying now';
      retry.dataset.field = 'retry_at';
      retry.title = `retry_at ${dep.retry_at}`;
      node.append(retry);
    }
    return node;
  }

  function sparkline(samples) {
    const w = 120;
    const h = 32;
    const pad = 3;
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.setAttribute('class', 'spark');
    svg.setAttribute('aria-hidden', 'true');
    const values = samples.filter((x) => x !== null);
    if (values.length < 2) return svg;
    const max = Math.max(...values) * 1.15 || 1;
    // The line fills the width once SPARK_MIN_SLOTS samples are in, and is squeezed as more arrive.
    const slots = Math.max(samples.length, SPARK_MIN_SLOTS);
    const step = w / (slots - 1);
    const offset = slots - samples.length; // the newest sample sits at the right edge
    let d = '';
    let area = '';
    let run = [];
    const flush = () => {
      if (run.length > 1) area += `M${run[0][0]} ${h}L${run.map((p) => p.join(' ')).join('L')}L${run[run.length - 1][0]} ${h}Z`;
      run = [];
    };
    samples.forEach((v, i) => {
      if (v === null) { flush(); return; }
      const p = [((offset + i) * step).toFixed(1), (h - pad - (v / max) * (h - 2 * pad)).toFixed(1)];
      d += `${run.length ? 'L' : 'M'}${p[0]} ${p[1]}`;
      run.push(p);
    });
    flush();
    const fill = document.createElementNS(SVG_NS, 'path');
    fill.setAttribute('d', values.length >= 5 ? area : ''); // a few samples make a sliver, not a shape
    fill.setAttribute('class', 'spark-area');
    const line = document.createElementNS(SVG_NS, 'path');
    line.setAttribute('d', d);
    line.setAttribute('class', 'spark-line');
    svg.append(fill, line);
    const title = document.createElementNS(SVG_NS, 'title');
    title.textContent = `last ${values.length} samples: ${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)} ms`;
    svg.append(title);
    return svg;
  }

  // -- the timeline --------------------------------------------------------------------------------------

  function addEvent(ev) {
    if (!ev || typeof ev !== 'object' || typeof ev.type !== 'string') return false;
    const key = eventKey(ev);
    if (page.seen.has(key)) return false;
    page.seen.add(key);
    page.events.push(ev);
    // History arrives in batches after live events; keep each boot's events in order, boots in arrival order.
    const bootOrder = new Map();
    page.events.forEach((e, i) => { if (!bootOrder.has(e.boot)) bootOrder.set(e.boot, i); });
    page.events.sort((a, b) => (bootOrder.get(a.boot) - bootOrder.get(b.boot))
      || ((a.type === 'restart' ? -1 : a.seq) - (b.type === 'restart' ? -1 : b.seq)));
    while (page.events.length > TIMELINE_MAX) page.seen.delete(eventKey(page.events.shift()));
    return true;
  }

  function eventKey(ev) {
    return ev.type === 'restart' ? `restart/${str(ev.boot)}` : `${str(ev.boot)}/${str(ev.seq)}`;
  }

  function describe(ev) {
    const arrow = (a, b) => `${str(a, 'none')} → ${str(b, 'none')}`;
    switch (ev.type) {
      case 'level_changed':
        return [`level ${arrow(ev.previous, ev.level)}`, ev.reason];
      case 'dependency_changed': {
        const what = ev.previous === ev.state ? `${str(ev.dependency)} still ${str(ev.state)}`
          : `${str(ev.dependency)} ${arrow(ev.previous, ev.state)}`;
        return [what, [ev.reason, ev.breaker && `breaker ${ev.breaker}`].filter(Boolean).join(' · ')];
      }
      case 'llm_failover':
        return [`active LLM ${arrow(ev.previous, ev.active_llm)}`, ev.reason];
      case 'override_set': {
        const until = parseTime(ev.until);
        return [`override: ${str(ev.level)}${until === null ? '' : ` until ${clock(until)}`}`, ev.reason];
      }
      case 'override_cleared':
        return [`override of ${str(ev.level)} ended`, ev.reason];
      case 'resync':
        return ['Redis publication resynced', null];
      case 'restart':
        return ['daemon restarted', `new boot ${str(ev.boot)} (was ${str(ev.previous_boot)})`];
      default:
        return [ev.type.replace(/_/g, ' '), ev.reason];
    }
  }

  function renderTimeline() {
    const list = $('timeline');
    const levels = page.state && Array.isArray(page.state.levels) ? page.state.levels : [];
    const items = page.events.slice().reverse().map((ev) => {
      const li = el('li', 'event');
      li.dataset.type = ev.type;
      if (ev.type === 'level_changed') li.dataset.severity = severity(ev.level, levels);
      else if (ev.type === 'dependency_changed') li.dataset.severity = depSeverity(ev.state);
      else if (ev.type === 'restart') li.dataset.severity = 'unknown';
      const at = parseTime(ev.at);
      const time = el('time', 'event-time', at === null ? '' : clock(at));
      if (at !== null) time.dateTime = ev.at;
      const body = el('div', 'event-body');
      const [what, why] = describe(ev);
      body.append(el('span', 'event-what', what));
      if (why) body.append(el('span', 'event-why', str(why)));
      li.append(el('span', 'event-dot'), time, body);
      return li;
    });
    list.replaceChildren(...items);
    $('timeline-empty').hidden = items.length > 0;
  }

  // -- the connection ------------------------------------------------------------------------------------

  async function getJSON(path, init) {
    const res = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' }, ...init });
    const type = res.headers.get('Content-Type') || '';
    const body = type.includes('json') ? await res.json() : null;
    return { status: res.status, body };
  }

  function setConn(kind, text) {
    const conn = $('conn');
    conn.dataset.state = kind;
    $('conn-text').textContent = text || kind;
    document.body.classList.toggle('stale', kind === 'disconnected');
  }

  // kind 'disconnected' stays until the stream is back; other notices fade after a while.
  function showBanner(text, kind = 'notice') {
    const banner = $('banner');
    banner.textContent = text;
    banner.dataset.kind = kind;
    banner.hidden = false;
    clearTimeout(showBanner.timer);
    if (kind !== 'disconnected') showBanner.timer = setTimeout(() => { banner.hidden = true; }, 15000);
  }

  function hideBanner(kind) {
    const banner = $('banner');
    if (banner.dataset.kind === kind) banner.hidden = true;
  }

  function connect() {
    clearTimeout(page.retryTimer);
    page.retryAt = 0;
    if (page.source) page.source.close();
    if (!page.live) setConn('connecting', page.state ? 'reconnecting' : 'connecting');
    const source = new EventSource('service-level/events');
    page.source = source;
    const mine = (fn) => (msg) => {
      if (page.source !== source) return;
      let data = null;
      try { data = JSON.parse(msg.data); } catch { return; }
      fn(data);
    };
    source.addEventListener('snapshot', mine((state) => {
      opened();
      accept(state);
      loadHistory();
    }));
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, mine((ev) => {
        if (addEvent(ev)) renderTimeline();
        refresh(); // events carry the change; the State carries everything around it
      }));
    }
    source.onerror = () => {
      if (page.source !== source) return;
      lost();
    };
  }

  function opened() {
    page.retryMs = RETRY_MIN_MS;
    if (!page.live) {
      page.live = true;
      hideBanner('disconnected');
      setConn('live', 'live');
      clearInterval(page.pollTimer);
      page.pollTimer = setInterval(refresh, POLL_MS);
    }
  }

  // The stream broke (daemon stopped, restarted, network): close it ourselves and reconnect with backoff. A new
  // EventSource carries no Last-Event-ID, so the daemon always starts it with a fresh snapshot.
  function lost() {
    if (page.source) page.source.close();
    page.source = null;
    page.live = false;
    clearInterval(page.pollTimer);
    clearTimeout(page.retryTimer);
    page.retryAt = Date.now() + page.retryMs;
    page.retryTimer = setTimeout(connect, page.retryMs);
    page.retryMs = Math.min(page.retryMs * 2, RETRY_MAX_MS);
    setConn('disconnected', 'disconnected');
    const updated = page.state ? parseTime(page.state.updated_at) : null;
    showBanner(updated === null ? 'Cannot reach the daemon.'
      : `Cannot reach the daemon: showing the last state it published, at ${clock(updated)}.`, 'disconnected');
    tick();
  }

  async function refresh() {
    if (page.polling || !page.live) return;
    page.polling = true;
    try {
      const { body } = await getJSON('service-level');
      if (body && typeof body.level === 'string') {
        if (page.boot !== null && body.boot !== page.boot) {
          connect(); // a new process behind the same address: start over from its snapshot
          return;
        }
        accept(body);
        // An event of a type this page does not listen for (a newer daemon's) still moved the seq: fetch it.
        const key = `${str(body.boot)}/${str(body.seq)}`;
        if (body.seq > lastEventSeq(body.boot) && page.historyFor !== key) {
          page.historyFor = key; // once per State: a seq that moved without an event must not refetch forever
          loadHistory();
        }
      }
    } catch {
      if (page.live) lost();
    } finally {
      page.polling = false;
    }
  }

  function lastEventSeq(boot) {
    let seq = 0;
    for (const ev of page.events) if (ev.boot === boot && ev.type !== 'restart' && ev.seq > seq) seq = ev.seq;
    return seq;
  }

  async function loadHistory() {
    try {
      const { status, body } = await getJSON(`history?limit=${HISTORY_LIMIT}`);
      if (status !== 200 || !Array.isArray(body)) return;
      let changed = false;
      for (const ev of body) changed = addEvent(ev) || changed;
      if (changed || !page.events.length) renderTimeline();
    } catch {
      // the stream's error handler reports the lost connection; history comes again on the next snapshot
    }
  }

  // -- demo mode: only when `failsoft demo` registered its routes ----------------------------------------

  async function setupDemo() {
    try {
      const { body } = await getJSON('status-page.json');
      if (!body || body.demo !== true) return;
      page.demo = true;
      const { status, body: faults } = await getJSON('_demo');
      if (status === 200) renderDemo(faults);
    } catch {
      // not reachable yet: the page works without the buttons
    }
  }

  function renderDemo(answer) {
    const faults = answer && Array.isArray(answer.faults) ? answer.faults : [];
    $('demo').hidden = faults.length === 0;
    $('demo-buttons').replaceChildren(...faults.map((f) => {
      const button = el('button', 'demo-button');
      button.type = 'button';
      button.dataset.fault = str(f.name);
      button.dataset.active = f.active ? 'true' : 'false';
      button.append(el('span', 'demo-action', str(f.action)), el('span', 'demo-effect', str(f.effect)));
      button.addEventListener('click', () => trigger(str(f.name), button));
      return button;
    }));
  }

  async function trigger(name, button) {
    for (const b of document.querySelectorAll('.demo-button')) b.disabled = true;
    button.classList.add('busy');
    $('demo-result').textContent = '…';
    try {
      const { status, body } = await getJSON(`_demo/${encodeURIComponent(name)}`, {
        method: 'POST', headers: { Accept: 'application/json', 'X-Failsoft-Demo': '1' },
      });
      if (status === 200 && body) {
        $('demo-result').textContent = str(body.message);
        renderDemo(body);
      } else {
        $('demo-result').textContent = body && body.error ? str(body.error.message) : `failed (${status})`;
      }
    } catch {
      $('demo-result').textContent = 'the daemon did not answer';
    } finally {
      for (const b of document.querySelectorAll('.demo-button')) b.disabled = false;
      button.classList.remove('busy');
      refresh();
    }
  }

  function start() {
    setInterval(tick, 1000);
    connect();
    setupDemo();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
