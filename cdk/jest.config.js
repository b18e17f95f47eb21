/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    // tsconfig.json sets isolatedModules, so ts-jest only transpiles: `tsc --noEmit`
    // type-checks separately, and checking aws-cdk-lib's types per test file is slow.
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.json' }],
  },
  // Synthesizing three stages with image assets takes a few seconds per file.
  testTimeout: 120000,
  snapshotFormat: { printBasicPrototype: false },
};
