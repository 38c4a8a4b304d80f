#!/usr/bin/env node
/**
 * A new TLS identity for a job launched from Spark with `tls=True` (python/shoal_spark): the driver runs
 *
 *   node run/dist/launcher/job-tls.js <job id>
 *
 * and reads one line from stdout, the job's certificate and key in the form `SHOAL_JOB_TLS` takes (see core's
 * security/job-tls.ts). The driver then hands it to rank 0's store and every worker in their environment, as it
 * does the job secret; it is never on a command line or in a log.
 */
import { JobTls } from '@shoal/core';

const jobId = process.argv[2];
if (!jobId) {
  process.stderr.write('job-tls: usage: job-tls.js <job id>\n');
  process.exit(2);
}
const tls = await JobTls.generate(jobId);
process.stdout.write(`${tls.line()}\n`);
