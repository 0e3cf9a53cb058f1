// Times the page's model runtime (run by `cargo xtask bench --only runtime-web`, which builds and
// serves the page): a `.lowbit` is opened by itself, its Try-it panel loads the model in the worker
// and runs it, `--repeat` times on the chosen runtime backend. Encoders embed the sentences of
// `--sentences` (one per line); decoders generate `--tokens` tokens greedily from `--prompt`.
// Prints one JSON line: {status: "ok", family, backend, load_seconds, seconds: [...],
// tokens_per_second: [...] (decoders), sentences (encoders)} or {status: "failed: ..."}.
//
// node bench_tryit.mjs --url=http://127.0.0.1:PORT/ --file=MODEL.lowbit --backend=cpu|webgpu
//                      [--sentences=FILE] [--prompt=TEXT --tokens=N] [--repeat=3] [--limit=SECONDS]
//                      [--chromium=PATH]

import fs from 'node:fs';
import { launch } from './chromium.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const [k, ...v] = a.replace(/^--/, '').split('=');
  return [k, v.length ? v.join('=') : true];
}));
const limitMs = 1000 * Number(args.limit || 1800);
const repeat = Math.max(1, Number(args.repeat || 3));

const browser = await launch(args.chromium || undefined);
let result;
let page;
try {
  page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(args.url);
  await page.waitForFunction(() => document.body.dataset.phase === 'ready', null, { timeout: 60_000 });
  const phaseIn = (want) => page.waitForFunction((w) => w.includes(document.body.dataset.phase),
    want, { timeout: limitMs, polling: 200 });
  const failIfError = async (want) => {
    const phase = await page.evaluate(() => document.body.dataset.phase);
    if (phase !== want) throw new Error(await page.textContent('#error'));
  };
  await page.setInputFiles('#file-input', args.file);
  await phaseIn(['opened', 'error']);
  await failIfError('opened');
  await page.selectOption('#try-backend', args.backend);
  const encoder = await page.isVisible('#try-encoder');
  const seconds = [];
  const tokensPerSecond = [];
  let sentences = 0;
  let backendUsed = '';
  for (let i = 0; i < repeat; i++) {
    if (encoder) {
      const lines = fs.readFileSync(args.sentences, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
      await page.fill('#try-sentences', lines.join('\n'));
      await page.click('#try-embed');
      await phaseIn(['embedded', 'error']);
      await failIfError('embedded');
      const d = await page.evaluate(() => ({ ...document.getElementById('try-embed-status').dataset }));
      seconds.push(Number(d.seconds));
      backendUsed = d.backend;
      sentences = lines.length;
    } else {
      await page.fill('#try-prompt', args.prompt || 'The capital of France is');
      await page.fill('#try-max-tokens', String(args.tokens || 128));
      await page.fill('#try-temperature', '0');
      await page.click('#try-generate');
      await phaseIn(['generated', 'error']);
      await failIfError('generated');
      const d = await page.evaluate(() => ({ ...document.getElementById('gen-compressed-stats').dataset }));
      tokensPerSecond.push(Number(d.tokensPerSecond));
      seconds.push(Number(d.tokens) / Number(d.tokensPerSecond));
      backendUsed = d.backend;
    }
  }
  if (errors.length) throw new Error(errors.join('; '));
  result = {
    status: 'ok',
    family: encoder ? 'encoder' : 'decoder',
    backend: backendUsed,
    load_seconds: Number(await page.getAttribute('#try-models', 'data-seconds')),
    seconds,
    ...(encoder ? { sentences } : { tokens_per_second: tokensPerSecond }),
  };
} catch (e) {
  const msg = String((e && e.message) || e).split('\n')[0];
  result = { status: /Timeout/.test(msg) ? `stopped: over the ${limitMs / 1000} s limit` : `failed: ${msg}` };
}
await browser.close();
console.log(JSON.stringify(result));
