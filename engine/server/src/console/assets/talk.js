// Live talk: the operator's microphone and speaker joined to the elder's call
// over WebRTC. Signalling runs over /api/v1/escalations/{id}/talk (a
// WebSocket; docs/signalling.md). One conversation at a time per page; its
// panel survives re-renders of the detail view, so a live call is never
// dropped by a refresh of the data around it.

import { csrfToken } from './api.js';
import { t } from './i18n.js';
import { h, clear, duration } from './dom.js';

// How long to let the browser gather ICE candidates before sending the offer;
// later ones are trickled.
const GATHER_MS = 800;
// Keep-alive on the signalling socket: proxies close WebSocket connections
// that stay silent, and a closed socket hangs the call up.
const PING_MS = 20000;

const talk = {
  id: null, // escalation id of the conversation (active or last ended)
  mode: null, // 'join' | 'call_back'
  state: 'idle', // idle | starting | connecting | ringing | answered | live | ended | failed
  liveSince: 0,
  message: '',
  error: '',
  muted: false,
  ws: null,
  pc: null,
  stream: null,
  audio: null,
  meter: null,
  clickedAt: 0,
  timings: {},
  opts: {},
  panel: null,
  onEnd: () => {},
};

export function talking() {
  return !['idle', 'ended', 'failed'].includes(talk.state);
}

/**
 * The talk panel for escalation `id`. `opts.canJoin` (the elder waits on the
 * line and the item is yours), `opts.canCallBack`; `onEnd` runs when a
 * conversation ends (to reload the detail with its recording).
 */
export function talkPanel(id, opts, onEnd) {
  if (!talk.panel) {
    talk.panel = h('div', { id: 'talk', class: 'talk card', role: 'region', 'aria-labelledby': 'talk-title' });
  }
  if (talk.id !== id && !talking()) {
    talk.id = id;
    talk.state = 'idle';
    talk.error = '';
    talk.message = '';
    talk.timings = {};
  }
  talk.opts = opts;
  talk.onEnd = onEnd;
  render();
  return talk.panel;
}

function set(state, message) {
  talk.state = state;
  if (message !== undefined) talk.message = message;
  render();
}

function fail(message) {
  talk.error = message;
  cleanup();
  set('failed');
  talk.onEnd();
}

function render() {
  const p = talk.panel;
  if (!p) return;
  clear(p);
  p.dataset.state = talk.state;
  for (const [k, v] of Object.entries(talk.timings)) p.dataset[k] = String(Math.round(v));
  const active = talking();
  p.append(h('h2', { id: 'talk-title' }, t('talk.title')));
  if (!active) {
    const row = h('div', { class: 'row-buttons' },
      h('button', {
        type: 'button', id: 'talk-join', class: 'primary talk-go',
        disabled: !talk.opts.canJoin, onclick: () => start('join'),
      }, t('talk.join')),
      h('button', {
        type: 'button', id: 'talk-callback', class: 'talk-go',
        disabled: !talk.opts.canCallBack, onclick: () => start('call_back'),
      }, t('talk.callBack')));
    p.append(row, h('p', { class: 'tip' }, talk.opts.canJoin || talk.opts.canCallBack ? t('talk.recorded') : t('talk.needClaim')));
  }
  const status = h('p', { id: 'talk-state', class: `talk-state ts-${talk.state}`, role: 'status' }, stateText());
  p.append(status);
  if (active) {
    const meter = h('meter', { id: 'talk-level', min: '0', max: '1', value: '0', 'aria-label': t('talk.level') });
    talk.meter = meter;
    p.append(h('div', { class: 'row-buttons' },
      h('button', {
        type: 'button', id: 'talk-mute', 'aria-pressed': talk.muted ? 'true' : 'false',
        onclick: toggleMute,
      }, talk.muted ? t('talk.unmute') : t('talk.mute')),
      h('button', { type: 'button', id: 'talk-hangup', class: 'danger', onclick: hangUp }, t('talk.hangup')),
      h('label', { class: 'level' }, t('talk.level'), ' ', meter)));
  }
  if (talk.error) p.append(h('p', { id: 'talk-error', class: 'error', role: 'alert' }, talk.error));
}

function stateText() {
  switch (talk.state) {
    case 'starting':
    case 'connecting': return t('talk.state.connecting');
    case 'ringing': return t('talk.state.ringing');
    case 'answered': return t('talk.state.answered');
    case 'live': return t('talk.state.live', duration((performance.now() - talk.liveSince) / 1000));
    case 'ended': return t('talk.state.ended', talk.message);
    case 'failed': return t('talk.state.failed');
    default: return '';
  }
}

/** Called every second by the page: the live timer. */
export function tickTalk() {
  if (talk.state === 'live') {
    const s = document.getElementById('talk-state');
    if (s) s.textContent = stateText();
  }
}

function errorText(code, message) {
  switch (code) {
    case 'elder_gone': return t('talk.err.elderGone');
    case 'call_on_other_node': return t('talk.err.otherNode', message);
    case 'not_claimed': return t('talk.err.notClaimed', message);
    case 'no_answer': return t('talk.err.noAnswer');
    case 'declined':
    case 'busy': return t('talk.err.declined');
    case 'no_device':
    case 'device_offline': return t('talk.err.cannotRing', message);
    case 'elder_on_line': return t('talk.err.elderOnLine');
    default: return t('talk.err.other', message);
  }
}

function endedText(by, reason) {
  if (by === 'elder') return t('talk.endedBy.elder');
  if (by === 'operator') return t('talk.endedBy.operator');
  return t('talk.endedBy.engine', reason || '');
}

async function start(mode) {
  if (talking()) return;
  talk.mode = mode;
  talk.error = '';
  talk.muted = false;
  talk.clickedAt = performance.now();
  talk.timings = {};
  set('starting', '');
  const id = talk.id;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/api/v1/escalations/${id}/talk?csrf=${encodeURIComponent(csrfToken() || '')}`);
  talk.ws = ws;
  const opened = new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve, { once: true });
    ws.addEventListener('error', () => reject(new Error('socket')), { once: true });
  });
  ws.addEventListener('message', (ev) => onMessage(ws, ev));
  const ping = setInterval(() => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
    else if (ws.readyState > WebSocket.OPEN) clearInterval(ping);
  }, PING_MS);
  ws.addEventListener('close', () => {
    if (talk.ws === ws && talking()) fail(t('talk.err.network'));
  });
  let stream;
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw Object.assign(new Error('insecure'), { name: 'SecurityError' });
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (e) {
    ws.close();
    const name = e && e.name;
    fail(name === 'NotFoundError' || name === 'OverconstrainedError' ? t('talk.err.noMic')
      : name === 'SecurityError' ? t('talk.err.insecure') : t('talk.err.mic'));
    return;
  }
  if (talk.ws !== ws) {
    stream.getTracks().forEach((tr) => tr.stop());
    return;
  }
  talk.stream = stream;
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  talk.pc = pc;
  for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
  if (!talk.audio) {
    talk.audio = h('audio', { id: 'talk-audio', autoplay: true, hidden: true });
    document.body.append(talk.audio);
  }
  pc.addEventListener('track', (ev) => {
    talk.audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    talk.audio.play().catch(() => {});
  });
  let offered = false;
  pc.addEventListener('icecandidate', (ev) => {
    if (offered && ev.candidate && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({
        type: 'candidate', candidate: ev.candidate.candidate,
        sdp_mid: ev.candidate.sdpMid, sdp_mline_index: ev.candidate.sdpMLineIndex,
      }));
    }
  });
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'failed' && talking()) hangUp();
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    await opened;
  } catch {
    fail(talk.ws === ws ? t('talk.err.network') : '');
    return;
  }
  offered = true;
  ws.send(JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp, mode }));
  set('connecting');
}

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => pc.iceGatheringState === 'complete' && done();
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(done, GATHER_MS);
  });
}

async function onMessage(ws, ev) {
  if (talk.ws !== ws) return;
  let m;
  try {
    m = JSON.parse(ev.data);
  } catch {
    return;
  }
  if (m.type === 'answer' && talk.pc) {
    try {
      await talk.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
    } catch (e) {
      fail(t('talk.err.other', String(e)));
    }
  } else if (m.type === 'state') {
    if (m.state === 'live') {
      talk.liveSince = performance.now();
      talk.timings.msLive = talk.liveSince - talk.clickedAt;
      set('live');
      watchLevel();
    } else if (m.state === 'ended') {
      cleanup();
      set('ended', endedText(m.ended_by, m.reason));
      talk.onEnd();
    } else if (['connecting', 'ringing', 'answered'].includes(m.state)) {
      set(m.state);
    }
  } else if (m.type === 'error') {
    if (m.fatal === false) return;
    fail(errorText(m.code, m.message));
  }
}

// The elder's voice level, from the receiver's statistics; also marks when
// audio from the elder first arrived after the bridge came up.
async function watchLevel() {
  const pc = talk.pc;
  let lastEnergy = 0;
  while (talk.pc === pc && talk.state === 'live') {
    try {
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          const energy = s.totalAudioEnergy || 0;
          if (talk.meter) talk.meter.value = s.audioLevel || 0;
          if (energy > lastEnergy && s.audioLevel > 0.001 && talk.timings.msHeard === undefined) {
            talk.timings.msHeard = performance.now() - talk.clickedAt;
            talk.panel.dataset.msHeard = String(Math.round(talk.timings.msHeard));
          }
          lastEnergy = energy;
        }
      });
    } catch {
      // the connection is closing
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function toggleMute() {
  if (!talk.stream) return;
  talk.muted = !talk.muted;
  for (const tr of talk.stream.getAudioTracks()) tr.enabled = !talk.muted;
  render();
}

function hangUp() {
  const ws = talk.ws;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: 'hangup' }));
    // The server answers with the final state; do not wait forever for it.
    setTimeout(() => {
      if (talk.ws === ws && talking()) {
        cleanup();
        set('ended', endedText('operator'));
        talk.onEnd();
      }
    }, 3000);
  } else {
    cleanup();
    set('ended', endedText('operator'));
    talk.onEnd();
  }
}

function cleanup() {
  const { ws, pc, stream } = talk;
  talk.ws = null;
  talk.pc = null;
  talk.stream = null;
  talk.meter = null;
  if (stream) stream.getTracks().forEach((tr) => tr.stop());
  if (pc) pc.close();
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
  if (talk.audio) talk.audio.srcObject = null;
}

window.addEventListener('pagehide', () => {
  if (talking()) cleanup();
});
