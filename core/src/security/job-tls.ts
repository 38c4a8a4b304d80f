import { createPrivateKey, randomBytes, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { inspect } from 'node:util';
import * as asn1js from 'asn1js';
import { Certificate, CryptoEngine, AttributeTypeAndValue } from 'pkijs';
import { Errors } from '../errors.js';
import { boundedTimeout } from '../util.js';

/**
 * Optional encryption of a job's TCP connections (`shoal run --tls`, `shoal_spark.fit(tls=True)`): TLS 1.3 with
 * one ephemeral self-signed certificate per job, made by the launcher, and pinned by its SHA-256 fingerprint on
 * every peer. No CA is trusted: a peer is accepted when it proves (in the TLS handshake) that it holds the job
 * certificate's private key, so both ends present the same certificate (mutual TLS) and each checks the other's
 * fingerprint before a byte of shoal's own handshake is read. The job-secret HMAC handshake then runs inside the
 * TLS stream as without TLS: TLS adds confidentiality and integrity of the payloads, the secret still decides who
 * is in the job.
 *
 * The certificate and its key travel like the secret, in the environment of the job's processes
 * (`SHOAL_JOB_TLS`: base64 DER certificate, '.', base64 PKCS#8 key, one line so a remote shell can read it from
 * its stdin), never on a command line, in the store or in a log. ECDSA P-256 keys: a certificate takes ~10 ms to
 * make. Node can parse X.509 (`X509Certificate`) but not write it; pkijs (with asn1js) writes it.
 */
export const JOB_TLS_ENV = 'SHOAL_JOB_TLS';

/** pkijs's name for a WebCrypto key (the DOM's `CryptoKey`, which Node's types call `webcrypto.CryptoKey`). */
type WebKey = Parameters<Certificate['sign']>[0];

/** How long a made certificate is valid (a job longer than this needs a new launch). */
const VALIDITY_DAYS = 30;

export class JobTls {
  readonly #key: KeyObject;
  readonly #der: Buffer;
  /** The certificate, PEM. */
  readonly cert: string;
  /** Its SHA-256 fingerprint as Node prints it (`AB:CD:...`): what every peer pins. */
  readonly fingerprint: string;
  /** One secure context per job: every socket shares it (and its session cache). */
  readonly #context: tls.SecureContext;

  private constructor(der: Buffer, key: KeyObject, where: string) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(der);
    } catch (e) {
      throw Errors.config(where, `is not a DER X.509 certificate: ${(e as Error).message}`);
    }
    if (!cert.checkPrivateKey(key)) throw Errors.config(where, 'holds a key that does not belong to its certificate');
    this.#der = der;
    this.#key = key;
    this.cert = cert.toString();
    this.fingerprint = cert.fingerprint256;
    this.#context = tls.createSecureContext({ key: key.export({ format: 'pem', type: 'pkcs8' }), cert: this.cert, minVersion: 'TLSv1.3' });
  }

  /** A new certificate and key for job `jobId` (what launchers call once per job). */
  static async generate(jobId: string): Promise<JobTls> {
    const { der, pkcs8 } = await selfSignedCertificate(jobId, randomBytes(SERIAL_BYTES));
    return new JobTls(der, createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }), 'generated certificate');
  }

  /** From the one-line form `childEnv` writes (`SHOAL_JOB_TLS`). Throws ERR_CONFIG naming the variable. */
  static fromLine(line: string, where = JOB_TLS_ENV): JobTls {
    const m = typeof line === 'string' ? /^([A-Za-z0-9+/=]+)\.([A-Za-z0-9+/=]+)$/.exec(line.trim()) : null;
    if (!m) throw Errors.config(where, 'must be a base64 DER certificate and a base64 PKCS#8 key joined by "."');
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: Buffer.from(m[2]!, 'base64'), format: 'der', type: 'pkcs8' });
    } catch (e) {
      throw Errors.config(where, `holds no PKCS#8 private key: ${(e as Error).message}`);
    }
    return new JobTls(Buffer.from(m[1]!, 'base64'), key, where);
  }

  /** From an environment: undefined when `SHOAL_JOB_TLS` is not set (a job without `--tls`). */
  static fromEnv(env: Record<string, string | undefined>): JobTls | undefined {
    const line = env[JOB_TLS_ENV];
    return line === undefined || line === '' ? undefined : JobTls.fromLine(line);
  }

  /** The one line that hands the certificate and key to a child process (environment or stdin, never argv). */
  line(): string {
    const key = this.#key.export({ format: 'der', type: 'pkcs8' });
    return `${this.#der.toString('base64')}.${key.toString('base64')}`;
  }

  /** The environment entry for a child process. */
  childEnv(): Record<string, string> {
    return { [JOB_TLS_ENV]: this.line() };
  }

  /** Throws ERR_AUTH unless `sock`'s peer proved it holds this job's certificate. */
  checkPeer(sock: tls.TLSSocket, where: string): void {
    const peer = sock.getPeerX509Certificate();
    if (!peer) throw Errors.auth(where, 'the peer presented no TLS certificate (is it running without --tls?)');
    if (peer.fingerprint256 !== this.fingerprint) {
      throw Errors.auth(where, `the peer presented TLS certificate ${peer.fingerprint256}, not this job's ${this.fingerprint}`);
    }
  }

  /**
   * Dial: a TLS client socket to `addr` (TCP or a unix socket path). It emits 'secureConnect' when the TLS
   * handshake is done; the caller then calls `checkPeer` before anything else.
   */
  connect(addr: { host: string; port: number } | { path: string }): tls.TLSSocket {
    return tls.connect({ ...addr, secureContext: this.#context, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  }

  /**
   * Accept: run the server side of TLS on an accepted socket and check the client's certificate. Resolves the
   * TLS socket (paused: nothing read beyond the TLS handshake); rejects ERR_AUTH for a peer without the job's
   * certificate or that does not speak TLS, ERR_TIMEOUT after `timeoutMs`. The socket is destroyed on failure.
   */
  accept(sock: net.Socket, where: string, timeoutMs: number): Promise<tls.TLSSocket> {
    const s = new tls.TLSSocket(sock, { isServer: true, secureContext: this.#context, requestCert: true, rejectUnauthorized: false });
    return new Promise<tls.TLSSocket>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        s.off('secure', onSecure);
        s.off('error', onError);
        s.off('close', onClose);
        sock.off('close', onClose);
        if (err) {
          s.on('error', () => {});
          s.destroy();
          reject(err);
        } else resolve(s);
      };
      const onSecure = () => {
        try {
          this.checkPeer(s, where);
        } catch (e) {
          finish(e as Error);
          return;
        }
        s.pause();
        finish();
      };
      const onError = (e: Error) => finish(Errors.auth(where, tlsFailure(e)));
      const onClose = () => finish(Errors.auth(where, 'the peer closed the connection during the TLS handshake'));
      const timer = boundedTimeout(() => finish(Errors.timeout(`TLS handshake on ${where}`, timeoutMs)), timeoutMs);
      s.once('secure', onSecure);
      s.on('error', onError);
      s.once('close', onClose);
      sock.once('close', onClose); // the listener closed the accepted socket
      sock.resume();
    });
  }

  /** A printable form that never shows the key. */
  toString(): string {
    return `JobTls(${this.fingerprint})`;
  }
  toJSON(): { fingerprint: string } {
    return { fingerprint: this.fingerprint };
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

/** Random bytes of a certificate's serial number (RFC 5280: at most 20 octets). */
const SERIAL_BYTES = 16;

/**
 * The serial number made of `random` (SERIAL_BYTES bytes): a positive INTEGER (top bit cleared) in its minimal
 * DER form (next bit set, so never a leading 0x00 octet: OpenSSL refuses to parse a certificate whose serial
 * has a needless one, and clearing the top bit alone made 1 serial in 256 start 0x00 0x00-0x7f). 126 random bits.
 */
export function certificateSerial(random: Uint8Array): Uint8Array {
  if (random.byteLength !== SERIAL_BYTES) throw Errors.invalidArg('random', `must be ${SERIAL_BYTES} bytes, got ${random.byteLength}`);
  const serial = Uint8Array.from(random);
  serial[0] = 0x40 | (serial[0]! & 0x3f);
  return serial;
}

/**
 * A self-signed ECDSA P-256 certificate for job `jobId` whose serial number is made of `random`
 * (`certificateSerial`), and its key: DER certificate, PKCS#8 key. What `JobTls.generate` makes.
 */
export async function selfSignedCertificate(jobId: string, random: Uint8Array): Promise<{ der: Buffer; pkcs8: Buffer }> {
  const engine = new CryptoEngine({ name: 'node', crypto: webcrypto as unknown as ConstructorParameters<typeof CryptoEngine>[0]['crypto'] });
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const c = new Certificate();
  c.version = 2; // X.509 v3
  c.serialNumber = new asn1js.Integer({ valueHex: certificateSerial(random) });
  const cn = () => new AttributeTypeAndValue({ type: '2.5.4.3', value: new asn1js.Utf8String({ value: `shoal job ${jobId.slice(0, 48)}` }) });
  c.issuer.typesAndValues.push(cn());
  c.subject.typesAndValues.push(cn());
  const now = Date.now();
  c.notBefore.value = new Date(now - 60_000); // clocks of a cluster's hosts differ a little
  c.notAfter.value = new Date(now + VALIDITY_DAYS * 86_400_000);
  await c.subjectPublicKeyInfo.importKey(keys.publicKey as unknown as WebKey, engine);
  await c.sign(keys.privateKey as unknown as WebKey, 'SHA-256', engine);
  const der = Buffer.from(c.toSchema().toBER(false));
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { der, pkcs8 };
}

/** One line for a failed TLS handshake (OpenSSL's messages carry a source path). */
function tlsFailure(e: Error): string {
  const x = e as Error & { code?: string; reason?: string };
  if (x.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || x.code === 'ERR_SSL_HTTP_REQUEST') return 'the peer does not speak TLS (a process of the job without --tls, or not a shoal peer)';
  return `TLS handshake failed: ${x.reason ?? x.message.split('\n')[0]}`;
}
