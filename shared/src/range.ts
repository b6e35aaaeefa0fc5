/** HTTP `Range` parsing (RFC 9110 §14.1.2) for single byte ranges. */
import { sharedError } from './errors.js';

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/**
 * Resolves a `Range` header against an object of `length` bytes. Returns undefined when there is no header (the whole
 * object). Throws BAD_RANGE for syntax we do not serve (other units, several ranges) and RANGE_NOT_SATISFIABLE
 * (416) when the range lies past the end.
 */
// A 416 must carry `Content-Range: bytes */<length>`: it travels on the error as data.
function unsatisfiable(header: string, length: number): Error {
  return Object.assign(sharedError('RANGE_NOT_SATISFIABLE', `${header} of ${length} bytes`), { headers: { 'content-range': `bytes */${length}` } });
}

export function parseRange(header: string | undefined, length: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) throw sharedError('BAD_RANGE', `${JSON.stringify(header)} (only bytes ranges are supported)`);
  const spec = m[1]!.trim();
  if (spec.includes(',')) throw sharedError('BAD_RANGE', `${JSON.stringify(header)} (multiple ranges are not supported; send one range per request)`);
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) throw sharedError('BAD_RANGE', JSON.stringify(header));
  if (r[1] === '') {
    const suffix = Number(r[2]);
    if (suffix === 0 || length === 0) throw unsatisfiable(header, length);
    return { start: Math.max(0, length - suffix), end: length - 1 };
  }
  const start = Number(r[1]);
  const end = r[2] === '' ? length - 1 : Math.min(Number(r[2]), length - 1);
  if (r[2] !== '' && Number(r[2]) < start) throw sharedError('BAD_RANGE', `${JSON.stringify(header)} (end before start)`);
  if (start >= length) throw unsatisfiable(header, length);
  return { start, end };
}

/**
 * What a `Range` header asks for before the object's length is known: one `bytes=a-b` or `bytes=a-` range (the latter
 * up to any end), else undefined (a suffix range needs the length; a malformed header is answered once the length is
 * known). A hint only: the answer is worked out with `parseRange` once the length is known.
 */
export function rangeHint(header: string | undefined): ByteRange | undefined {
  if (header === undefined || /^\s*bytes\s*=\s*-/i.test(header)) return undefined;
  try {
    return parseRange(header, Number.MAX_SAFE_INTEGER);
  } catch {
    return undefined;
  }
}
