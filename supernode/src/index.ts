export * from './supernode.js';
export * from './config.js';
export * from './errors.js';
export * from './scheduling/policy.js';
export * from './scheduling/scheduler.js';
export * from './scheduling/indexed-set.js';
export * from './api/wake-list.js';
export * from './scheduling/slot-tuner.js';
