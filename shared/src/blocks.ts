/**
 * Blocks: the unit of verification. Every piece is cut into 256 KiB blocks (the last one shorter); the supernode
 * records a sha256 per block as it seeds, and a byte is "verified" once its block matched that record. Serving waits
 * for blocks, not pieces, so a Range read or a peer relaying a piece in flight never waits for the rest of its piece.
 *
 * Why 256 KiB: every hop (origin → supernode → dfdaemon → client) must hold a whole block before passing on any byte
 * of it, so a Range read's first byte waits one block's arrival and hash per hop. With 1 MiB blocks that was 3–4 ms
 * per hop on this project's test machine, and the first byte of an uncached read through a registry 10 ms away came
 * 1.9× later than straight from the registry; at 256 KiB it is about 1 ms per hop. It divides every piece size (4–64
 * MiB), so no block straddles two pieces, and a 1 MiB nydusd or containerd read is four blocks. Smaller would cost
 * more: a 64 MiB piece is 256 hashes (16 KiB of hex in an assignment from a peer), and each block is one write and
 * one hash finalisation.
 *
 * A piece's identity (what `have` lists and reports compare) is the sha256 of its block hashes in order: one 64-hex
 * value per piece, derived from the per-block record.
 */
import { createHash } from 'node:crypto';

export const BLOCK_SIZE = 256 * 1024;
/** Raw sha256 length: in a framed piece body each block is followed by its hash. */
export const BLOCK_HASH_BYTES = 32;
/**
 * Content type of the supernode's piece bodies: each block's bytes followed by its 32-byte sha256, so the downloader
 * checks every block against the supernode's record as soon as it arrives, even while the supernode is still seeding.
 */
export const FRAMED_CONTENT_TYPE = 'application/vnd.damselfly.blocks';

export function blockCountFor(pieceLength: number): number {
  return Math.ceil(pieceLength / BLOCK_SIZE);
}

/** Offset within its piece and length of block `b`. */
export function blockRange(b: number, pieceLength: number): { start: number; length: number } {
  const start = b * BLOCK_SIZE;
  return { start, length: Math.min(BLOCK_SIZE, pieceLength - start) };
}

/** Length of a framed body for a piece of `pieceLength` bytes. */
export function framedLength(pieceLength: number): number {
  return pieceLength + blockCountFor(pieceLength) * BLOCK_HASH_BYTES;
}

/** A piece's identity: sha256 over its block hashes (raw bytes, in order). */
export function pieceRoot(blocks: readonly string[]): string {
  const h = createHash('sha256');
  for (const b of blocks) h.update(Buffer.from(b, 'hex'));
  return h.digest('hex');
}

/** Block hashes stored as one string (64 hex each, concatenated). */
export function joinBlocks(blocks: readonly string[]): string {
  return blocks.join('');
}

/**
 * Parses a stored block list for a piece of `pieceLength` bytes; undefined if it does not have one 64-hex hash per
 * block (a record from an older format, or damaged): such a piece is treated as absent and fetched again.
 */
export function splitBlocks(stored: string, pieceLength: number): string[] | undefined {
  const n = blockCountFor(pieceLength);
  if (stored.length !== n * 64 || !/^[a-f0-9]*$/.test(stored)) return undefined;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(stored.slice(i * 64, i * 64 + 64));
  return out;
}
