#!/usr/bin/env node
// The `shoal` command. A committed file rather than dist/launcher/cli.js itself: npm links a workspace's bin
// at `npm ci`, before the TypeScript is built, and skips a bin whose file does not exist yet.
await import('../dist/launcher/cli.js');
