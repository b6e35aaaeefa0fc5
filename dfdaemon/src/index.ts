export * from './daemon.js';
export * from './config.js';
export * from './errors.js';
export * from './metrics.js';
export * from './proxy/access-guard.js';
export * from './proxy/route.js';
export * from './proxy/error-answer.js';
