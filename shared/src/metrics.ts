import { Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per component instance (tests run several in one process, so never the global default). */
export function createRegistry(prefix: string, defaults = true): Registry {
  const registry = new Registry();
  if (defaults) collectDefaultMetrics({ register: registry, prefix: `${prefix}_` });
  return registry;
}
