// The operator console: login, the live queue, escalation detail, supervisor
// roll-ups. Every action is checked again by the server; this page only
// decides what to show.

import { api, ApiError, login, logout, setAuthLostHandler, hasCsrf, forgetSession } from './api.js';
import { t, getLang, setLang, applyStatic } from './i18n.js';
import { h, clear, duration, localTime } from './dom.js';
import { highlighted } from './highlight.js';
import { talkPanel, tickTalk } from './talk.js';

const MAX_NOTE = 4000;
const LEVELS = ['emergency', 'urgent', 'watch'];
const STATUSES = ['open', 'claimed', 'resolved'];
const OUTCOMES = ['called_back', 'contacted_family', 'dispatched_emergency_services', 'welfare_visit', 'no_action', 'false_alarm'];
const LEVEL_MARK = { emergency: '‼', urgent: '!', watch: '•', ok: '✓' };

const state = {
  me: null,
  items: [],
  selected: null, // escalation id selected in the queue
  skewMs: 0, // server clock minus local clock
  filters: loadFilters(),
  detail: null, // last loaded escalation detail
  leases: new Map(), // id -> {expires: ms, length: ms}
  alerted: new Set(), // emergency ids already announced
  sent: new Set(), // ids resolved from this page: their drafts must not come back
  events: null,
  live: false,
  authLost: false,
  view: null,
};

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + state.skewMs;

// ───────────────────────── start-up ─────────────────────────

window.addEventListener('DOMContentLoaded', start);

async function start() {
  setLang(getLang());
  $('lang').value = getLang();
  $('lang').addEventListener('change', (e) => {
    setLang(e.target.value);
    renderChrome();
    render();
  });
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('sound').addEventListener('click', toggleSound);
  document.addEventListener('keydown', onKey);
  document.addEventListener('click', resumeAudio, { capture: true });
  window.addEventListener('hashchange', render);
  setAuthLostHandler(authLost);
  renderSound();
  setInterval(tick, 1000);
  setInterval(renewLeases, 5000);
  setInterval(() => state.me && !state.authLost && refreshQueue(), 15000);
  setInterval(() => state.me && !state.authLost && beepIfWaiting(), 15000);

  if (hasCsrf()) {
    try {
      const me = await api('GET', '/api/v1/me');
      await loggedIn(me.operator);
      return;
    } catch {
      // fall through to the login form
    }
  }
  showLogin(false);
}

// ───────────────────────── session ─────────────────────────

function showLogin(expired) {
  const box = $('login');
  box.hidden = false;
  $('login-why').hidden = !expired;
  $('login-why').textContent = expired ? t('login.expired') : '';
  $('login-error').hidden = true;
  $('login-pass').value = '';
  // Keep the page underneath (and anything typed in it) as it is.
  $('view').setAttribute('aria-hidden', 'true');
  $('view').inert = true;
  if (state.me) $('login-user').value = state.me.username;
  ($('login-user').value ? $('login-pass') : $('login-user')).focus();
}

function hideLogin() {
  $('login').hidden = true;
  $('view').removeAttribute('aria-hidden');
  $('view').inert = false;
}

function authLost() {
  if (state.authLost) return;
  state.authLost = true;
  saveDraftNow();
  closeEvents();
  forgetSession();
  showLogin(true);
}

async function onLogin(ev) {
  ev.preventDefault();
  const user = $('login-user').value.trim();
  const pass = $('login-pass').value;
  $('login-submit').disabled = true;
  try {
    const op = await login(user, pass);
    // A different person logging in on this page starts clean.
    if (state.me && state.me.id !== op.id) {
      state.leases.clear();
      location.hash = '#/queue';
    }
    await loggedIn(op);
  } catch (e) {
    $('login-error').hidden = false;
    $('login-error').textContent = t('login.failed', e.message);
  } finally {
    $('login-submit').disabled = false;
  }
}

async function loggedIn(op) {
  state.me = op;
  state.authLost = false;
  hideLogin();
  renderChrome();
  openEvents();
  await refreshQueue();
  render();
}

async function onLogout() {
  try {
    await logout();
  } catch {
    // the session is gone either way
  }
  closeEvents();
  state.me = null;
  state.items = [];
  state.leases.clear();
  renderChrome();
  clear($('view'));
  showLogin(false);
}

function renderChrome() {
  const me = state.me;
  $('nav').hidden = !me;
  $('logout').hidden = !me;
  $('whoami').textContent = me ? `${me.display_name} (${me.role})` : '';
  $('nav-supervisor').hidden = !(me && (me.role === 'supervisor' || me.role === 'admin'));
  renderSound();
}

// ───────────────────────── live events ─────────────────────────

let refetchTimer = null;

function openEvents() {
  closeEvents();
  const es = new EventSource('/api/v1/events');
  state.events = es;
  es.addEventListener('open', () => setLive(true));
  es.addEventListener('escalation', () => scheduleRefetch());
  es.addEventListener('error', async () => {
    setLive(false);
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream: find out whether the session ended.
      try {
        await api('GET', '/api/v1/me');
        setTimeout(() => state.events === es && openEvents(), 2000);
      } catch {
        // authLost() has been called by api() if the session is gone
      }
    }
  });
}

function closeEvents() {
  if (state.events) state.events.close();
  state.events = null;
  setLive(false);
}

function setLive(on) {
  state.live = on;
  const el = document.querySelector('.live');
  if (el) {
    el.textContent = on ? t('queue.live') : t('queue.offline');
    el.classList.toggle('off', !on);
  }
  if (on) scheduleRefetch();
}

function scheduleRefetch() {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(async () => {
    await refreshQueue();
    if (state.view === 'detail' && state.detail) refreshDetail();
  }, 50);
}

// ───────────────────────── queue ─────────────────────────

function loadFilters() {
  try {
    const f = JSON.parse(localStorage.getItem('vc.filters'));
    if (f && Array.isArray(f.levels) && Array.isArray(f.statuses)) return f;
  } catch {
    // defaults below
  }
  return { levels: [...LEVELS], statuses: ['open', 'claimed'] };
}

function queuePath() {
  const p = new URLSearchParams();
  const f = state.filters;
  if (f.levels.length && f.levels.length < LEVELS.length) f.levels.forEach((l) => p.append('level', l));
  (f.statuses.length ? f.statuses : ['open', 'claimed']).forEach((s) => p.append('status', s));
  return `/api/v1/queue?${p}`;
}

async function refreshQueue() {
  if (!state.me) return;
  try {
    const data = await api('GET', queuePath());
    state.skewMs = new Date(data.server_time).getTime() - Date.now();
    state.items = data.items;
    for (const it of data.items) {
      if (it.status === 'claimed' && it.claimed_by === state.me.id) trackLease(it);
    }
    alarm();
    if (state.view === 'queue') renderQueueRows();
  } catch (e) {
    if (!(e instanceof ApiError) || e.code === 'network') toast(t('err.network'));
  }
}

function renderQueue(view) {
  const f = state.filters;
  const filterBox = (title, values, key, label) =>
    h('fieldset', { class: 'filter' }, h('legend', {}, title),
      values.map((v) => h('label', { class: `chk lvl-${v}` },
        h('input', {
          type: 'checkbox', name: key, value: v, checked: f[key].includes(v),
          onchange: (e) => {
            const set = new Set(f[key]);
            e.target.checked ? set.add(v) : set.delete(v);
            f[key] = values.filter((x) => set.has(x));
            localStorage.setItem('vc.filters', JSON.stringify(f));
            refreshQueue();
          },
        }), label(v))));
  view.append(
    h('div', { class: 'bar' },
      h('h1', {}, t('queue.title')),
      h('span', { class: `live${state.live ? '' : ' off'}`, role: 'status' }, state.live ? t('queue.live') : t('queue.offline')),
      filterBox(t('queue.levels'), LEVELS, 'levels', (l) => t(`level.${l}`)),
      filterBox(t('queue.statuses'), STATUSES, 'statuses', (s) => t(`status.${s}`)),
      h('button', { type: 'button', class: 'primary', id: 'claim-next', onclick: claimNext }, t('queue.claimNext'))),
    h('table', { class: 'queue', id: 'queue' },
      h('thead', {}, h('tr', {},
        ['col.level', 'col.elder', 'col.community', 'col.reason', 'col.waiting', 'col.sla', 'col.holder', 'col.action']
          .map((k) => h('th', { scope: 'col' }, t(k))))),
      h('tbody', { id: 'queue-body' })),
    h('p', { class: 'empty', id: 'queue-empty', hidden: true }, t('queue.empty')));
  renderQueueRows();
}

function levelBadge(level, big) {
  return h('span', { class: `badge lvl-${level}${big ? ' big' : ''}` },
    h('span', { class: 'mark', 'aria-hidden': 'true' }, LEVEL_MARK[level] || ''), ' ', t(`level.${level}`));
}

function firstEvidence(it) {
  const r = (Array.isArray(it.reasons) ? it.reasons : [])[0];
  const cats = (it.categories || []).join(', ');
  if (r && r.evidence) return `${cats}: “${r.evidence}”`;
  return cats;
}

function renderQueueRows() {
  const body = $('queue-body');
  if (!body) return;
  clear(body);
  const items = state.items;
  if (state.selected && !items.some((i) => i.id === state.selected)) state.selected = null;
  for (const it of items) {
    const mine = it.claimed_by === state.me.id;
    const tr = h('tr', {
      class: `row lvl-${it.level} st-${it.status}${state.selected === it.id ? ' selected' : ''}`,
      dataset: { id: String(it.id) },
      tabindex: '-1',
      'aria-selected': state.selected === it.id ? 'true' : 'false',
      onclick: (e) => {
        if (e.target.closest('button')) return;
        select(it.id);
      },
      ondblclick: () => openItem(it.id),
    },
    h('td', {}, levelBadge(it.level)),
    h('td', { class: 'elder' }, h('a', { href: `#/e/${it.id}` }, it.elder_name),
      it.elder_on_line && !it.elder_left_at ? h('span', { class: 'online' }, ' ☎ ', t('detail.onLine')) : null),
    h('td', {}, it.community),
    h('td', { class: 'why' }, firstEvidence(it)),
    h('td', { class: 'age', dataset: { since: it.created_at } }, ''),
    h('td', { class: 'sla', dataset: slaData(it) }, ''),
    h('td', { class: 'holder' }, it.status === 'claimed' ? (mine ? `${it.claimed_by_name} ✓` : it.claimed_by_name) : t(`status.${it.status}`)),
    h('td', {},
      it.status === 'open'
        ? h('button', { type: 'button', class: 'claim', onclick: () => claim(it.id) }, t('action.claim'))
        : h('button', { type: 'button', class: 'open', onclick: () => openItem(it.id) }, t('action.open'))));
    body.append(tr);
  }
  $('queue-empty').hidden = items.length > 0;
  tick();
}

function slaData(it) {
  return { deadline: it.sla_deadline, first: it.first_claimed_at || '', status: it.status };
}

function select(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll('#queue-body tr')) {
    const on = tr.dataset.id === String(id);
    tr.classList.toggle('selected', on);
    tr.setAttribute('aria-selected', on ? 'true' : 'false');
    if (on) tr.focus({ preventScroll: false });
  }
}

function moveSelection(delta) {
  const ids = state.items.map((i) => i.id);
  if (!ids.length) return;
  const at = ids.indexOf(state.selected);
  const next = at < 0 ? 0 : Math.min(ids.length - 1, Math.max(0, at + delta));
  select(ids[next]);
}

function openItem(id) {
  location.hash = `#/e/${id}`;
}

// ───────────────────────── SLA clocks ─────────────────────────

function slaText(el) {
  const deadline = new Date(el.dataset.deadline).getTime();
  const first = el.dataset.first ? new Date(el.dataset.first).getTime() : null;
  if (first !== null) {
    return first <= deadline ? [t('sla.met'), false] : [t('sla.late'), true];
  }
  const left = (deadline - now()) / 1000;
  return left >= 0 ? [t('sla.left', duration(left)), false] : [t('sla.breached', duration(-left)), true];
}

function tick() {
  for (const el of document.querySelectorAll('[data-deadline]')) {
    const [text, breached] = slaText(el);
    el.textContent = text;
    el.classList.toggle('breached', breached);
    const row = el.closest('tr');
    if (row) row.classList.toggle('breached', breached);
  }
  for (const el of document.querySelectorAll('[data-since]')) {
    el.textContent = duration((now() - new Date(el.dataset.since).getTime()) / 1000);
  }
  alarmClock();
  tickTalk();
}

// ───────────────────────── emergency alarm ─────────────────────────

function waitingEmergencies() {
  return state.items.filter((i) => i.level === 'emergency' && i.status === 'open');
}

function alarm() {
  const waiting = waitingEmergencies();
  let fresh = false;
  for (const it of waiting) {
    if (!state.alerted.has(it.id)) {
      state.alerted.add(it.id);
      fresh = true;
    }
  }
  if (fresh) beep();
  alarmClock();
}

function alarmClock() {
  const box = $('alarm');
  const waiting = state.me && !state.authLost ? waitingEmergencies() : [];
  if (!waiting.length) {
    box.hidden = true;
    clear(box);
    document.title = t('brand');
    return;
  }
  const oldest = waiting.reduce((a, b) => (a.created_at < b.created_at ? a : b));
  const age = duration((now() - new Date(oldest.created_at).getTime()) / 1000);
  const text = t(waiting.length === 1 ? 'alarm.text' : 'alarm.textMany', waiting.length, age);
  if (box.hidden || box.dataset.first !== String(oldest.id)) {
    clear(box);
    box.append(
      h('span', { class: 'mark', 'aria-hidden': 'true' }, '‼'),
      h('span', { class: 'alarm-text' }, text), ' ',
      h('button', { type: 'button', onclick: () => openItem(oldest.id) }, t('alarm.open')));
    box.dataset.first = String(oldest.id);
    box.hidden = false;
  } else {
    box.querySelector('.alarm-text').textContent = text;
  }
  document.title = `‼ ${waiting.length} · ${t('brand')}`;
}

let audioCtx = null;

function soundWanted() {
  return localStorage.getItem('vc.sound') === 'on';
}

function renderSound() {
  const b = $('sound');
  const on = soundWanted();
  b.setAttribute('aria-pressed', on ? 'true' : 'false');
  b.classList.toggle('on', on);
  b.textContent = !on ? t('sound.off') : audioCtx && audioCtx.state === 'running' ? t('sound.on') : t('sound.blocked');
}

function resumeAudio() {
  if (soundWanted()) {
    if (!audioCtx) audioCtx = new AudioContext();
    if (audioCtx.state !== 'running') audioCtx.resume().then(renderSound, () => {});
  }
}

function toggleSound() {
  const on = !soundWanted();
  localStorage.setItem('vc.sound', on ? 'on' : 'off');
  if (on) {
    resumeAudio();
    beep();
  }
  renderSound();
}

/** Two short tones; only after the operator has turned sound on (browsers block autoplay). */
function beep() {
  if (!soundWanted() || !audioCtx || audioCtx.state !== 'running') return;
  const t0 = audioCtx.currentTime;
  [[880, 0], [660, 0.28], [880, 0.56]].forEach(([f, at]) => {
    const osc = audioCtx.createOscillator();
    const gain = audioCtx.createGain();
    osc.type = 'square';
    osc.frequency.value = f;
    gain.gain.setValueAtTime(0.0001, t0 + at);
    gain.gain.exponentialRampToValueAtTime(0.25, t0 + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.25);
    osc.connect(gain).connect(audioCtx.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + 0.26);
  });
}

function beepIfWaiting() {
  if (waitingEmergencies().length) beep();
}

// ───────────────────────── claims and leases ─────────────────────────

function trackLease(e) {
  if (!e.lease_expires_at || !e.claimed_at) return;
  const expires = new Date(e.lease_expires_at).getTime();
  const length = Math.max(10000, expires - new Date(e.claimed_at).getTime());
  const known = state.leases.get(e.id);
  state.leases.set(e.id, { expires, length: known ? Math.max(known.length, length) : length });
}

async function renewLeases() {
  if (!state.me || state.authLost) return;
  for (const [id, l] of [...state.leases]) {
    // Renew once a third of the lease has passed: far ahead of expiry, even if a renewal fails once.
    if (l.expires - now() > (l.length * 2) / 3) continue;
    try {
      const r = await api('POST', `/api/v1/escalations/${id}/renew`);
      const expires = new Date(r.escalation.lease_expires_at).getTime();
      state.leases.set(id, { expires, length: Math.max(l.length, expires - now()) });
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        state.leases.delete(id);
        toast(t('detail.leaseLost', id));
        refreshQueue();
        if (state.view === 'detail') refreshDetail();
      } else if (e instanceof ApiError && e.status === 404) {
        state.leases.delete(id);
      }
    }
  }
}

async function claim(id) {
  try {
    const r = await api('POST', `/api/v1/escalations/${id}/claim`);
    trackLease(r.escalation);
    toast(t('detail.claimed'), 'ok');
    await refreshQueue();
    if (state.view === 'detail' && state.detail && state.detail.escalation.id === id) await refreshDetail();
    else openItem(id);
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) {
      await refreshQueue();
      const it = state.items.find((i) => i.id === id);
      const holder = (it && it.claimed_by_name) || (/held by (.+)$/.exec(e.message) || [])[1];
      toast(holder ? t('detail.lostRace', holder) : e.message, 'error', 'race');
      if (state.view === 'detail') refreshDetail();
    } else if (!(e instanceof ApiError && e.authLost)) {
      toast(e.message, 'error');
    }
  }
}

async function claimNext() {
  try {
    const r = await api('POST', '/api/v1/queue/claim-next');
    if (!r.escalation) {
      toast(t('queue.nothingNext'));
      return;
    }
    trackLease(r.escalation);
    await refreshQueue();
    openItem(r.escalation.id);
  } catch (e) {
    if (!(e instanceof ApiError && e.authLost)) toast(e.message, 'error');
  }
}

// ───────────────────────── drafts ─────────────────────────

const draftKey = (id) => `vc.draft.${id}`;

function loadDraft(id) {
  try {
    return JSON.parse(localStorage.getItem(draftKey(id))) || {};
  } catch {
    return {};
  }
}

function saveDraftNow() {
  const notes = $('notes');
  const outcome = $('outcome');
  if (!notes || !state.detail) return;
  const id = state.detail.escalation.id;
  if (state.sent.has(id)) {
    localStorage.removeItem(draftKey(id));
    return;
  }
  const d = { notes: notes.value, outcome: outcome ? outcome.value : '' };
  if (d.notes || d.outcome) localStorage.setItem(draftKey(id), JSON.stringify(d));
  else localStorage.removeItem(draftKey(id));
}

// ───────────────────────── detail ─────────────────────────

async function loadDetail(id) {
  const d = await api('GET', `/api/v1/escalations/${id}`);
  // A late answer about an item the operator has already left must not
  // replace the one on screen.
  const shown = /^#\/e\/(\d+)/.exec(location.hash);
  if (!shown || Number(shown[1]) === id) state.detail = d;
  if (d.escalation.status === 'claimed' && d.escalation.claimed_by === state.me.id) trackLease(d.escalation);
  else state.leases.delete(d.escalation.id);
  return d;
}

/** Re-read the open item; re-render if it changed (or `force`: a conversation ended). */
async function refreshDetail(force = false) {
  if (!state.detail) return;
  const id = state.detail.escalation.id;
  const before = state.detail.escalation.version;
  try {
    const d = await loadDetail(id);
    if ((force || d.escalation.version !== before) && state.view === 'detail' && state.detail === d) {
      saveDraftNow();
      renderDetail($('view'), d);
    }
  } catch {
    // shown by the next render
  }
}

function holderName(d) {
  const e = d.escalation;
  if (e.status !== 'claimed') return null;
  if (e.claimed_by === state.me.id) return state.me.display_name;
  const claim = [...(d.audit || [])].reverse().find((a) => a.action === 'escalation.claim' && a.actor_id === e.claimed_by);
  const it = state.items.find((i) => i.id === e.id);
  return (it && it.claimed_by_name) || (claim && claim.actor_name) || '?';
}

function section(title, ...body) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...body);
}

function field(label, value) {
  return [h('dt', {}, label), h('dd', {}, value === null || value === undefined || value === '' ? t('detail.none') : value)];
}

function renderDetail(view, d) {
  clear(view);
  const e = d.escalation;
  const el = d.elder;
  const mine = e.status === 'claimed' && e.claimed_by === state.me.id;
  const draft = loadDraft(e.id);
  const phone = el.phone;

  const statusLine =
    e.status === 'open' ? t('detail.open')
      : mine ? t('detail.heldByYou')
        : e.status === 'claimed' ? t('detail.heldBy', holderName(d))
          : t('detail.resolvedBy', (d.audit || []).filter((a) => a.action === 'escalation.resolve').map((a) => a.actor_name).pop() || '', t(`outcome.${e.outcome}`));

  const c0 = d.call;
  const head = h('div', { class: `detail-head lvl-${e.level}` },
    h('a', { href: '#/queue', class: 'back' }, t('action.back')),
    levelBadge(e.level, true),
    h('h1', {}, el.full_name, h('span', { class: 'muted' }, ` #${e.id}`)),
    h('span', { class: 'sla big', dataset: slaData(e) }, ''),
    h('p', { class: `status st-${e.status}`, id: 'status-line', role: 'status' }, statusLine),
    e.elder_on_line && c0.status === 'in_progress' ? h('p', { class: 'online' }, '☎ ', t('detail.onLine')) : null);

  const actions = h('div', { class: 'actions' },
    e.status === 'open' ? h('button', { type: 'button', class: 'primary', id: 'claim', onclick: () => claim(e.id) }, t('action.claim')) : null,
    mine ? h('button', { type: 'button', id: 'release', onclick: () => release(e.id) }, t('action.release')) : null,
    phone ? h('a', { class: 'button callback', id: 'callback', href: `tel:${phone}` }, t('action.callBack', phone)) : null);

  // Live talk from the browser: join while the elder waits on the line (on
  // this node), call back once they have left. The server checks again.
  const onLine = e.elder_on_line && c0.status === 'in_progress';
  const talk = talkPanel(e.id, {
    canJoin: mine && onLine,
    canCallBack: mine && !onLine && !!(el.device_id || el.phone),
  }, () => setTimeout(() => refreshDetail(true), 300));

  // Resolve form (or reopen for supervisors once resolved).
  let form = null;
  if (e.status !== 'resolved') {
    const counter = h('span', { id: 'notes-count' }, '');
    const tooLong = h('p', { id: 'notes-error', class: 'error', role: 'alert', hidden: true }, '');
    const notes = h('textarea', { id: 'notes', rows: '5', 'aria-describedby': 'notes-error' });
    notes.value = draft.notes || '';
    const outcome = h('select', { id: 'outcome', required: true },
      h('option', { value: '' }, t('detail.chooseOutcome')),
      OUTCOMES.map((o) => h('option', { value: o }, t(`outcome.${o}`))));
    outcome.value = draft.outcome || '';
    const check = () => {
      const n = [...notes.value].length;
      counter.textContent = t('detail.notesLabel', n, MAX_NOTE);
      const over = n > MAX_NOTE;
      tooLong.hidden = !over;
      tooLong.textContent = over ? t('detail.tooLong', n, MAX_NOTE) : '';
      notes.setAttribute('aria-invalid', over ? 'true' : 'false');
      const send = $('resolve');
      if (send) send.disabled = over || !mine;
      const noteBtn = $('add-note');
      if (noteBtn) noteBtn.disabled = over || !notes.value.trim();
      return !over;
    };
    notes.addEventListener('input', () => {
      check();
      saveDraftNow();
    });
    outcome.addEventListener('change', saveDraftNow);
    notes.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        resolve(e.id);
      }
    });
    form = h('form', { class: 'resolve card', id: 'resolve-form', onsubmit: (ev) => { ev.preventDefault(); resolve(e.id); } },
      h('h2', {}, t('detail.resolveTitle')),
      h('label', {}, t('detail.outcome'), outcome),
      h('label', { for: 'notes' }, counter),
      notes, tooLong,
      h('div', { class: 'row-buttons' },
        h('button', { type: 'submit', class: 'primary', id: 'resolve', disabled: !mine }, t('action.resolve')),
        h('button', { type: 'button', id: 'add-note', onclick: () => addNote(e.id) }, t('action.addNote'))));
    queueMicrotask(check);
  } else if (state.me.role === 'supervisor' || state.me.role === 'admin') {
    const reason = h('input', { id: 'reopen-reason', maxlength: String(MAX_NOTE) });
    form = h('form', { class: 'resolve card', onsubmit: (ev) => { ev.preventDefault(); reopen(e.id, reason.value); } },
      h('h2', {}, t('action.reopen')),
      e.resolution_notes ? h('p', { class: 'note-body' }, e.resolution_notes) : null,
      h('label', {}, t('detail.reopenReason'), reason),
      h('button', { type: 'submit', id: 'reopen' }, t('action.reopen')));
  } else if (e.resolution_notes) {
    form = section(t('detail.notes'), h('p', { class: 'note-body' }, e.resolution_notes));
  }

  const elderCard = section(t('detail.elder'), h('dl', { class: 'facts' },
    field(t('elder.age'), el.age),
    field(t('elder.language'), el.language === 'zh' ? '中文' : 'English'),
    field(t('elder.address'), el.address),
    field(t('elder.community'), el.community),
    field(t('elder.phone'), phone ? h('a', { href: `tel:${phone}` }, phone) : null),
    field(t('elder.contacts'), (el.contacts || []).length
      ? h('ol', { class: 'contacts' }, el.contacts.map((c) => h('li', {},
        `${c.name}${c.relation ? ` (${c.relation})` : ''} `, h('a', { href: `tel:${c.phone}` }, c.phone))))
      : null),
    field(t('elder.notes'), el.notes)));

  const c = d.call;
  const talksCard = (d.talks || []).length
    ? section(t('detail.talks'), h('ol', { class: 'talks', id: 'talks' }, d.talks.map((x) => h('li', { dataset: { talk: String(x.id) } },
      h('div', { class: 'utt-meta' },
        h('span', { class: 'speaker' }, t(`talk.kind.${x.kind}`)),
        h('span', {}, x.operator_name),
        h('time', {}, localTime(x.bridged_at || x.started_at)),
        x.bridged_at && x.ended_at ? h('span', {}, duration((new Date(x.ended_at) - new Date(x.bridged_at)) / 1000)) : null,
        x.ended_by ? h('span', {}, endedBy(x)) : h('span', {}, t(`talk.status.${x.status}`))),
      x.has_recording
        ? h('audio', { controls: true, preload: 'metadata', src: `/api/v1/talks/${x.id}/audio`, dataset: { talk: String(x.id) } })
        : null))))
    : null;
  const callCard = section(t('detail.call'), h('dl', { class: 'facts' },
    field(t('call.time'), localTime(c.started_at || c.due_at)),
    field(t('call.kind'), `${c.direction} · ${c.purpose}`),
    field(t('call.attempts'), c.attempts),
    field(t('call.status'), `${c.status}${c.outcome ? ` · ${c.outcome}` : ''}`),
    c.level ? field(t('call.level'), levelBadge(c.level)) : null,
    field(t('call.path'), (c.flow_path || []).length ? h('ol', { class: 'path' }, c.flow_path.map((s) => h('li', {}, s))) : null)));

  const reasons = Array.isArray(e.reasons) ? e.reasons : [];
  const reasonsCard = section(t('detail.reasons'), h('ul', { class: 'reasons', id: 'reasons' },
    reasons.map((r) => h('li', {},
      r.level ? levelBadge(r.level) : null, ' ',
      h('strong', {}, r.category || ''), ' ',
      r.evidence ? h('q', {}, r.evidence) : null, ' ',
      r.summary ? h('span', { class: 'muted' }, r.summary) : null,
      r.phonetic ? h('em', { class: 'phonetic' }, ` (${t('detail.sound')})`) : null,
      r.rule ? h('code', { class: 'rule' }, r.rule) : null))));

  // Evidence without its own utterance's assessment is looked for by text.
  const looseReasons = reasons.map((r) => ({ evidence: r.evidence }));
  const transcript = section(t('detail.transcript'), h('ol', { class: 'transcript', id: 'transcript' },
    (d.transcript || []).map((u) => h('li', { class: `utt sp-${u.speaker}`, dataset: { utterance: String(u.id) } },
      h('div', { class: 'utt-meta' },
        h('span', { class: 'speaker' }, t(`speaker.${u.speaker}`)),
        u.flow_step ? h('code', {}, u.flow_step) : null,
        u.level && u.level !== 'ok' ? levelBadge(u.level) : null,
        h('time', {}, localTime(u.created_at))),
      h('p', { class: 'utt-text' }, highlighted(u.transcript, [...(Array.isArray(u.reasons) ? u.reasons : []), ...looseReasons])),
      u.has_audio
        ? h('audio', { controls: true, preload: 'metadata', src: `/api/v1/utterances/${u.id}/audio`, dataset: { utterance: String(u.id) } })
        : h('span', { class: 'muted' }, t('detail.noAudio'))))));

  // Open concerns with their history: what led here when a trend was raised.
  const concerns = (d.concerns || []).length
    ? section(t('detail.concerns'), h('ul', { class: 'concerns', id: 'concerns' },
      d.concerns.map((k) => h('li', { dataset: { concern: String(k.id) } },
        levelBadge(k.level), ' ',
        h('strong', {}, k.slot ? `${k.slot} · ${k.category}` : k.category), ' ',
        h('span', { class: 'muted' }, (k.history || []).map((m) => `${m.date} ${t(`concern.${m.change}`)}`).join(' → '))))))
    : null;

  const history = section(t('detail.history'), h('ol', { class: 'trend', id: 'trend' },
    [...(d.history || [])].reverse().map((x) => h('li', { class: x.call_id === e.call_id ? 'current' : '' },
      h('time', {}, localTime(x.created_at)), ' ',
      x.max_level ? levelBadge(x.max_level) : h('span', { class: 'muted' }, x.status)))));

  const notes = (d.notes || []).length
    ? section(t('detail.notes'), h('ul', { class: 'notes' }, d.notes.map((n) => h('li', {},
      h('span', { class: 'muted' }, `${localTime(n.created_at)} · ${n.operator_name}: `), h('span', { class: 'note-body' }, n.body)))))
    : null;

  const audit = section(t('detail.audit'), h('table', { class: 'audit' }, h('tbody', {},
    (d.audit || []).map((a) => h('tr', {},
      h('td', {}, localTime(a.at)),
      h('td', {}, a.actor_name || a.actor_kind),
      h('td', {}, h('code', {}, a.action)))))));

  view.append(head, actions,
    h('div', { class: 'cols' },
      h('div', { class: 'col-main' }, talk, reasonsCard, transcript, talksCard, form, notes),
      h('div', { class: 'col-side' }, elderCard, concerns, callCard, history, audit)));
  tick();
}

function endedBy(x) {
  if (x.status === 'failed') return t('talk.status.failed', x.end_reason || '');
  return t(`talk.ended.${x.ended_by}`);
}

function notesOk() {
  const notes = $('notes');
  return !notes || [...notes.value].length <= MAX_NOTE;
}

async function resolve(id) {
  const outcome = $('outcome');
  const notes = $('notes');
  if (!outcome || !notes) return;
  if (!notesOk()) {
    notes.focus();
    return;
  }
  if (!outcome.value) {
    toast(t('detail.needOutcome'), 'error');
    outcome.focus();
    return;
  }
  saveDraftNow();
  try {
    await api('POST', `/api/v1/escalations/${id}/resolve`, { outcome: outcome.value, notes: notes.value });
    state.sent.add(id);
    localStorage.removeItem(draftKey(id));
    state.leases.delete(id);
    state.detail = null; // nothing left to keep as a draft
    toast(t('detail.resolved'), 'ok');
    await refreshQueue();
    location.hash = '#/queue';
  } catch (e) {
    if (!(e instanceof ApiError && e.authLost)) {
      toast(e.message, 'error');
      refreshDetail();
    }
  }
}

async function addNote(id) {
  const notes = $('notes');
  if (!notes || !notes.value.trim() || !notesOk()) return;
  try {
    await api('POST', `/api/v1/escalations/${id}/notes`, { body: notes.value });
    notes.value = '';
    saveDraftNow();
    toast(t('detail.noteSaved'), 'ok');
    const d = await loadDetail(id);
    renderDetail($('view'), d);
  } catch (e) {
    if (!(e instanceof ApiError && e.authLost)) toast(e.message, 'error');
  }
}

async function release(id) {
  saveDraftNow();
  try {
    await api('POST', `/api/v1/escalations/${id}/release`);
    state.leases.delete(id);
    toast(t('detail.released'), 'ok');
    await refreshQueue();
    const d = await loadDetail(id);
    renderDetail($('view'), d);
  } catch (e) {
    if (!(e instanceof ApiError && e.authLost)) toast(e.message, 'error');
  }
}

async function reopen(id, reason) {
  try {
    await api('POST', `/api/v1/escalations/${id}/reopen`, { reason });
    await refreshQueue();
    const d = await loadDetail(id);
    renderDetail($('view'), d);
  } catch (e) {
    if (!(e instanceof ApiError && e.authLost)) toast(e.message, 'error');
  }
}

// ───────────────────────── supervisor ─────────────────────────

const supervisor = {
  by: localStorage.getItem('vc.sup.by') || 'community',
  month: new Date().toISOString().slice(0, 7),
};

function pct(a, b) {
  return b ? `${Math.round((100 * a) / b)}%` : '—';
}

async function renderSupervisor(view) {
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const [o, s] = await Promise.all([
    api('GET', `/api/v1/reports/overview?by=${encodeURIComponent(supervisor.by)}&tz=${encodeURIComponent(tz)}`),
    api('GET', `/api/v1/reports/audit-sample?month=${encodeURIComponent(supervisor.month)}&tz=${encodeURIComponent(tz)}`),
  ]);
  if (state.view !== 'supervisor') return;
  clear(view);
  const tot = o.totals;
  const byPick = h('select', {
    id: 'sup-by',
    onchange: (e) => {
      supervisor.by = e.target.value;
      localStorage.setItem('vc.sup.by', supervisor.by);
      render();
    },
  }, ['city', 'county', 'street', 'community'].map((b) => h('option', { value: b, selected: b === supervisor.by }, t(`sup.${b}`))));
  const monthPick = h('input', {
    type: 'month', id: 'sup-month', value: supervisor.month,
    onchange: (e) => {
      supervisor.month = e.target.value || supervisor.month;
      render();
    },
  });
  const oldest = (secs) => (secs === null || secs === undefined ? '—' : duration(secs));
  const card = (label, value, cls) => h('div', { class: `stat ${cls || ''}` }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value));

  view.append(
    h('div', { class: 'bar' }, h('h1', {}, t('sup.title')), h('label', {}, t('sup.by'), ' ', byPick)),
    h('div', { class: 'stats', id: 'sup-totals' },
      card(t('level.emergency'), tot.emergency, 'lvl-emergency'),
      card(t('level.urgent'), tot.urgent, 'lvl-urgent'),
      card(t('level.watch'), tot.watch, 'lvl-watch'),
      card(t('sup.oldest'), oldest(tot.oldest_open_secs)),
      card(t('sup.breached'), tot.breached, tot.breached ? 'breached' : ''),
      card(t('sup.slaToday'), t('sup.slaShare', pct(tot.emergencies_in_sla, tot.emergencies_today), tot.emergencies_in_sla, tot.emergencies_today))),
    h('table', { class: 'report', id: 'sup-units' },
      h('thead', {}, h('tr', {}, [t('sup.unit'), t('level.emergency'), t('level.urgent'), t('level.watch'), t('sup.claimed'),
        t('sup.oldest'), t('sup.breached'), t('sup.slaToday')].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, o.units.map((u) => h('tr', {},
        h('th', { scope: 'row' }, u.unit_name),
        h('td', { class: u.emergency ? 'lvl-emergency num' : 'num' }, u.emergency),
        h('td', { class: 'num' }, u.urgent),
        h('td', { class: 'num' }, u.watch),
        h('td', { class: 'num' }, u.claimed),
        h('td', { class: 'num' }, oldest(u.oldest_open_secs)),
        h('td', { class: u.breached ? 'breached num' : 'num' }, u.breached),
        h('td', { class: 'num' }, t('sup.slaShare', pct(u.emergencies_in_sla, u.emergencies_today), u.emergencies_in_sla, u.emergencies_today)))))),
    ...attemptsReport(o.attempts),
    ...trunksReport(o.trunks),
    ...watchReport(o.watch_list, o.watch_days),
    h('h2', {}, t('sup.operators')),
    h('table', { class: 'report', id: 'sup-operators' },
      h('thead', {}, h('tr', {}, [t('sup.operator'), t('sup.unit'), t('sup.holding'), t('sup.claimsToday'), t('sup.resolvedToday'), t('sup.emergResolved')]
        .map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, o.operators.map((p) => h('tr', {},
        h('th', { scope: 'row' }, `${p.display_name} (${p.username})`),
        h('td', {}, p.unit_name),
        h('td', { class: 'num' }, p.holding),
        h('td', { class: 'num' }, p.claims_today),
        h('td', { class: 'num' }, p.resolved_today),
        h('td', { class: 'num' }, p.emergencies_resolved_today))))),
    h('div', { class: 'bar' }, h('h2', {}, t('sup.sample')), h('label', {}, t('sup.month'), ' ', monthPick)),
    s.items.length
      ? h('table', { class: 'report', id: 'sup-sample' },
        h('thead', {}, h('tr', {}, [t('sup.operator'), t('col.elder'), t('col.level'), t('sup.outcome'), t('sup.resolvedAt')]
          .map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, s.items.map((x) => h('tr', {},
          h('th', { scope: 'row' }, x.operator_name),
          h('td', {}, h('a', { href: `#/e/${x.escalation_id}` }, x.elder_name, ` #${x.escalation_id}`)),
          h('td', {}, levelBadge(x.level)),
          h('td', {}, x.outcome ? t(`outcome.${x.outcome}`) : ''),
          h('td', {}, localTime(x.resolved_at))))))
      : h('p', { class: 'empty', id: 'sup-sample' }, t('sup.noSample')));
}

/** Today's calls to elders by outcome, per unit, with the totals last. */
function attemptsReport(a) {
  if (!a) return [];
  const cols = ['reached', 'busy', 'no_answer', 'declined', 'voicemail', 'invalid_number', 'switched_off', 'trunk_failure', 'other'];
  const row = (u, total) => h('tr', { class: total ? 'total' : '' },
    h('th', { scope: 'row' }, u.unit_name),
    ...cols.map((c) => h('td', { class: c === 'invalid_number' && u[c] ? 'breached num' : 'num' }, u[c])));
  return [
    h('h2', {}, t('sup.attempts')),
    h('table', { class: 'report', id: 'sup-attempts' },
      h('thead', {}, h('tr', {}, [t('sup.unit'), ...cols.map((c) => t(`att.${c}`))].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, a.units.map((u) => row(u, false)), row(a.totals, true))),
  ];
}

/** The SIP trunks of the node serving the console, most preferred first. */
function trunksReport(trunks) {
  if (!trunks || !trunks.length) return [];
  return [
    h('h2', {}, t('sup.trunks')),
    h('table', { class: 'report', id: 'sup-trunks' },
      h('thead', {}, h('tr', {}, [t('trunk.name'), t('trunk.state'), t('trunk.since'), t('trunk.failovers'), t('trunk.registration')]
        .map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, trunks.map((k) => h('tr', {},
        h('th', { scope: 'row' }, `${k.priority}. ${k.name}`),
        h('td', { class: k.up ? '' : 'breached' }, k.up ? t('trunk.up') : t('trunk.down', k.reason || '')),
        h('td', {}, localTime(k.since)),
        h('td', { class: 'num' }, k.failovers),
        h('td', {}, t(`trunk.reg.${k.registration}`)))))),
  ];
}

/** Elders whose calls raised a concern lately, most severe first: their
 * calls' own levels, so a tired or lonely elder shows though nothing was queued. */
function watchReport(list, days) {
  if (!list) return [];
  const trendMark = { worse: '↑', better: '↓', steady: '→' };
  return [
    h('h2', {}, t('sup.watch', days)),
    list.length
      ? h('table', { class: 'report', id: 'sup-watch' },
        h('thead', {}, h('tr', {}, [t('col.elder'), t('sup.unit'), t('sup.watchLatest'), t('sup.watchTrend'), t('sup.watchCalls'),
          t('sup.watchConcerns'), t('sup.watchLast')].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, list.map((w) => h('tr', { 'data-elder': w.elder_id },
          h('th', { scope: 'row' }, w.elder_name),
          h('td', {}, w.community),
          h('td', {}, levelBadge(w.recent_levels[0])),
          h('td', { title: w.recent_levels.map((l) => t(`level.${l}`)).join(' · ') },
            `${trendMark[w.trend] || ''} ${t(`trend.${w.trend}`)}`),
          h('td', { class: 'num' }, w.flagged_calls),
          h('td', {}, (w.categories || []).join(', ')),
          h('td', {}, localTime(w.last_call_at))))))
      : h('p', { class: 'empty', id: 'sup-watch' }, t('sup.watchNone')),
  ];
}

// ───────────────────────── routing ─────────────────────────

async function render() {
  if (!state.me || state.authLost) return;
  const view = $('view');
  const hash = location.hash || '#/queue';
  const m = /^#\/e\/(\d+)$/.exec(hash);
  saveDraftNow();
  for (const a of document.querySelectorAll('.nav a')) {
    a.classList.toggle('current', hash.startsWith(a.getAttribute('href')));
  }
  try {
    if (m) {
      state.view = 'detail';
      const d = await loadDetail(Number(m[1]));
      if (state.view !== 'detail') return;
      renderDetail(view, d);
    } else if (hash === '#/supervisor') {
      state.view = 'supervisor';
      state.detail = null;
      await renderSupervisor(view);
    } else {
      state.view = 'queue';
      state.detail = null;
      clear(view);
      renderQueue(view);
      if (!state.selected && state.items.length) select(state.items[0].id);
    }
  } catch (e) {
    if (e instanceof ApiError && e.authLost) return;
    clear(view);
    view.append(h('p', { class: 'error', role: 'alert' }, e.message), h('a', { href: '#/queue' }, t('action.back')));
  }
}

// ───────────────────────── keyboard ─────────────────────────

function onKey(ev) {
  if (!state.me || state.authLost) return;
  const tag = (ev.target && ev.target.tagName) || '';
  const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(tag) || (ev.target && ev.target.isContentEditable);
  if (ev.key === 'Escape') {
    if (typing) ev.target.blur();
    else if (state.view !== 'queue') location.hash = '#/queue';
    return;
  }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const inDetail = state.view === 'detail' && state.detail;
  switch (ev.key) {
    case 'j':
    case 'ArrowDown':
      if (state.view === 'queue') { moveSelection(1); ev.preventDefault(); }
      break;
    case 'k':
    case 'ArrowUp':
      if (state.view === 'queue') { moveSelection(-1); ev.preventDefault(); }
      break;
    case 'Enter':
    case 'o':
      if (state.view === 'queue' && state.selected && !(ev.target && ev.target.closest('button, a'))) openItem(state.selected);
      break;
    case 'c':
      if (inDetail) claim(state.detail.escalation.id);
      else if (state.view === 'queue' && state.selected) claim(state.selected);
      break;
    case 'n':
      claimNext();
      break;
    case 'r':
      if (inDetail && $('outcome')) {
        ev.preventDefault();
        $('outcome').focus();
      }
      break;
    case 't':
      // Talk: join the call if the elder waits on the line, else call back.
      if (inDetail) {
        const go = [$('talk-join'), $('talk-callback')].find((x) => x && !x.disabled);
        if (go) go.click();
      }
      break;
    case 's':
      toggleSound();
      break;
    default:
  }
}

// ───────────────────────── toasts ─────────────────────────

function toast(text, kind, id) {
  const box = $('toasts');
  const el = h('div', { class: `toast ${kind || ''}`, role: kind === 'error' ? 'alert' : 'status', id: id ? `toast-${id}` : null }, text,
    h('button', { type: 'button', class: 'x', 'aria-label': '×', onclick: () => el.remove() }, '×'));
  if (id) {
    const old = $(`toast-${id}`);
    if (old) old.remove();
  }
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 12000 : 5000);
}

export { applyStatic };
