// The job certificate (`--tls`): its serial number. cluster-launch.test.ts's --tls case failed 1 run in 30 with
// "generated certificate: is not a DER X.509 certificate": the serial's top bit was cleared, so 1 serial in 256
// began 0x00 0x00-0x7f, a needless leading zero octet that OpenSSL refuses to parse.
import { X509Certificate } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { certificateSerial, JobTls, selfSignedCertificate } from './job-tls.js';

/** 16 random-looking bytes starting with `head`. */
const bytes = (...head: number[]) => Uint8Array.from({ length: 16 }, (_, i) => (i < head.length ? head[i]! : (i * 37 + 11) & 0xff));

test('a certificate parses whatever its serial random bytes start with (00 10 used to make an unparsable one)', async () => {
  for (const head of [[0x00, 0x10], [0x00, 0x00], [0x00, 0x80], [0x80, 0x00], [0x3f, 0x00], [0xff, 0xff]]) {
    const random = bytes(...head);
    const { der, pkcs8 } = await selfSignedCertificate('tls-serial', random);
    const what = `serial random bytes ${Buffer.from(head).toString('hex')}...`;
    const tls = JobTls.fromLine(`${der.toString('base64')}.${pkcs8.toString('base64')}`, what);
    const serial = new X509Certificate(der).serialNumber;
    assert.is(serial.length, 32, `${what}: a 16-octet serial, got ${serial}`);
    assert.match(serial, /^[4-7]/, `${what}: positive, no leading zero octet, got ${serial}`);
    assert.is(serial.slice(2), Buffer.from(random.subarray(1)).toString('hex').toUpperCase(), `${what}: the other 15 bytes kept`);
    assert.match(tls.fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  }
});

test('certificateSerial: top bit clear, next bit set, for every first byte; a wrong length is an error', () => {
  for (let b = 0; b < 256; b++) {
    const s = certificateSerial(bytes(b, 0x00));
    assert.is(s[0]! & 0xc0, 0x40, `first byte ${b}`);
    assert.is(s[0]! & 0x3f, b & 0x3f, `first byte ${b}: its low 6 bits kept`);
  }
  assert.throws(() => certificateSerial(new Uint8Array(15)), /must be 16 bytes, got 15/);
});

test('JobTls.generate makes a certificate every time (200 in a row)', async () => {
  const prints = new Set<string>();
  for (let i = 0; i < 200; i++) prints.add((await JobTls.generate(`job-${i}`)).fingerprint);
  assert.is(prints.size, 200);
});

test.run();
