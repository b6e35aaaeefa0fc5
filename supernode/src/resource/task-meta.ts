import type { TaskInfo } from '@damselfly/shared';

/**
 * What the supernode persists per task. Credentials are deliberately absent: no origin headers, and the origin is
 * kept only in its canonical form (no userinfo, no signature parameters), for operators to read.
 */
export interface TaskMeta extends TaskInfo {
  origin: string;
  acceptsRanges: boolean;
  createdAt: number;
  /** The whole blob was read back in order and matched its digest. */
  verified?: boolean;
  /** Last registration (ms), for the TTL. */
  lastAccess?: number;
  /**
   * Without a digest: the probed version's validator (its strong ETag), sent as If-Range with every piece, so
   * pieces of a later version are refused rather than stitched to these (a digest says that by itself).
   */
  validator?: string;
}
