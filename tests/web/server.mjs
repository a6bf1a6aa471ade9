// Starts `metharme serve` on a free port for a test and stops it afterwards.
import { spawn } from 'node:child_process';
import path from 'node:path';

export const BIN = process.env.METHARME_BIN || path.resolve('../../build/metharme');
export const SHARED = process.env.METHARME_SHARED || path.resolve('../../../shared');
export const fixture = (rel) => path.join(SHARED, 'fixtures', rel);

// Resolves when the server answers /health; the result has url, port and stop().
export async function startServer(args) {
  const child = spawn(BIN, ['serve', '--port', '0', '-t', '1', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no port reported:\n' + log)), 60000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    exited.then(({ code }) => reject(new Error(`server exited with ${code}:\n${log}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; ++i) {
    const ok = await fetch(url + '/health').then((r) => r.ok).catch(() => false);
    if (ok) break;
    if (i > 600) throw new Error('server never became ready:\n' + log);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    port,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      const { code } = await exited;
      if (code !== 0) throw new Error(`server exited with ${code}:\n${log}`);
    },
  };
}
