/**
 * @shoal/bench: benchmark suites run by `npm run bench -- <suite>` (see cli.ts and bench/README.md). The library
 * surface is the pieces other suites and tests reuse.
 */
export {
  BENCH_SIZES,
  benchPayload,
  defaultBenchTransports,
  itersFor,
  pooledNetTransport,
  runTransportBench,
  type BenchTransportEntry,
  type BenchTransportRegistry,
  type TransportBenchOptions,
  type TransportRow,
} from './transport.js';
