// The package floors of shoal, checked on every `npm test` (test/src/dependency-rules.test.ts) and by
// `npm run check:deps`. Floors, bottom up: core; datasets and backends (siblings: neither imports the other);
// wrappers; run; bench, test and examples on top. A package may import only packages below it.
const PKG = '(core|datasets|backends|wrappers|run|bench|test|examples)';
const below = {
  core: [],
  datasets: ['core'],
  backends: ['core'],
  wrappers: ['core', 'datasets', 'backends'],
  run: ['core', 'datasets', 'backends', 'wrappers'],
};
const all = ['core', 'datasets', 'backends', 'wrappers', 'run', 'bench', 'test', 'examples'];

// Files that may use dev dependencies (uvu, tsx, typescript): tests and test kits.
const TEST_FILES = '(\\.test\\.ts$|/testing/|^core/src/transport/conformance(-peer)?\\.ts$|^test/|^bench/src/.*-(peer|owner)\\.ts$)';

module.exports = {
  forbidden: [
    ...Object.entries(below).map(([pkg, ok]) => ({
      name: `${pkg}-floor`,
      comment: `${pkg} may import only ${ok.length ? ok.join(', ') : 'no other shoal package'} (the floors below it)`,
      severity: 'error',
      from: { path: `^${pkg}/` },
      to: { path: `^(${all.filter((p) => p !== pkg && !ok.includes(p)).join('|')})/` },
    })),
    {
      name: 'bench-floor',
      comment: 'bench measures the packages; it does not import tests or examples',
      severity: 'error',
      from: { path: '^bench/' },
      to: { path: '^(test|examples)/' },
    },
    {
      name: 'no-circular',
      comment: 'no import cycles, type-only ones included',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-deep-import',
      comment: "another package is imported by its name and `exports` subpaths (@shoal/core/transport), never by a relative path into its src or dist",
      severity: 'error',
      from: { path: `^${PKG}/` },
      to: { path: `^${PKG}/(src|dist)/`, pathNot: '^$1/', dependencyTypes: ['local'], dependencyTypesNot: ['aliased'] },
    },
    {
      name: 'no-dev-dep-at-runtime',
      comment: 'runtime code must not import a dev dependency (uvu, tsx, typescript): only tests and test kits (/testing) may',
      severity: 'error',
      from: { path: `^${PKG}/`, pathNot: TEST_FILES },
      to: { dependencyTypes: ['npm-dev'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(dist|build)/' },
    tsPreCompilationDeps: true,
    combinedDependencies: true,
    tsConfig: { fileName: 'tsconfig.depcruise.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['types', 'import', 'default'], extensions: ['.ts', '.d.ts', '.js'] },
  },
};
