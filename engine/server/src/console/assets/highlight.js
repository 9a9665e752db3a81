// Where in an utterance's text the evidence for a flag lies.
//
// Reasons carry `evidence` (the words as said) and, from the classifier, a
// byte `span` into the UTF-8 transcript ({start, end} or [start, end]).
// Spans are used when they are valid and point at the evidence; otherwise
// the evidence text is searched for (case-insensitively).

const enc = new TextEncoder();

/** JS string index of a UTF-8 byte offset in `text`, or -1 if it splits a character. */
function byteToIndex(text, byte) {
  let b = 0;
  let i = 0;
  while (i < text.length && b < byte) {
    const cp = text.codePointAt(i);
    b += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    i += cp > 0xffff ? 2 : 1;
  }
  return b === byte ? i : -1;
}

function spanOf(reason) {
  const s = reason && reason.span;
  if (!s) return null;
  if (Array.isArray(s) && s.length === 2) return [s[0], s[1]];
  if (typeof s.start === 'number' && typeof s.end === 'number') return [s.start, s.end];
  return null;
}

/** Ranges [start, end) (JS string indices) to highlight, merged and sorted. */
export function evidenceRanges(text, reasons) {
  const ranges = [];
  const total = enc.encode(text).length;
  for (const r of reasons || []) {
    const span = spanOf(r);
    let placed = false;
    if (span && span[0] >= 0 && span[1] > span[0] && span[1] <= total) {
      const a = byteToIndex(text, span[0]);
      const b = byteToIndex(text, span[1]);
      if (a >= 0 && b > a && (!r.evidence || text.slice(a, b) === r.evidence)) {
        ranges.push([a, b]);
        placed = true;
      }
    }
    if (!placed && typeof r.evidence === 'string' && r.evidence.trim()) {
      const hay = text.toLowerCase();
      const needle = r.evidence.trim().toLowerCase();
      let from = 0;
      for (;;) {
        const at = hay.indexOf(needle, from);
        if (at < 0) break;
        ranges.push([at, at + needle.length]);
        from = at + needle.length;
      }
    }
  }
  ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  const merged = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return merged;
}

/** The text as nodes, evidence wrapped in <mark>. Data only ever becomes text nodes. */
export function highlighted(text, reasons) {
  const out = [];
  let at = 0;
  for (const [a, b] of evidenceRanges(text, reasons)) {
    if (a > at) out.push(document.createTextNode(text.slice(at, a)));
    const m = document.createElement('mark');
    m.className = 'evidence';
    m.textContent = text.slice(a, b);
    out.push(m);
    at = b;
  }
  if (at < text.length) out.push(document.createTextNode(text.slice(at)));
  return out;
}
