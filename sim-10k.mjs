import { simulate, scenarios, summary } from '@damselfly/sim';
const r = simulate(scenarios['scale-10k'](Number(process.argv[2] ?? 10000)));
console.log(JSON.stringify(summary(r)), 'rss MB', (process.memoryUsage().rss / 1e6).toFixed(0));
