/**
 * @shoal/core/testing: test kits (they import uvu, a dev dependency: never from a runtime entry point).
 * `transportConformance` runs the one contract every Transport must meet; `CounterActor` is the actor runtime's
 * test actor.
 */
export { assertBytes, CONFORMANCE_SIZES, expectCode, patternBytes, transportConformance, type ConformanceEnv, type PeerFactory } from '../transport/conformance.js';
export { CounterActor } from '../actor/testing/counter-actor.js';
