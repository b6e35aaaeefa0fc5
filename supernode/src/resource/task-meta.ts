import type { TaskInfo } from '@damselfly/shared';

/** What the supernode persists per task. Origin headers are deliberately absent: credentials never touch disk. */
export interface TaskMeta extends TaskInfo {
  url: string;
  acceptsRanges: boolean;
  createdAt: number;
}
