import { errorFactory, type ErrorTable } from '@damselfly/shared';

/** Every error the simulator raises on purpose (its CLI prints the message and exits 2). */
export const SimErrors = {
  SIM_MEASURED_INVALID: { message: 'not a swarm benchmark result: %s', status: 400 },
  SIM_MEASURED_OTHER_SWARM: { message: 'the measured runs are of another swarm: %s', status: 400 },
} as const satisfies ErrorTable<string>;

export type SimErrorCode = keyof typeof SimErrors;
export const simError = errorFactory(SimErrors);
