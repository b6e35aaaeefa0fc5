export * from './engine.js';
export * from './bound.js';
export * from './scenario.js';
export * from './report.js';
export * from './measured.js';
export * from './errors.js';
