// Times one compression in the page (run by `cargo xtask bench --only web`, which builds and serves
// the page): open the file, measure (phase "estimated"), compress (phase "done"), on the backend
// asked for. Prints one JSON line: {backend, adapter, seconds, measure_seconds, encode_seconds,
// bytes, bits_per_weight, rel_mse} or {status: "failed: ..."} / {status: "stopped: ..."}.
//
// node bench.mjs --url=http://127.0.0.1:PORT/ --file=PATH --backend=cpu|gpu --bpw=4
//                [--limit=SECONDS] [--chromium=PATH]

import { launch } from './chromium.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const [k, ...v] = a.replace(/^--/, '').split('=');
  return [k, v.length ? v.join('=') : true];
}));
const limitMs = 1000 * Number(args.limit || 3600);

const browser = await launch(args.chromium || undefined);
let result;
let page;
try {
  page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(args.url);
  await page.waitForFunction(() => document.body.dataset.phase === 'ready', null, { timeout: 60_000 });
  await page.evaluate(() => { delete document.getElementById('backend-status').dataset.used; });
  await page.selectOption('#backend-choice', args.backend);
  await page.waitForFunction(() => document.getElementById('backend-status').dataset.used, null, { timeout: 300_000 });
  const used = await page.evaluate(() => document.getElementById('backend-status').dataset.used);
  const adapter = await page.textContent('#backend-status');
  if (used !== args.backend) throw new Error(`the page refused ${args.backend}: ${adapter}`);
  const phaseIn = (want, timeout) => page.waitForFunction((w) => w.includes(document.body.dataset.phase),
    want, { timeout, polling: 200 });
  const t0 = Date.now();
  await page.setInputFiles('#file-input', args.file);
  await phaseIn(['estimated', 'error'], limitMs);
  const t1 = Date.now();
  const phase = () => page.evaluate(() => document.body.dataset.phase);
  if (await phase() !== 'estimated') throw new Error(await page.textContent('#error'));
  // The budget: re-allocation from the measurement, instant (not timed apart).
  await page.fill('#bpw', String(args.bpw || 4));
  await page.dispatchEvent('#bpw', 'input');
  await page.waitForTimeout(500);
  await phaseIn(['estimated'], 60_000);
  const t2 = Date.now();
  await page.click('#compress');
  await phaseIn(['done', 'error'], Math.max(1000, limitMs - (t1 - t0)));
  const t3 = Date.now();
  if (await phase() !== 'done') throw new Error(await page.textContent('#error'));
  const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
  if (report.backend.used !== args.backend || report.backend.fallback) {
    throw new Error(`ran on ${report.backend.used} (fallback: ${report.backend.fallback})`);
  }
  if (errors.length) throw new Error(errors.join('; '));
  result = {
    status: 'ok',
    backend: args.backend,
    adapter,
    seconds: (t1 - t0 + t3 - t2) / 1000,
    measure_seconds: (t1 - t0) / 1000,
    encode_seconds: (t3 - t2) / 1000,
    bytes: report.output.bytes,
    bits_per_weight: report.output.bits_per_weight,
    rel_mse: report.output.rel_mse_2d,
  };
} catch (e) {
  const msg = String((e && e.message) || e).split('\n')[0];
  if (/Timeout/.test(msg)) {
    // How far it got: the page's own progress line.
    const where = page ? await page.textContent('#progress-text').catch(() => '') : '';
    result = { status: `stopped: over the ${limitMs / 1000} s limit (page said: ${where.trim()})` };
  } else {
    result = { status: `failed: ${msg}` };
  }
}
await browser.close();
console.log(JSON.stringify(result));
