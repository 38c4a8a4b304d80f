import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { isShoalError } from '@shoal/core';
import { isLocalHost, parseHostfile, parseHosts, placeRanks, remoteCommand } from './hosts.js';

const configError = (f: () => unknown, re: RegExp) => {
  try {
    f();
  } catch (e) {
    assert.ok(isShoalError(e) && e.code === 'ERR_CONFIG', String(e));
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable('no error');
};

test('--hosts: host:slots, a bare host is one slot, addresses with colons keep them', () => {
  assert.equal(parseHosts('a:2, b ,10.0.0.3:4'), [{ host: 'a', slots: 2 }, { host: 'b', slots: 1 }, { host: '10.0.0.3', slots: 4 }]);
  configError(() => parseHosts('a:0'), /slots of a must be a positive integer/);
  configError(() => parseHosts('a,a:2'), /host a is listed twice/);
  configError(() => parseHosts(' , '), /names no host/);
  configError(() => parseHosts('a b'), /bad host name/);
});

test('hostfile: mpirun "slots=N", host:N and bare hosts, comments; errors name the line', () => {
  assert.equal(parseHostfile('# cluster\nh1 slots=2\n\nh2:3  # gpu box\nh3\n', 'hf'), [{ host: 'h1', slots: 2 }, { host: 'h2', slots: 3 }, { host: 'h3', slots: 1 }]);
  configError(() => parseHostfile('h1 slots=2\nh2 cores=4\n', 'hf'), /hf:2: expected 'host slots=N'/);
});

test('ranks fill the hosts in order with local ranks; too few slots is an error naming them', () => {
  const hosts = [{ host: 'a', slots: 2 }, { host: 'b', slots: 2 }];
  assert.equal(placeRanks(hosts, 3), [{ rank: 0, host: 'a', localRank: 0 }, { rank: 1, host: 'a', localRank: 1 }, { rank: 2, host: 'b', localRank: 0 }]);
  configError(() => placeRanks(hosts, 5), /5 workers but the hosts offer 4 slot\(s\) \(a:2,b:2\)/);
});

test('the remote command runs in the directory with exactly the given environment, quoted for sh', () => {
  const cmd = remoteCommand('/tmp', { A: "it's", B: 'x y' }, ['sh', '-c', 'echo "$A|$B|$PWD|${SHOAL_PARENT_PID:+set}"']);
  assert.is(execFileSync('sh', ['-c', cmd], { encoding: 'utf8' }).trim(), "it's|x y|/tmp|set");
  configError(() => remoteCommand('/', { 'A-B': '1' }, ['true']), /bad variable name/);
});

test('local host names', () => {
  assert.ok(isLocalHost('localhost') && isLocalHost('me', 'me'));
  assert.not.ok(isLocalHost('other', 'me'));
});

test.run();
