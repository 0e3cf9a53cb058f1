// Browser tests of lowbit's page (run by `cargo xtask test-web`, which builds and serves the page):
// Debian's Chromium driven by playwright-core. Each test is what a person does: drop a file, pick
// settings, compress on WebGPU and on the CPU, download, check the download with the native CLI,
// drop a corrupt file, cancel a run. Every request must stay on 127.0.0.1; no console errors.
// Screenshots go to --out for a person to look at.
//
// node run.mjs --url=http://127.0.0.1:PORT/ --cli=PATH/lowbit --out=DIR [--chromium=PATH] [--big]
//   [--only=REGEX] (only the tests whose names match, each after the page's start; a test may rely
//   on state an earlier one left, so run the tests that come before it too)

import { launch } from './chromium.mjs';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const [k, ...v] = a.replace(/^--/, '').split('=');
  return [k, v.length ? v.join('=') : true];
}));
const URL_ = args.url;
const CLI = args.cli;
const OUT = args.out;
const origin = new URL(URL_).origin;
fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });

// --- generated inputs -------------------------------------------------------------------------

/// A safetensors file of f32 tensors `[{name, shape, values(i) }]`.
function safetensors(file, tensors) {
  const header = {};
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * n] };
    offset += 4 * n;
  }
  header.__metadata__ = { generator: 'lowbit browser test' };
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const data = Buffer.alloc(offset);
  let at = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < n; i++, at += 4) data.writeFloatLE(t.values(i), at);
  }
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), data]));
}

/// Deterministic pseudo-random numbers (xorshift), roughly normal by summing uniforms.
function rng(seed) {
  let s = seed >>> 0 || 1;
  const u = () => { s ^= s << 13; s >>>= 0; s ^= s >> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
  return () => u() + u() + u() + u() - 2;
}

/// A small model: low-rank-plus-noise matrices (so every codec has something to find), a bias.
function modelTensors(rows, cols, layers) {
  const out = [];
  for (let l = 0; l < layers; l++) {
    const r = rng(17 + l);
    const a = Array.from({ length: rows * 4 }, r);
    const b = Array.from({ length: cols * 4 }, r);
    out.push({
      name: `layer.${l}.weight`, shape: [rows, cols],
      values: (i) => {
        const y = Math.floor(i / cols); const x = i % cols;
        let v = 0;
        for (let k = 0; k < 4; k++) v += a[y * 4 + k] * b[x * 4 + k];
        return 0.02 * v + 0.01 * r();
      },
    });
    out.push({ name: `layer.${l}.bias`, shape: [rows], values: () => 0.1 * r() });
  }
  return out;
}

const small = path.join(OUT, 'small-model.safetensors');
safetensors(small, modelTensors(96, 160, 3));
const larger = path.join(OUT, 'larger-model.safetensors');
safetensors(larger, modelTensors(768, 1024, 6));
// A BERT-shaped model of 12 small layers (51 tensors, 0.2 M parameters, in the file's alphabetical
// order: layer 10 before layer 2), for the table's blocks and search.
const blocky = path.join(OUT, 'blocks-model.safetensors');
{
  const r = rng(5);
  const t = (name, shape) => ({ name, shape, values: () => 0.05 * r() });
  const tensors = [t('embeddings.word_embeddings.weight', [128, 64]), t('embeddings.LayerNorm.weight', [64]), t('pooler.dense.weight', [64, 64])];
  for (let l = 0; l < 12; l++) {
    const p = `encoder.layer.${l}.`;
    tensors.push(t(`${p}attention.self.query.weight`, [64, 64]), t(`${p}attention.output.dense.weight`, [64, 64]),
      t(`${p}intermediate.dense.weight`, [128, 64]), t(`${p}output.LayerNorm.weight`, [64]));
  }
  safetensors(blocky, tensors.sort((a, b) => (a.name < b.name ? -1 : 1)));
}
const corrupt = path.join(OUT, 'corrupt.safetensors');
{
  // A header that promises more data than the file has.
  const good = fs.readFileSync(small);
  fs.writeFileSync(corrupt, good.subarray(0, good.length - 1000));
}
const fasta = path.join(OUT, 'tiny.fa');
fs.writeFileSync(fasta, '>one\nACGTACGTNNNNacgtACGT\nACG\n>two\n\nGGGCCCAAATTT\n');

// A vector dataset: 3000 rows x 8, two separated clusters, each long along a different axis, so
// that the transform coder's Gaussian mixture codes it better than one Gaussian (and is offered).
const VEC_ROWS = 3000;
const VEC_DIM = 8;
const vectors = path.join(OUT, 'clusters.npy');
{
  const values = new Float32Array(VEC_ROWS * VEC_DIM);
  let x = 7;
  const uniform = () => { x = (x * 1103515245 + 12345) % 2147483648; return (x + 0.5) / 2147483648; };
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  for (let i = 0; i < VEC_ROWS; i++) {
    const c = i % 2;
    for (let j = 0; j < VEC_DIM; j++) {
      const spread = j === c ? 2 : 0.1 + 0.05 * j;
      values[i * VEC_DIM + j] = (c ? 3 : -3) + spread * normal();
    }
  }
  writeNpyF32(vectors, values, [VEC_ROWS, VEC_DIM]);
}

// --- reading safetensors back (to check the page's error figures) --------------------------

/** A little-endian f32 .npy (format 1.0, C order). */
function writeNpyF32(file, values, shape) {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}), }`;
  while ((10 + dict.length + 1) % 64) dict += ' ';
  dict += '\n';
  const head = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(head);
  head[6] = 1; head[7] = 0;
  head.writeUInt16LE(dict.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(dict, 'latin1'), Buffer.from(values.buffer)]));
}

/** The shape and f32 values of a .npy written by lowbit (format 1.0, '<f4'). */
function readNpyF32(file) {
  const buf = fs.readFileSync(file);
  const len = buf.readUInt16LE(8);
  const dict = buf.subarray(10, 10 + len).toString('latin1');
  assert.match(dict, /'descr': '<f4'/);
  const shape = dict.match(/'shape': \(([^)]*)\)/)[1].split(',').map((d) => d.trim()).filter(Boolean).map(Number);
  const data = buf.subarray(10 + len);
  return { shape, values: new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)) };
}

function readF32Tensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString());
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    assert.equal(t.dtype, 'F32');
    const start = 8 + n + t.data_offsets[0];
    const count = (t.data_offsets[1] - t.data_offsets[0]) / 4;
    out[name] = { shape: t.shape, values: Float64Array.from({ length: count }, (_, i) => buf.readFloatLE(start + 4 * i)) };
  }
  return out;
}

/// Sum of squared errors over sum of squares, over the 2-D tensors (the report's rel_mse_2d).
function relMse2d(originalFile, restoredFile) {
  const a = readF32Tensors(originalFile);
  const b = readF32Tensors(restoredFile);
  let err = 0; let norm = 0;
  for (const [name, t] of Object.entries(a)) {
    if (t.shape.length !== 2) continue;
    const r = b[name].values;
    t.values.forEach((v, i) => { err += (v - r[i]) ** 2; norm += v * v; });
  }
  return err / norm;
}

function cli(...argv) {
  return execFileSync(CLI, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

// --- the browser ------------------------------------------------------------------------------

const browser = await launch(args.chromium || undefined);
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 900 } });
const offsite = [];
const consoleErrors = [];
await context.route('**/*', (route) => {
  const u = route.request().url();
  if (u.startsWith(origin) || u.startsWith('blob:') || u.startsWith('data:')) return route.continue();
  offsite.push(u);
  return route.abort();
});
// Every request the page or its workers make (the Try-it flow checks its own share).
const requests = [];
context.on('request', (r) => requests.push({ url: r.url(), method: r.method() }));
// Content-Security-Policy violations, reported by the pages themselves (`securitypolicyviolation`;
// `main`: in the page the tests drive, not a second tab).
const cspViolations = [];
await context.exposeBinding('lowbitCspViolation', ({ page: from }, text) => cspViolations.push({ main: from === page, text }));
await context.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    window.lowbitCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} ${e.sample || ''}`.trim());
  });
});
const page = await context.newPage();
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
page.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`worker: ${m.text()}`); }));

const results = [];
const only = args.only ? new RegExp(args.only, 'i') : null;
async function test(name, body) {
  if (only && !only.test(name)) return;
  const t0 = Date.now();
  try {
    await body();
    results.push({ name, ok: true, seconds: (Date.now() - t0) / 1000 });
    console.log(`ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push({ name, ok: false, error: String(e.stack || e) });
    console.log(`FAIL  ${name}\n${e.stack || e}`);
    await page.screenshot({ path: path.join(OUT, `failed-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
  }
}

const phase = () => page.evaluate(() => document.body.dataset.phase);
async function waitPhase(want, timeout = 600_000) {
  const wants = Array.isArray(want) ? want : [want];
  await page.waitForFunction((w) => w.includes(document.body.dataset.phase), wants, { timeout, polling: 100 });
}
async function chooseBackend(choice, { keepStale = false } = {}) {
  // Forget the old answer first, so that a refused choice fails here with the page's reason
  // instead of timing out.
  await page.evaluate(() => { delete document.getElementById('backend-status').dataset.used; });
  await page.selectOption('#backend-choice', choice);
  await page.waitForFunction(() => document.getElementById('backend-status').dataset.used, null, { timeout: 120_000 });
  const used = await page.evaluate(() => document.getElementById('backend-status').dataset.used);
  if (choice !== 'auto') assert.equal(used, choice, await page.textContent('#backend-status'));
  // A long measurement is not redone for the new backend without asking: the tests ask.
  if (!keepStale && await phase() === 'stale') await page.click('#remeasure');
}
async function drop(file) {
  await page.setInputFiles('#file-input', file);
}
async function setBpw(bpw) {
  await page.fill('#bpw', String(bpw));
  await page.dispatchEvent('#bpw', 'input');
  await waitPhase('estimated');
}
async function downloadOf(selectorOrLocator, name) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(selectorOrLocator)]);
  const to = path.join(OUT, name || dl.suggestedFilename());
  await dl.saveAs(to);
  return to;
}
async function shownFigures() {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#result-figures tr')]
    .map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent])));
}

/// Compresses the open checkpoint at 4 bpw, downloads the .lowbit, checks it with the CLI.
async function compressAndCheck(tag, backendUsed) {
  await setBpw(4);
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
  assert.equal(report.backend.used, backendUsed, `kernels ran on ${report.backend.used}`);
  assert.equal(report.backend.fallback, undefined, `the GPU fell back: ${report.backend.fallback}`);
  const shown = await shownFigures();
  const lowbitFile = await downloadOf('#downloads a[download$=".lowbit"]', `small-model.${tag}.lowbit`);
  // The native CLI reads it: bits per weight as the page showed, and it decompresses.
  const inspect = JSON.parse(cli('inspect', '--json', lowbitFile));
  const size = fs.statSync(lowbitFile).size;
  assert.equal(size, report.output.bytes, 'downloaded size = reported size');
  assert.ok(Math.abs(inspect.bits_per_weight - Number(shown['bits per weight'])) < 1e-3,
    `CLI says ${inspect.bits_per_weight} bpw, the page showed ${shown['bits per weight']}`);
  assert.ok(inspect.bits_per_weight <= 4.0, `${inspect.bits_per_weight} bpw over the budget`);
  const restored = path.join(OUT, `small-model.${tag}.cli-restored.safetensors`);
  cli('decompress', lowbitFile, '-o', restored);
  const err = relMse2d(small, restored);
  const pageErr = Number(shown['relative MSE (2-D float tensors)']);
  assert.ok(Math.abs(err - pageErr) <= 1e-3 * pageErr + 1e-12,
    `restored relative MSE ${err} vs the page's ${pageErr}`);
  // The page's own restore gives the same bytes as the CLI's.
  await page.click('#restore');
  await waitPhase(['restored', 'error']);
  const pageRestored = await downloadOf('#restored-link', `small-model.${tag}.page-restored.safetensors`);
  assert.ok(fs.readFileSync(pageRestored).equals(fs.readFileSync(restored)), 'page restore = CLI restore');
  return { lowbitFile, report, bpw: inspect.bits_per_weight, err };
}

await page.goto(URL_);
await waitPhase(['ready', 'error'], 120_000);

await test('the page starts, with a WebGPU adapter offered (SwiftShader)', async () => {
  assert.equal(await phase(), 'ready', await page.textContent('#error'));
  const info = await page.evaluate(() => window.lowbit.call('adapterInfo'));
  assert.ok(info, 'navigator.gpu.requestAdapter() gave no adapter');
  console.log(`      adapter: ${JSON.stringify(info)}`);
  await page.screenshot({ path: path.join(OUT, '01-start.png'), fullPage: true });
});

await test('Content-Security-Policy: a meta tag allowing the page\'s own origin only, which blocks a request elsewhere', async () => {
  const meta = await page.$('meta[http-equiv="Content-Security-Policy"]');
  assert.ok(meta, 'index.html has no Content-Security-Policy meta tag');
  const csp = await meta.getAttribute('content');
  const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([k, ...v]) => [k, v]));
  assert.deepEqual(directives['default-src'], ["'self'"]);
  for (const [name, sources] of Object.entries(directives)) {
    for (const source of sources) {
      assert.ok(!/^(\*|https?:|wss?:|'unsafe-inline'|'unsafe-eval')/.test(source), `${name} allows ${source}`);
    }
  }
  // In a second tab of the same page: a fetch elsewhere is refused by the browser (the route
  // handler, which would record it as off-site, never sees it).
  const other = await context.newPage();
  try {
    await other.goto(URL_);
    const r = await other.evaluate(async () => {
      const seen = new Promise((ok) => document.addEventListener('securitypolicyviolation', (e) => ok(e.violatedDirective), { once: true }));
      let refused = false;
      try { await fetch('http://example.invalid/tracker'); } catch { refused = true; }
      return { refused, directive: await Promise.race([seen, new Promise((ok) => setTimeout(() => ok(null), 2000))]) };
    });
    assert.deepEqual(r, { refused: true, directive: 'connect-src' });
    // ... and the listener that the last test reads saw it (so it would see one in the main tab).
    const deadline = Date.now() + 5000;
    while (!cspViolations.some((v) => !v.main && v.text.startsWith('connect-src')) && Date.now() < deadline) await page.waitForTimeout(100);
    assert.ok(cspViolations.some((v) => !v.main && v.text.includes('example.invalid')), JSON.stringify(cspViolations));
  } finally {
    await other.close();
  }
});

await test('keyboard: the drop zone opens the file picker', async () => {
  // Playwright turns on file-chooser interception asynchronously when the waiter is added; a key
  // press that wins that race opens a native dialog (nothing, headless) and no event comes. So
  // the waiter goes first, and a missed press is tried again (a dead handler fails every try).
  let chooser = null;
  for (let attempt = 0; attempt < 3 && !chooser; attempt++) {
    const waiting = page.waitForEvent('filechooser', { timeout: 3000 }).catch(() => null);
    await page.waitForTimeout(200);
    await page.focus('#drop-zone');
    await page.keyboard.press('Enter');
    chooser = await waiting;
  }
  assert.ok(chooser, 'Enter on the focused drop zone opened no file chooser');
});

await test('mouse: a click on the drop zone opens the file picker (and Space on it)', async () => {
  for (const how of ['click', 'Space']) {
    let chooser = null;
    for (let attempt = 0; attempt < 3 && !chooser; attempt++) {
      const waiting = page.waitForEvent('filechooser', { timeout: 3000 }).catch(() => null);
      await page.waitForTimeout(200);
      if (how === 'click') {
        await page.click('#drop-zone', { position: { x: 8, y: 8 } }); // its padding, not a label
      } else {
        await page.focus('#drop-zone');
        await page.keyboard.press('Space');
      }
      chooser = await waiting;
    }
    assert.ok(chooser, `${how} on the drop zone opened no file chooser`);
    assert.equal(await chooser.element().evaluate((e) => e.id), 'file-input');
  }
});

await test('every WGSL kernel on WebGPU matches the CPU path in the same page', async () => {
  await chooseBackend('gpu');
  assert.match(await page.textContent('#backend-status'), /^Kernels run on WebGPU \(/);
  const rows = await page.evaluate(() => window.lowbit.call('checkKernels'));
  for (const r of rows) console.log(`      ${r.passed ? 'pass' : 'FAIL'} ${r.kernel} ${r.shape}: ${r.worst_ratio.toFixed(3)} of tolerance on ${r.ran_on} ${r.note}`);
  // Each shader in shaders/ is checked: a new kernel without a row in backend::check fails here.
  const checkedBy = {
    'matmul.wgsl': ['matmul', 'gram', 'rsi (randomized SVD)'],
    'kmeans_assign.wgsl': ['k-means assignment'],
    'kmeans_update.wgsl': ['k-means centroid update'],
    'fwht.wgsl': ['rotation (FWHT)'],
    'group_fit.wgsl': ['scalar group fit'],
    'hyper.wgsl': ['hyper nearest codeword'],
    'linear.wgsl': ['linear layer'],
    'norm.wgsl': ['RMSNorm', 'LayerNorm'],
    'elementwise.wgsl': ['element-wise'],
    'rope.wgsl': ['rotary positions'],
    'attention.wgsl': ['attention'],
    'pool.wgsl': ['pooling'],
  };
  const shaders = fs.readdirSync(new URL('../../shaders/', import.meta.url)).filter((f) => f.endsWith('.wgsl'));
  for (const shader of shaders) {
    assert.ok(checkedBy[shader], `${shader} has no row in the kernel check (src/backend/check.rs)`);
    for (const kernel of checkedBy[shader]) {
      assert.ok(rows.some((r) => r.kernel === kernel), `no "${kernel}" row for ${shader}`);
    }
  }
  assert.ok(rows.every((r) => r.passed), 'a kernel is outside its tolerance');
  fs.writeFileSync(path.join(OUT, 'kernels-webgpu.json'), JSON.stringify(rows, null, 1));
});

let gpuRun;
await test('compress on WebGPU, download, check with the native CLI', async () => {
  await chooseBackend('gpu');
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  assert.match(await page.textContent('#summary'), /6 tensors, 46,368 parameters/);
  gpuRun = await compressAndCheck('webgpu', 'gpu');
  await page.screenshot({ path: path.join(OUT, '02-result-webgpu.png'), fullPage: true });
});

let cpuRun;
await test('compress with the CPU forced, download, check with the native CLI', async () => {
  await chooseBackend('cpu');
  await waitPhase(['estimated', 'error']);
  cpuRun = await compressAndCheck('cpu', 'cpu');
  const native = path.join(OUT, 'small-model.native-cpu.lowbit');
  cli('compress', small, '-o', native, '--bpw', '4', '--backend', 'cpu', '--quiet');
  const same = fs.readFileSync(native).equals(fs.readFileSync(cpuRun.lowbitFile));
  console.log(`      wasm CPU ${cpuRun.bpw.toFixed(4)} bpw, rel MSE ${cpuRun.err.toExponential(4)}; native CLI file ${same ? 'byte-identical' : 'differs'}`);
  if (gpuRun) {
    const ratio = gpuRun.report.output.bytes / cpuRun.report.output.bytes;
    assert.ok(Math.abs(ratio - 1) < 0.01, `WebGPU and CPU sizes differ by ${ratio}`);
    assert.ok(Math.abs(gpuRun.err / cpuRun.err - 1) < 0.02, `errors ${gpuRun.err} vs ${cpuRun.err}`);
  }
});

await test('the live estimate follows the slider without measuring again', async () => {
  await setBpw(3);
  const at3 = await page.textContent('#estimate');
  await setBpw(6);
  const at6 = await page.textContent('#estimate');
  assert.notEqual(at3, at6);
  assert.match(at6, /Estimate: .* bits per weight/);
});

await test('the teaching view of a tensor', async () => {
  await page.click('#tensor-table tbody tr[data-tensor="layer.0.weight"]');
  await page.waitForFunction(() => document.querySelectorAll('#teach-charts svg').length >= 4, null, { timeout: 120_000 });
  assert.match(await page.textContent('#teach-caption'), /coded as/);
  await page.locator('#teach').screenshot({ path: path.join(OUT, '03-teaching-view.png') });
});

await test('the tensor table sorts by a column', async () => {
  await page.click('#tensor-table th button:has-text("bits/weight")');
  const values = await page.$$eval('#tensor-table tbody tr td:nth-child(5)', (tds) => tds.map((t) => Number(t.textContent)));
  assert.deepEqual(values, [...values].sort((a, b) => a - b));
});

await test('the tensor table: blocks with their totals, folded when many; search; sorting lists flat; the keyboard', async () => {
  await drop(blocky);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  await setBpw(4);
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
  // A sort chosen before stays for new results; clicking its column until it is none gives the blocks.
  const sorted = '#tensor-table th[aria-sort]:not([aria-sort="none"]) button';
  while (await page.$(sorted)) await page.click(sorted);
  const rows = () => page.$$eval('#tensor-table tbody tr', (trs) => trs.map((tr) => ({
    block: tr.dataset.block, tensor: tr.dataset.tensor, expanded: tr.querySelector('button[aria-expanded]')?.getAttribute('aria-expanded'),
    parameters: Number(tr.dataset.parameters), bits: Number(tr.dataset.bits), worst: Number(tr.dataset.worstError), text: tr.cells[0].textContent })));
  // Twelve blocks, in layer order, folded; the tensors outside any block at the top level.
  let shown = await rows();
  const blocks = shown.filter((r) => r.block);
  assert.deepEqual(blocks.map((r) => r.block), Array.from({ length: 12 }, (_, l) => `encoder.layer.${l}.`));
  assert.ok(blocks.every((r) => r.expanded === 'false'), 'the blocks are not folded');
  assert.deepEqual(shown.filter((r) => r.tensor).map((r) => r.tensor).sort(),
    ['embeddings.LayerNorm.weight', 'embeddings.word_embeddings.weight', 'pooler.dense.weight']);
  // Each block's totals are its tensors' figures in the report.
  for (const b of blocks) {
    const own = report.tensors.filter((t) => t.name.startsWith(b.block));
    assert.equal(own.length, 4);
    assert.equal(b.parameters, own.reduce((s, t) => s + t.parameters, 0), b.block);
    assert.equal(b.bits, own.reduce((s, t) => s + 8 * t.section_bytes, 0), b.block);
    assert.equal(b.worst, Math.max(...own.map((t) => t.rel_error)), b.block);
    assert.match(b.text, /4 tensors/);
  }
  // The keyboard: Enter on a block's toggle opens it, Enter on a tensor's row shows that tensor.
  await page.focus('#tensor-table tr[data-block="encoder.layer.3."] button');
  await page.keyboard.press('Enter');
  assert.equal(await page.getAttribute('#tensor-table tr[data-block="encoder.layer.3."] button', 'aria-expanded'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.closest('tr').dataset.block), 'encoder.layer.3.');
  shown = await rows();
  assert.deepEqual(shown.filter((r) => r.tensor && r.tensor.startsWith('encoder.')).map((r) => r.tensor).sort(),
    report.tensors.map((t) => t.name).filter((n) => n.startsWith('encoder.layer.3.')).sort());
  await page.focus('#tensor-table tr[data-tensor="encoder.layer.3.intermediate.dense.weight"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /^encoder\.layer\.3\.intermediate\.dense\.weight \(128 × 64\): coded as/.test(document.getElementById('teach-caption').textContent), null, { timeout: 120_000 });
  // Search: only the matching tensors, their blocks open, the count said.
  await page.fill('#tensor-filter', 'attention');
  shown = await rows();
  const want = report.tensors.map((t) => t.name).filter((n) => n.includes('attention'));
  assert.deepEqual(shown.filter((r) => r.tensor).map((r) => r.tensor).sort(), [...want].sort());
  assert.equal(shown.filter((r) => r.block).length, 12);
  assert.ok(shown.filter((r) => r.block).every((r) => r.expanded === 'true' && /2 of 4 tensors match/.test(r.text)));
  assert.match(await page.textContent('#tensor-count'), new RegExp(`^${want.length} of ${report.tensors.length} tensors match`));
  await page.fill('#tensor-filter', 'LAYERNORM');
  assert.equal(await page.getAttribute('#tensor-count', 'data-matches'), '13');
  // Sorting lists the matches flat, ranked across blocks; a third click gives the blocks back.
  await page.fill('#tensor-filter', 'attention');
  const sortBy = () => page.click('#tensor-table th button:has-text("parameters")');
  await sortBy();
  shown = await rows();
  assert.ok(shown.every((r) => r.tensor && r.tensor.includes('attention')) && shown.length === want.length);
  await sortBy();
  assert.equal(await page.getAttribute('#tensor-table th:nth-child(3)', 'aria-sort'), 'descending');
  await sortBy();
  assert.equal(await page.getAttribute('#tensor-table th:nth-child(3)', 'aria-sort'), 'none');
  assert.equal((await rows()).filter((r) => r.block).length, 12);
  // Cleared: every tensor again, the blocks folded as at first.
  await page.fill('#tensor-filter', '');
  shown = await rows();
  assert.ok(shown.filter((r) => r.block).every((r) => r.expanded === 'false'));
  assert.equal(shown.filter((r) => r.tensor).length, 3);
  await page.locator('#results').screenshot({ path: path.join(OUT, '03b-tensor-blocks.png') });
});

await test('before and after: the teaching view shows a window of the original and of the restored weights, the .lowbit\'s (checked with the native CLI)', async () => {
  await drop(small);
  await waitPhase(['estimated', 'error']);
  const { lowbitFile } = await compressAndCheck('before-after', await page.evaluate(() => document.getElementById('backend-status').dataset.used));
  const restored = path.join(OUT, 'small-model.before-after.cli-restored.safetensors');
  cli('decompress', lowbitFile, '-o', restored);
  const original = readF32Tensors(small)['layer.0.weight'];
  const back = readF32Tensors(restored)['layer.0.weight'];
  await page.click('#tensor-table tbody tr[data-tensor="layer.0.weight"]');
  await page.waitForSelector('#before-after canvas#heat-error', { timeout: 120_000 });
  const v = await page.evaluate(() => window.lowbit.lastTensorView());
  assert.equal(v.name, 'layer.0.weight');
  const w = v.before_after;
  assert.deepEqual([w.rows, w.cols, w.shown_rows, w.shown_cols], [96, 160, 96, 128]);
  assert.match(await page.textContent('#before-after-window'), /^Rows 1–96 of 96, columns 1–128 of 160 \(the top-left corner\)/);
  // The window's values: the file's originals, and what the native CLI restores from the .lowbit.
  let maxError = 0;
  let differ = 0;
  for (let r = 0; r < w.shown_rows; r++) {
    for (let c = 0; c < w.shown_cols; c++) {
      const o = original.values[r * w.cols + c];
      const b = back.values[r * w.cols + c];
      assert.equal(w.original[r * w.shown_cols + c], o, `original at ${r}, ${c}`);
      assert.equal(w.restored[r * w.shown_cols + c], b, `restored at ${r}, ${c}`);
      maxError = Math.max(maxError, Math.abs(Math.fround(b - o)));
      if (b !== o) differ++;
    }
  }
  assert.ok(differ > 0, 'the restored window equals the original: a lossy code was expected at 4 bpw');
  const figure = await page.evaluate(() => ({ ...document.getElementById('before-after').dataset }));
  assert.equal(Number(figure.maxError), maxError);
  assert.equal(Number(figure.scale), w.scale);
  // Three canvases of one pixel per weight, with real pictures in them: many colours; the
  // restored one close to the original but not the same; the error not blank.
  const pixels = await page.evaluate(() => Object.fromEntries(['heat-original', 'heat-restored', 'heat-error'].map((id) => {
    const c = document.getElementById(id);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return [id, { width: c.width, height: c.height, colours: colours.size, data: Array.from(d) }];
  })));
  for (const [id, p] of Object.entries(pixels)) {
    assert.deepEqual([p.width, p.height], [128, 96], id);
    assert.ok(p.colours > 20, `${id}: ${p.colours} colours`);
  }
  const a = pixels['heat-original'].data; const b = pixels['heat-restored'].data;
  const mean = a.reduce((s, x, i) => s + Math.abs(x - b[i]), 0) / a.length;
  assert.ok(mean > 0 && mean < 40, `original and restored pixels differ by ${mean} on average`);
  await page.locator('#teach').screenshot({ path: path.join(OUT, '03c-before-after.png') });
});

await test('a corrupt file shows a clear error and the page stays usable', async () => {
  await drop(corrupt);
  await waitPhase('error');
  const message = await page.textContent('#error');
  assert.match(message, /corrupt\.safetensors/);
  assert.match(message, /past the end|truncated|beyond|outside/i);
  await page.screenshot({ path: path.join(OUT, '04-error.png'), fullPage: true });
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated');
});

await test('errors: a broken file is named once; a bad budget is worded for the page, not the CLI', async () => {
  await drop(corrupt);
  await waitPhase('error');
  const message = await page.textContent('#error');
  assert.equal(message.split('corrupt.safetensors').length - 1, 1, `the file is named more than once: ${message}`);
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  await setBpw(0);
  const estimate = await page.textContent('#estimate');
  assert.doesNotMatch(estimate, /--bpw|invalid option/, estimate);
  assert.match(estimate, /^Bits per weight must be a positive number, got 0/);
  await setBpw(4);
  assert.match(await page.textContent('#estimate'), /^Estimate: /);
});

await test('cancel stops a run within a second and leaves the page usable', async () => {
  await drop(larger);
  await waitPhase(['measuring', 'estimated']);
  await page.waitForFunction(() => document.getElementById('progress-text').textContent.length > 0, null, { timeout: 60_000 });
  const t0 = Date.now();
  await page.click('#cancel');
  await page.waitForFunction(() => document.body.dataset.phase !== 'measuring', null, { timeout: 1000 });
  const stopped = Date.now() - t0;
  await waitPhase('cancelled', 60_000);
  console.log(`      stopped ${stopped} ms after the click; usable again ${Date.now() - t0} ms after`);
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated');
});

await test('"Cancelled" goes when a later run finishes', async () => {
  await drop(larger);
  await waitPhase(['measuring', 'estimated']);
  await page.waitForFunction(() => document.getElementById('progress-text').textContent.length > 0, null, { timeout: 60_000 });
  await page.click('#cancel');
  await waitPhase('cancelled', 60_000);
  assert.match(await page.textContent('#estimate'), /^Cancelled/);
  // Compress straight away (scalar alone: a quick run of the larger file); the method is set
  // without a change event, so that no measurement replaces the note first.
  await page.evaluate(() => { document.getElementById('method').value = 'scalar'; });
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  assert.doesNotMatch(await page.textContent('#estimate'), /Cancelled/);
  await page.evaluate(() => { document.getElementById('method').value = 'auto'; });
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
});

await test('an override error is shown next to the overrides and goes once they are fixed', async () => {
  await page.fill('#overrides', 'layer.*=banana');
  await page.dispatchEvent('#overrides', 'change');
  await waitPhase(['error', 'estimated']);
  assert.equal(await phase(), 'error');
  const shown = await page.evaluate(() => {
    const e = document.getElementById('overrides-error');
    return { text: e.textContent, hidden: e.hidden, next: document.getElementById('overrides').closest('label').nextElementSibling === e,
      invalid: document.getElementById('overrides').getAttribute('aria-invalid'), top: document.getElementById('error').hidden };
  });
  assert.ok(!shown.hidden && shown.next, 'the override error is not next to the field');
  assert.match(shown.text, /^Override 'layer\.\*=banana'/);
  assert.equal(shown.invalid, 'true');
  assert.ok(shown.top, 'the override error is also shown at the top');
  await page.fill('#overrides', 'layer.0.*=8');
  await page.dispatchEvent('#overrides', 'change');
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#overrides-error'));
  assert.ok(await page.isHidden('#overrides-error'), 'the fixed override\'s error is still shown');
  assert.ok(await page.isHidden('#error'));
  assert.equal(await page.getAttribute('#overrides', 'aria-invalid'), null);
  await page.fill('#overrides', '');
  await page.dispatchEvent('#overrides', 'change');
  await waitPhase(['estimated', 'error']);
});

await test('a link\'s settings (#...) fill the form on load', async () => {
  const other = await context.newPage();
  const errors = [];
  other.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  try {
    await other.goto(`${URL_}#max-error=0.02&method=scalar&keep=layer.0.*%3D8&keep=layer.1.*%3Dlossless&allocator=greedy&seed=7&backend=cpu`);
    await other.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.phase), null, { timeout: 120_000 });
    const form = await other.evaluate(() => {
      const v = (id) => document.getElementById(id).value;
      return {
        target: document.querySelector('input[name=target]:checked').value, maxError: v('max-error'), method: v('method'),
        overrides: v('overrides'), allocator: v('allocator'), seed: v('seed'), backend: v('backend-choice'),
        used: document.getElementById('backend-status').dataset.used, errorRow: !document.getElementById('error-row').hidden,
      };
    });
    assert.deepEqual(form, { target: 'error', maxError: '0.02', method: 'scalar', overrides: 'layer.0.*=8\nlayer.1.*=lossless',
      allocator: 'greedy', seed: '7', backend: 'cpu', used: 'cpu', errorRow: true });
    assert.deepEqual(errors, []);
  } finally {
    await other.close();
  }
});

await test('the URL follows the settings; "Copy as CLI command" gives the same run to the native CLI', async () => {
  // small-model.safetensors is open, the CPU forced (above).
  try {
    await setBpw(6);
    await page.selectOption('#allocator', 'greedy');
    await waitPhase('estimated');
    await page.fill('#seed', '5');
    await page.dispatchEvent('#seed', 'change');
    await waitPhase(['estimated', 'error']);
    await page.fill('#overrides', 'layer.0.*=8');
    await page.dispatchEvent('#overrides', 'change');
    await waitPhase(['estimated', 'error']);
    assert.equal(await phase(), 'estimated', await page.textContent('#error'));
    const want = { bpw: '6', method: 'auto', keep: 'layer.0.*=8', allocator: 'greedy', seed: '5', backend: 'cpu' };
    const wantHash = `#${new URLSearchParams(want)}`;
    await page.waitForFunction((h) => location.hash === h, wantHash, { timeout: 5000 })
      .catch(async () => assert.fail(`the URL's hash is ${await page.evaluate(() => location.hash)}, not ${wantHash}`));
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    await page.click('#copy-cli');
    await page.waitForFunction(() => document.getElementById('cli-command').dataset.copied, null, { timeout: 5000 });
    const command = await page.inputValue('#cli-command');
    assert.equal(command, "lowbit compress small-model.safetensors -o small-model.lowbit --bpw 6 --method auto --keep 'layer.0.*=8' --allocator greedy --seed 5 --backend cpu");
    assert.ok(await page.isVisible('#cli-command'));
    const copied = await page.getAttribute('#cli-command', 'data-copied');
    if (copied === 'true') assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command);
    console.log(`      clipboard ${copied === 'true' ? 'written and read back' : 'refused: the text field shows the command'}`);
    // The command as a shell runs it, next to the same file name: the native CLI takes every flag.
    const out = path.join(OUT, 'small-model.lowbit');
    fs.rmSync(out, { force: true });
    execFileSync('bash', ['-c', `"$LOWBIT" ${command.slice('lowbit '.length)} --quiet`], { cwd: OUT, env: { ...process.env, LOWBIT: CLI } });
    assert.ok(JSON.parse(cli('inspect', '--json', out)).bits_per_weight <= 6);
  } finally {
    // Back to the defaults for the tests below (which compare with the CLI's defaults).
    await page.fill('#overrides', '');
    await page.dispatchEvent('#overrides', 'change');
    await waitPhase(['estimated', 'error']);
    await page.selectOption('#allocator', 'knapsack');
    await page.fill('#seed', '0');
    await page.dispatchEvent('#seed', 'change');
    await waitPhase(['estimated', 'error']);
    await setBpw(4);
  }
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
});

await test('a FASTA file is compressed losslessly and restored byte for byte', async () => {
  await drop(fasta);
  await waitPhase(['estimated', 'error']);
  assert.match(await page.textContent('#summary'), /: fasta file, /);
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const lowbitFile = await downloadOf('#downloads a[download$=".lowbit"]', 'tiny.lowbit');
  const restored = path.join(OUT, 'tiny.cli-restored.fa');
  cli('decompress', lowbitFile, '-o', restored);
  assert.ok(fs.readFileSync(restored).equals(fs.readFileSync(fasta)));
  // What applies to a sequence file: bits per byte and per residue, its records; no weights.
  const shown = await shownFigures();
  assert.equal(shown['bits per weight'], undefined);
  assert.match(shown['bits per input byte'], /^\d/);
  assert.equal(shown['records, residues'], '2, 35');
  const records = await page.$$eval('#tensor-table tbody tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
  assert.deepEqual(records, ['one', 'two']);
});

await test('first visit: a real genome one click away, served by the page itself, coded losslessly', async () => {
  const requestsBefore = requests.length;
  await page.click('#try-genome');
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  assert.match(await page.textContent('#summary'), /^lambda\.fa: fasta file, /);
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const lowbitFile = await downloadOf('#downloads a[download$=".lowbit"]', 'lambda.lowbit');
  const restored = path.join(OUT, 'lambda.cli-restored.fa');
  cli('decompress', lowbitFile, '-o', restored);
  assert.ok(fs.readFileSync(restored).equals(fs.readFileSync(new URL('../../www/examples/lambda.fa', import.meta.url))));
  const shown = await shownFigures();
  assert.equal(shown['records, residues'], '1, 48,502');
  // Below 2 bits per base (a real genome, not uniform letters).
  assert.ok(Number(shown['bits per base (the bases\' stream)']) < 2, JSON.stringify(shown));
  assert.ok(requests.slice(requestsBefore).some((r) => r.url === `${origin}/examples/lambda.fa`));
  assertNoRequestOffOrigin(requestsBefore);
});

await test('a text file says what applies to it (no "0 records")', async () => {
  const text = path.join(OUT, 'notes.txt');
  fs.writeFileSync(text, 'hello world, this is a text file\nwith two lines\n');
  await drop(text);
  await waitPhase(['estimated', 'error']);
  const summary = await page.textContent('#summary');
  assert.match(summary, /^notes\.txt: text file, /);
  assert.doesNotMatch(summary, /0 records|0 residues/);
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  assert.equal((await shownFigures())['bits per weight'], undefined);
  assert.match(await page.textContent('#tensors-title'), /^Records: none/);
});

await test('a vector dataset (.npy) is compressed, the Gaussian mixture among its options, and restored by the native CLI', async () => {
  // The backend is still the CPU, forced by the test above.
  await drop(vectors);
  await waitPhase(['estimated', 'error']);
  await setBpw(2);
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
  // The "why" column names the same relative MSE as the summary (not the recall distortion).
  const why = await page.textContent('#tensor-table tbody tr td:last-child');
  const named = why.match(/rel\. MSE ([-\d.e+]+)/);
  assert.ok(named, why);
  assert.ok(Math.abs(Number(named[1]) - report.output.rel_mse_lossy) <= 1e-3 * report.output.rel_mse_lossy,
    `the why column says rel. MSE ${named[1]}, the summary ${report.output.rel_mse_lossy}: ${why}`);
  assert.match(why, /recall@10 [\d.]+/);
  // The rate-distortion chart's curve and its chosen point are both in the allocator's measure.
  assert.match(await page.textContent('#charts figure:nth-child(3) svg'), /1 - recall@10/);
  const labels = report.vectors.options.map((o) => o.label);
  assert.ok(labels.some((l) => l.includes('mixture')), `no mixture option among ${labels.length}`);
  const lowbitFile = await downloadOf('#downloads a[download$=".lowbit"]', 'clusters.lowbit');
  const size = fs.statSync(lowbitFile).size;
  assert.ok(8 * size <= 2 * VEC_ROWS * VEC_DIM, `${size} bytes over the 2 bits/value budget`);
  const restored = path.join(OUT, 'clusters.cli-restored.npy');
  cli('decompress', lowbitFile, '-o', restored);
  const original = readNpyF32(vectors).values;
  const back = readNpyF32(restored);
  assert.deepEqual(back.shape, [VEC_ROWS, VEC_DIM]);
  let err = 0; let norm = 0;
  original.forEach((v, i) => { err += (v - back.values[i]) ** 2; norm += v * v; });
  assert.ok(Math.abs(err / norm - report.output.rel_mse_lossy) <= 1e-3 * report.output.rel_mse_lossy + 1e-12,
    `restored relative MSE ${err / norm} vs the page's ${report.output.rel_mse_lossy}`);
  // The native CLI, same options: the same choice, so a file within 1% of the page's.
  const native = path.join(OUT, 'clusters.native.lowbit');
  cli('compress', vectors, '-o', native, '--bpw', '2', '--backend', 'cpu', '--quiet');
  const nativeSize = fs.statSync(native).size;
  assert.ok(Math.abs(nativeSize - size) <= 0.01 * size, `native ${nativeSize} bytes, page ${size}`);
  console.log(`      ${size} bytes (${(8 * size / (VEC_ROWS * VEC_DIM)).toFixed(3)} bits/value) on ${report.backend.used}, chosen ${report.tensors[0].label}; native CLI ${nativeSize} bytes`);
});

await test('phone width: nothing wider than the screen', async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  await drop(small);
  await waitPhase(['estimated', 'error']);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(OUT, '05-phone.png'), fullPage: true });
  assert.ok(overflow <= 1, `page is ${overflow} px wider than a phone screen`);
  await page.setViewportSize({ width: 1200, height: 900 });
});

// --- issue 17: progress, a second file, first visit, backend wording, layout -------------------

/// Every text the progress line shows from now on (a MutationObserver in the page).
async function recordProgress() {
  await page.evaluate(() => {
    window.lowbitProgressSeen = [];
    if (window.lowbitProgressObserver) window.lowbitProgressObserver.disconnect();
    const line = document.getElementById('progress-text');
    window.lowbitProgressObserver = new MutationObserver(() => window.lowbitProgressSeen.push(line.textContent));
    window.lowbitProgressObserver.observe(line, { childList: true, characterData: true, subtree: true });
  });
}

await test('progress: the tensor being worked on (n of m), the time left as soon as part is done; one tensor is never a silent 0%', async () => {
  await chooseBackend('cpu');
  await waitPhase(['estimated', 'error', 'ready', 'cancelled', 'done', 'restored']);
  await recordProgress();
  // A copy under another name: choosing the same file again may not count as a change.
  const copy = path.join(OUT, 'small-model-copy.safetensors');
  fs.copyFileSync(small, copy);
  await drop(copy);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  let seen = await page.evaluate(() => window.lowbitProgressSeen);
  assert.ok(seen.some((t) => /^measuring: .*working on layer\.0\.weight \(1 of 6\)$/.test(t)), `no "working on" the first tensor in:\n${seen.join('\n')}`);
  assert.ok(seen.some((t) => /about \d.* left · working on layer\.0\.bias \(2 of 6\)$/.test(t)), `no time left once the first tensor was done:\n${seen.join('\n')}`);
  assert.ok(!seen.some((t) => /working on layer\.0\.weight/.test(t) && /left/.test(t)), 'a time left before anything was done');
  await recordProgress();
  await drop(vectors);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  seen = await page.evaluate(() => window.lowbitProgressSeen);
  assert.ok(seen.some((t) => /working on .+ \(1 of 1\)/.test(t)), `a one-tensor file does not say what it works on:\n${seen.join('\n')}`);
  console.log(`      ${seen.length} progress lines, e.g. "${seen[Math.floor(seen.length / 2)]}"`);
});

await test('a file chosen during a measurement cancels it and is opened at once', async () => {
  await chooseBackend('cpu');
  await drop(larger);
  await waitPhase('measuring', 60_000);
  await page.waitForFunction(() => /working on/.test(document.getElementById('progress-text').textContent), null, { timeout: 60_000 });
  const t0 = Date.now();
  await drop(small);
  await page.waitForFunction(() => document.body.dataset.phase === 'estimated'
    && /^small-model\.safetensors: /.test(document.getElementById('summary').textContent), null, { timeout: 15_000 })
    .catch(async () => assert.fail(`the second file was not opened in 15 s: phase ${await phase()}, summary ${await page.textContent('#summary')}`));
  console.log(`      the second file measured ${Date.now() - t0} ms after it was chosen`);
  assert.ok(await page.isHidden('#error'), await page.textContent('#error'));
  assert.ok(await page.isHidden('#run'), 'the Working box is still shown');
  // The page goes on with the new file: the estimate is of it, and a compression works.
  assert.match(await page.textContent('#estimate'), /^Estimate: /);
});

await test('a backend chosen during a measurement stops it at once and measures the file again on the new one', async () => {
  await chooseBackend('gpu');
  // Scalar alone (set without a change event): the CPU's measurement of the larger file is quick.
  await page.evaluate(() => { document.getElementById('method').value = 'scalar'; });
  try {
    await drop(larger);
    await waitPhase('measuring', 60_000);
    await page.waitForFunction(() => /working on/.test(document.getElementById('progress-text').textContent), null, { timeout: 60_000 });
    await page.evaluate(() => {
      window.lowbitPhases = [];
      new MutationObserver(() => window.lowbitPhases.push(document.body.dataset.phase))
        .observe(document.body, { attributes: true, attributeFilter: ['data-phase'] });
    });
    const t0 = Date.now();
    await page.selectOption('#backend-choice', 'cpu');
    await page.waitForFunction(() => document.getElementById('backend-status').dataset.used === 'cpu', null, { timeout: 15_000 })
      .catch(() => assert.fail('the backend did not change in 15 s: the measurement on WebGPU went on'));
    console.log(`      on the CPU ${Date.now() - t0} ms after the choice`);
    await waitPhase(['estimated', 'error']);
    assert.equal(await phase(), 'estimated', await page.textContent('#error'));
    const phases = await page.evaluate(() => window.lowbitPhases);
    assert.deepEqual(phases.filter((p) => ['cancelling', 'measuring', 'cancelled'].includes(p)), ['cancelling', 'measuring'], phases.join(' '));
    // The measurement kept is the CPU's, and the page says nothing of a cancellation.
    const plan = await page.evaluate(() => window.lowbit.call('estimate', { options: {
      bpw: Number(document.getElementById('bpw').value), max_error: null, method: 'scalar', overrides: [], allocator: 'knapsack', seed: 0 } }));
    assert.equal(plan.backend.used, 'cpu');
    assert.match(await page.textContent('#estimate'), /^Estimate: /);
    assert.ok(await page.isHidden('#error') && await page.isHidden('#run'));
  } finally {
    await page.evaluate(() => { document.getElementById('method').value = 'auto'; });
    await drop(small);
    await waitPhase(['estimated', 'error']);
  }
});

await test('first visit: the built-in example in one click, what the figures mean, presets, the version', async () => {
  await chooseBackend('cpu');
  assert.match(await page.textContent('footer'), /lowbit \d+\.\d+\.\d+/);
  assert.match(await page.textContent('#explain'), /Bits per weight[\s\S]*Relative error/);
  assert.match(await page.textContent('#explain'), /README\.md/);
  await page.click('#try-example');
  await page.waitForFunction(() => /^demo\.safetensors: /.test(document.getElementById('summary').textContent)
    && ['estimated', 'error'].includes(document.body.dataset.phase), null, { timeout: 120_000 });
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  assert.match(await page.textContent('#summary'), /^demo\.safetensors: safetensors/);
  // The page's example is `lowbit demo`'s checkpoint: the same tensors and parameters.
  const demoDir = path.join(OUT, 'demo');
  cli('demo', '--out', demoDir, '--quiet');
  const native = JSON.parse(cli('inspect', '--json', path.join(demoDir, 'demo.safetensors')));
  assert.match(await page.textContent('#summary'), new RegExp(`${native.tensors.length} tensors, ${native.parameters.toLocaleString('en-US')} parameters`));
  for (const [label, bpw] of [['Q4_K_M', 4.85], ['Q8_0', 8.5], ['Q2_K', 2.6]]) {
    await page.click(`#presets button:has-text("${label}")`);
    await waitPhase(['estimated', 'error']);
    assert.equal(await page.inputValue('#bpw'), String(bpw));
    const m = (await page.textContent('#estimate')).match(/([\d.]+) bits per weight/);
    assert.ok(m && Number(m[1]) <= bpw + 1e-9, `${label}: ${await page.textContent('#estimate')}`);
  }
  // "Smallest that keeps X": the error bound, as `lowbit plan --max-error`.
  await page.click('#presets button:has-text("under 1%")');
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  assert.ok(await page.isChecked('input[name=target][value=error]') && await page.isHidden('#bpw-row'));
  assert.equal(await page.inputValue('#max-error'), '0.01');
  const planned = JSON.parse(cli('plan', path.join(demoDir, 'demo.safetensors'), '--max-error', '0.01', '--json'));
  const shown = Number((await page.textContent('#estimate')).match(/([\d.]+) bits per weight/)[1]);
  assert.ok(Math.abs(shown - planned.output.bits_per_weight) < 1e-3, `${shown} vs ${planned.output.bits_per_weight}`);
  await page.click('#presets button:has-text("Q4_K_M")');
  await waitPhase(['estimated', 'error']);
  // Memory figures: the file's size, memory to load it, download time at a chosen speed.
  const memory = await page.textContent('#memory');
  const report = JSON.parse(cli('inspect', '--json', path.join(demoDir, 'demo.safetensors')));
  assert.match(memory, /^File: 1\.88 MiB → [\d.]+ KiB\. Download at 100 Mbit\/s: /, memory);
  assert.ok(memory.includes(`${(4 * report.parameters / 1048576).toFixed(2)} MiB decoded to f32`), memory);
  await page.selectOption('#link-speed', '10');
  assert.match(await page.textContent('#memory'), /Download at 10 Mbit\/s: 2 s → /);
  await page.selectOption('#link-speed', '100');
  await page.screenshot({ path: path.join(OUT, '06-example.png'), fullPage: false });
});

await test('backend: plain words; a software WebGPU adapter is warned about; a long measurement is not redone without asking', async () => {
  await chooseBackend('cpu');
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  // Every measurement counts as long: the page must ask before measuring again.
  await page.evaluate(() => window.lowbit.setAskAfterSeconds(0));
  try {
    let measured = false;
    await page.exposeFunction('lowbitSawMeasuring', () => { measured = true; }).catch(() => {});
    await page.evaluate(() => new MutationObserver(() => {
      if (document.body.dataset.phase === 'measuring') window.lowbitSawMeasuring();
    }).observe(document.body, { attributes: true, attributeFilter: ['data-phase'] }));
    await chooseBackend('auto', { keepStale: true });
    const auto = await page.textContent('#backend-status');
    assert.match(auto, /^Kernels run on (the CPU|WebGPU)/);
    assert.doesNotMatch(auto, /\(\(|BrowserWebGpu|Cpu,|30-50x/, auto);
    assert.equal(await phase(), 'stale');
    assert.match(await page.textContent('#estimate'), /^Re-analysis needed/);
    assert.ok(await page.isVisible('#remeasure'));
    await chooseBackend('gpu', { keepStale: true });
    assert.ok(await page.isVisible('#backend-warning'), 'no warning on SwiftShader');
    assert.match(await page.textContent('#backend-warning'), /software emulation/);
    await chooseBackend('cpu', { keepStale: true });
    assert.ok(await page.isHidden('#backend-warning'));
    await page.fill('#overrides', 'layer.0.*=8');
    await page.dispatchEvent('#overrides', 'change');
    await waitPhase(['stale', 'estimated', 'error'], 10_000);
    assert.equal(await phase(), 'stale');
    assert.ok(!measured, 'measured again without asking');
    await page.click('#remeasure');
    await waitPhase(['estimated', 'error']);
    assert.equal(await phase(), 'estimated', await page.textContent('#error'));
    assert.ok(measured && await page.isHidden('#remeasure'));
  } finally {
    await page.evaluate(() => window.lowbit.setAskAfterSeconds(5));
    await page.fill('#overrides', '');
    await page.dispatchEvent('#overrides', 'change');
    await waitPhase(['estimated', 'error', 'stale'], 60_000);
    if (await phase() === 'stale') await page.click('#remeasure');
    await waitPhase(['estimated', 'error'], 60_000);
  }
});

await test('phone width (390 px), the whole flow: no sideways scroll outside tables, charts folded, the teaching view near its row', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  try {
    await page.goto(URL_);
    await waitPhase(['ready', 'error'], 120_000);
    assert.ok(await overflow() <= 1, `the landing page is ${await overflow()} px too wide`);
    await page.screenshot({ path: path.join(OUT, '07-phone-landing.png'), fullPage: true });
    await chooseBackend('cpu');
    await drop(small);
    await waitPhase(['estimated', 'error']);
    assert.ok(await overflow() <= 1, `the settings are ${await overflow()} px too wide`);
    await page.click('#compress');
    await waitPhase(['done', 'error']);
    assert.equal(await phase(), 'done', await page.textContent('#error'));
    assert.ok(await overflow() <= 1, `the result is ${await overflow()} px too wide`);
    const box = await page.evaluate(() => {
      const wrap = document.querySelector('#results .scroll-box');
      const charts = document.getElementById('charts-box');
      return { overflowX: getComputedStyle(wrap).overflowX, right: wrap.getBoundingClientRect().right,
        chartsFolded: charts.tagName === 'DETAILS' && !charts.open,
        height: document.getElementById('results').getBoundingClientRect().height, screen: window.innerHeight };
    });
    assert.equal(box.overflowX, 'auto');
    assert.ok(box.right <= 390, `the table's box ends at ${box.right} px`);
    assert.ok(box.chartsFolded, 'the charts are not folded');
    assert.ok(box.height <= 3 * box.screen, `the result is ${box.height} px tall`);
    // The bits chart leaves the three 96-value biases out (they would set its axis).
    assert.match(await page.textContent('#charts figure:first-child svg'), /3 tensors of fewer than 1024 parameters left out/);
    await page.locator('#tensor-table tbody tr[data-tensor="layer.1.weight"]').scrollIntoViewIfNeeded();
    const before = await page.evaluate(() => window.scrollY);
    await page.click('#tensor-table tbody tr[data-tensor="layer.1.weight"]');
    await page.waitForFunction(() => document.querySelectorAll('#teach-charts svg').length >= 4, null, { timeout: 120_000 });
    await page.waitForTimeout(300);
    const jump = Math.abs(await page.evaluate(() => window.scrollY) - before);
    assert.ok(jump <= 844, `the page jumped ${jump} px when the teaching view opened`);
    assert.ok(await overflow() <= 1, `the teaching view is ${await overflow()} px too wide`);
    await page.screenshot({ path: path.join(OUT, '08-phone-result.png'), fullPage: true });
  } finally {
    await page.setViewportSize({ width: 1200, height: 900 });
  }
});

// --- the Try-it panel: the tiny fixture models, compressed in the page, run in the page ---------

const FIXTURES = new URL('../fixtures/models/', import.meta.url).pathname;

/// Drops several files at once on the drop zone (a synthetic drop event carrying them).
async function dropFiles(files) {
  const payload = files.map((f) => ({ name: path.basename(f), bytes: [...fs.readFileSync(f)] }));
  const dt = await page.evaluateHandle((list) => {
    const t = new DataTransfer();
    for (const f of list) t.items.add(new File([new Uint8Array(f.bytes)], f.name));
    return t;
  }, payload);
  await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer: dt });
}

const cosine = (a, b) => {
  let d = 0; let na = 0; let nb = 0;
  a.forEach((x, i) => { d += x * b[i]; na += x * x; nb += b[i] * b[i]; });
  return d / Math.sqrt(na * nb);
};
const near = (got, want, tol, what) => assert.ok(Math.abs(got - want) <= tol, `${what}: page ${got}, CLI ${want}`);
const nearRel = (got, want, rel, what) => assert.ok(Math.abs(got - want) <= rel * Math.abs(want) + 1e-12, `${what}: page ${got}, CLI ${want}`);

/// Drops a fixture model's folder (`how`: 'drop' = all its files dropped at once, 'folder' = the
/// folder chosen with the webkitdirectory input), compresses it on `backend` at `bpw`, downloads
/// the .lowbit and checks that it stores the model files. Returns the .lowbit's path.
async function compressFixture(model, backend, how, bpw) {
  await chooseBackend(backend);
  const dir = path.join(FIXTURES, model);
  // The budget first (the measurement starts on the drop); the phase reset so that the wait below
  // sees this file's measurement, not the last one's.
  await page.fill('#bpw', String(bpw));
  await page.dispatchEvent('#bpw', 'input');
  await page.waitForTimeout(600); // the open file's estimate for the new budget comes and goes
  await page.evaluate(() => { document.body.dataset.phase = 'test-dropping'; });
  if (how === 'drop') await dropFiles(fs.readdirSync(dir).map((f) => path.join(dir, f)));
  else await page.setInputFiles('#folder-input', dir);
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  assert.match(await page.textContent('#summary'), /^model\.safetensors: /);
  assert.match(await page.textContent('#model-line'), /config\.json.*tokenizer\.json.*(BERT-style encoder|Llama-style decoder)/);
  assert.match(await page.textContent('#summary'), /Not used: .*perturbed\.safetensors/);
  assert.ok(await page.isHidden('#try'), 'the Try-it panel shows before there is a compressed model');
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
  assert.equal(report.backend.used, backend);
  const lowbitFile = await downloadOf('#downloads a[download$=".lowbit"]', `${model}.${backend}.lowbit`);
  const stored = JSON.parse(cli('inspect', '--json', lowbitFile)).model_files.map((f) => f[0]);
  assert.ok(stored.includes('config.json') && stored.includes('tokenizer.json'), `the .lowbit stores ${stored}`);
  assert.ok(await page.isVisible('#try'), 'no Try-it panel after compressing a model');
  return lowbitFile;
}

/// The CLI's embedding of a sentence.
const embedding = (modelPath, s) => JSON.parse(cli('run', modelPath, '--prompt', s, '--json'));

/// The Try-it panel's runtime for a run compressed on `backend` ('gpu' or 'cpu').
const runtimeOf = (backend) => (backend === 'gpu' ? 'webgpu' : 'cpu');

/// `status` says the model ran on WebGPU without falling back ('gpu'), or on the CPU.
function assertRanOn(status, backend) {
  if (backend === 'gpu') {
    assert.match(status, /WebGPU, adapter /);
    assert.doesNotMatch(status, /failed/);
  } else {
    assert.match(status, /CPU \(WebAssembly/);
  }
}

async function tryEncoder(backend, how) {
  const requestsBefore = requests.length;
  // Tiny models' exactly stored tensors (norms, biases, small matrices) need more than 5 bits per weight.
  const lowbitFile = await compressFixture('tiny-bert', backend, how, 8);
  const dir = path.join(FIXTURES, 'tiny-bert');
  const sentencesFile = path.join(dir, 'sentences.txt');
  const sentences = fs.readFileSync(sentencesFile, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
  assert.ok(await page.isVisible('#try-encoder') && await page.isHidden('#try-decoder'));
  await page.fill('#try-sentences', sentences.join('\n'));
  // The model runs where it was compressed: WebGPU (the model runtime's WGSL kernels) or the CPU.
  await page.selectOption('#try-backend', runtimeOf(backend));
  await page.click('#try-embed');
  await waitPhase(['embedded', 'error']);
  assert.equal(await phase(), 'embedded', await page.textContent('#error'));
  const shown = await page.evaluate(() => {
    const matrix = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => [...tr.querySelectorAll('td')]
      .map((td) => ({ value: Number(td.dataset.value), text: Number(td.textContent) })));
    return {
      original: matrix('sim-original'),
      compressed: matrix('sim-compressed'),
      cosines: [...document.querySelectorAll('#try-cosines tbody td.num')].map((td) => ({ value: Number(td.dataset.value), text: Number(td.textContent) })),
      status: document.getElementById('try-embed-status').textContent,
    };
  });
  // The native CLI's embeddings of each sentence, by both models.
  const before = sentences.map((s) => embedding(path.join(dir, 'model.safetensors'), s));
  const after = sentences.map((s) => embedding(lowbitFile, s));
  const n = sentences.length;
  assert.equal(shown.cosines.length, n);
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const want = cosine(before[i], after[i]);
    near(shown.cosines[i].value, want, 1e-4, `cosine of sentence ${i + 1}`);
    near(shown.cosines[i].text, want, 1e-4, `cosine of sentence ${i + 1} as shown`);
    worst = Math.max(worst, Math.abs(shown.cosines[i].value - want));
    for (let j = 0; j < n; j++) {
      for (const [name, emb] of [['original', before], ['compressed', after]]) {
        const wantIJ = cosine(emb[i], emb[j]);
        near(shown[name][i][j].value, wantIJ, 1e-4, `${name} similarity ${i + 1},${j + 1}`);
        near(shown[name][i][j].text, wantIJ, 5e-4 + 1e-4, `${name} similarity ${i + 1},${j + 1} as shown (3 decimals)`);
        worst = Math.max(worst, Math.abs(shown[name][i][j].value - wantIJ));
      }
    }
  }
  // lowbit eval on the same sentences (it embeds those of 20 to 200 characters).
  const evaluated = JSON.parse(cli('eval', path.join(dir, 'model.safetensors'), lowbitFile, '--text', sentencesFile, '--json'));
  const kept = sentences.map((s, i) => [s, i]).filter(([s]) => s.length >= 20 && s.length <= 200).map(([, i]) => shown.cosines[i].value);
  assert.equal(kept.length, evaluated.sentences);
  near(kept.reduce((a, b) => a + b, 0) / kept.length, evaluated.cosine_mean, 1e-4, 'mean cosine (lowbit eval)');
  near(Math.min(...kept), evaluated.cosine_min, 1e-4, 'smallest cosine (lowbit eval)');
  assertRanOn(shown.status, backend);
  console.log(`      ${n} sentences; largest difference from the native CLI ${worst.toExponential(2)}; ${shown.status}`);
  await page.locator('#try').screenshot({ path: path.join(OUT, `06-try-encoder-${backend}.png`) });
  assertNoRequestOffOrigin(requestsBefore);
}

async function tryDecoder(backend, how, pasted) {
  const requestsBefore = requests.length;
  const lowbitFile = await compressFixture('tiny-llama', backend, how, 4);
  const dir = path.join(FIXTURES, 'tiny-llama');
  assert.ok(await page.isVisible('#try-decoder') && await page.isHidden('#try-encoder'));
  const prompt = 'A small model reads';
  const maxTokens = 24;
  await page.fill('#try-prompt', prompt);
  await page.fill('#try-max-tokens', String(maxTokens));
  await page.fill('#try-temperature', '0');
  await page.selectOption('#try-backend', runtimeOf(backend));
  // Streamed: the compressed model's text grows token by token (recorded as it changes).
  await page.evaluate(() => {
    window.seenTexts = [];
    new MutationObserver(() => window.seenTexts.push(document.getElementById('gen-compressed-text').textContent))
      .observe(document.getElementById('gen-compressed-text'), { childList: true, characterData: true, subtree: true });
  });
  await page.click('#try-generate');
  await waitPhase(['generated', 'error']);
  assert.equal(await phase(), 'generated', await page.textContent('#error'));
  const generated = await page.evaluate(() => ({
    original: document.getElementById('gen-original-text').textContent,
    compressed: document.getElementById('gen-compressed-text').textContent,
    stats: document.getElementById('gen-compressed-stats').textContent,
    data: { ...document.getElementById('gen-compressed-stats').dataset },
    seen: window.seenTexts.length,
  }));
  const run = (m) => JSON.parse(cli('run', m, '--prompt', prompt, '--max-tokens', String(maxTokens), '--json'));
  assert.equal(generated.compressed, run(lowbitFile).text, 'compressed model: page and `lowbit run` differ');
  assert.equal(generated.original, run(path.join(dir, 'model.safetensors')).text, 'original model: page and `lowbit run` differ');
  assert.ok(generated.seen >= 3, `the text changed ${generated.seen} times: not streamed`);
  assert.ok(Number(generated.data.tokensPerSecond) > 0);
  assert.match(generated.stats, /tokens\/s /);
  assertRanOn(generated.stats, backend);
  // Perplexity, KL, top-1 agreement: as `lowbit eval`.
  const textFile = path.join(dir, 'text.txt');
  if (pasted) await page.fill('#try-eval-text', fs.readFileSync(textFile, 'utf8'));
  else await page.fill('#try-eval-text', '');
  await page.click('#try-perplexity');
  await waitPhase(['evaluated', 'error']);
  assert.equal(await phase(), 'evaluated', await page.textContent('#error'));
  const figures = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#try-eval td[data-key]')]
    .map((td) => [td.dataset.key, { value: Number(td.dataset.value), text: td.textContent }])));
  const evaluated = JSON.parse(pasted
    ? cli('eval', path.join(dir, 'model.safetensors'), lowbitFile, '--text', textFile, '--json')
    : cli('eval', path.join(dir, 'model.safetensors'), lowbitFile, '--json'));
  for (const key of ['perplexity_original', 'perplexity_compressed', 'kl_mean', 'top1_agreement']) {
    nearRel(figures[key].value, evaluated[key], 1e-4, key);
    const text = Number(figures[key].text.replace('%', '')) / (figures[key].text.endsWith('%') ? 100 : 1);
    nearRel(text, evaluated[key], 1e-4, `${key} as shown`);
  }
  assert.equal(figures.scored.value, evaluated.scored);
  assertRanOn(await page.getAttribute('#try-eval-status', 'data-backend'), backend);
  console.log(`      "${generated.compressed.slice(0, 40)}…" = lowbit run; ${generated.stats}; ppl ${figures.perplexity_original.text} -> ${figures.perplexity_compressed.text} = lowbit eval (${pasted ? 'pasted' : 'built-in'} text)`);
  await page.locator('#try').screenshot({ path: path.join(OUT, `07-try-decoder-${backend}.png`) });
  assertNoRequestOffOrigin(requestsBefore);
}

/// Since request `from`: nothing but GETs of the page's own origin (or blob:/data: URLs).
function assertNoRequestOffOrigin(from) {
  const bad = requests.slice(from).filter((r) => !(r.url.startsWith('blob:') || r.url.startsWith('data:')
    || (r.url.startsWith(origin) && r.method === 'GET')));
  assert.deepEqual(bad, [], 'the Try-it flow made requests off the page\'s origin');
  assert.deepEqual(offsite, []);
}

await test('Try it, encoder (tiny-bert dropped as files, compressed and run on WebGPU): similarities and cosines = the native CLI', async () => {
  await tryEncoder('gpu', 'drop');
});
await test('Try it, encoder (tiny-bert chosen as a folder, compressed and run on the CPU): similarities and cosines = the native CLI', async () => {
  await tryEncoder('cpu', 'folder');
});
await test('Try it, decoder (tiny-llama chosen as a folder, compressed and run on WebGPU): greedy text = lowbit run, perplexity = lowbit eval (built-in text)', async () => {
  await tryDecoder('gpu', 'folder', false);
});
await test('Try it, decoder (tiny-llama dropped as files, compressed and run on the CPU): greedy text = lowbit run, perplexity = lowbit eval (pasted text)', async () => {
  await tryDecoder('cpu', 'drop', true);
});

await test('Try it: a dropped .lowbit alone runs by itself; phone width fits', async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  await page.evaluate(() => { document.body.dataset.phase = 'test-dropping'; });
  await page.setInputFiles('#file-input', path.join(OUT, 'tiny-llama.cpu.lowbit'));
  await waitPhase(['opened', 'error']);
  assert.equal(await phase(), 'opened', await page.textContent('#error'));
  assert.ok(await page.isVisible('#try-decoder') && await page.isHidden('#gen-original') && await page.isHidden('#try-perplexity'));
  await page.fill('#try-prompt', 'A small model reads');
  await page.fill('#try-max-tokens', '8');
  await page.click('#try-generate');
  await waitPhase(['generated', 'error']);
  assert.equal(await phase(), 'generated', await page.textContent('#error'));
  const want = JSON.parse(cli('run', path.join(OUT, 'tiny-llama.cpu.lowbit'), '--prompt', 'A small model reads', '--max-tokens', '8', '--json')).text;
  assert.equal(await page.textContent('#gen-compressed-text'), want);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(OUT, '08-try-phone.png'), fullPage: true });
  assert.ok(overflow <= 1, `page is ${overflow} px wider than a 390 px screen`);
  await page.setViewportSize({ width: 1200, height: 900 });
});

// --- the calibration box: the text the model runs over to measure its sensitivity --------------

/// Records every phase the page goes through from now on (`phasesSeen` reads them).
const recordPhases = () => page.evaluate(() => {
  window.phasesSeen = [];
  new MutationObserver(() => window.phasesSeen.push(document.body.dataset.phase))
    .observe(document.body, { attributes: true, attributeFilter: ['data-phase'] });
});
const phasesSeen = () => page.evaluate(() => window.phasesSeen);

/// Sets the calibration box as a person does (typed, then the box left) and waits for the run.
async function setCalibration(text, want = ['estimated', 'error', 'stale']) {
  await page.fill('#calibration-text', text);
  await page.dispatchEvent('#calibration-text', 'change');
  await page.waitForTimeout(300); // the settings' 150 ms debounce, then the measurement starts
  await waitPhase(want);
}

/// Drops a fixture model's folder (CPU kernels, `bpw`) and waits for its first measurement.
async function dropFixture(model, bpw) {
  await chooseBackend('cpu');
  // The budget set before the drop (the form may be hidden: no file open yet), so that the first
  // estimate is this budget's; and the phase reset, so that the wait sees this file's measurement.
  await page.evaluate((b) => {
    for (const id of ['bpw', 'bpw-slider']) document.getElementById(id).value = String(b);
    document.querySelector('input[name=target][value=bpw]').click();
    document.body.dataset.phase = 'test-dropping';
  }, bpw);
  const dir = path.join(FIXTURES, model);
  await dropFiles(fs.readdirSync(dir).map((f) => path.join(dir, f)));
  await waitPhase(['estimated', 'error']);
  assert.equal(await phase(), 'estimated', await page.textContent('#error'));
  return dir;
}

/// Compresses with the page's settings, downloads the .lowbit as `name`; returns it and the report.
async function compressPage(name) {
  await page.click('#compress');
  await waitPhase(['done', 'error']);
  assert.equal(await phase(), 'done', await page.textContent('#error'));
  const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
  return { file: await downloadOf('#downloads a[download$=".lowbit"]', name), report };
}

const CALIBRATION = 'Tomorrow the river will be cold and the boats will stay in the harbour.\n'
  + 'She counted the lanterns twice before the market closed for the night.\n';

/** The `.lowbit` manifest (tensors and files) of a file's header. */
function manifestOf(bytes) {
  const n = Number(bytes.readBigUInt64LE(0));
  return JSON.parse(JSON.parse(bytes.subarray(8, 8 + n).toString()).__metadata__['lowbit.manifest']);
}

/**
 * Checks that two `.lowbit` files of the same input and options are the same file, except in the
 * bits of sections of the low-rank family: their truncated SVD runs on faer's SIMD kernels, which
 * are chosen per CPU (native x86 vs WebAssembly), so their factors may differ in the last bits
 * (docs/CODECS-lowrank.md). Every tensor must have the same codec, parameters and coded size, and
 * every other section the same CRC; returns the names of the low-rank sections that differ.
 */
function lowrankOnlyDifferences(a, b) {
  if (a.equals(b)) return [];
  const [ma, mb] = [manifestOf(a), manifestOf(b)];
  assert.deepEqual(ma.files, mb.files, 'the stored model files differ');
  assert.equal(ma.tensors.length, mb.tensors.length);
  const lowrank = new Set(['lowrank', 'sparse-lowrank', 'fwsvd', 'shared-lowrank']);
  const differing = [];
  ma.tensors.forEach((t, i) => {
    const u = mb.tensors[i];
    assert.deepEqual({ ...t, crc32: 0 }, { ...u, crc32: 0 }, `${t.name}: another choice than the CLI's`);
    if (t.crc32 !== u.crc32) {
      assert.ok(lowrank.has(t.codec.codec), `${t.name} (${t.codec.codec}): other bits than the CLI's`);
      differing.push(t.name);
    }
  });
  return differing;
}

await test('calibration text (tiny-llama): the page\'s file = `lowbit compress --calibrate` on the same text, the empty box\'s = the CLI\'s default, and the two differ', async () => {
  const dir = await dropFixture('tiny-llama', 4);
  const model = path.join(dir, 'model.safetensors');
  assert.ok(await page.isVisible('#calibration-row'), 'no calibration box for a model lowbit runs');
  assert.equal(await page.inputValue('#calibration-text'), '');
  assert.match(await page.getAttribute('#calibration-text', 'placeholder'), /built-in/);
  // The built-in paragraph, shown on request, is the CLI's default text.
  await page.click('#builtin-text-box summary');
  assert.match(await page.textContent('#builtin-text'), /\w+ \w+ \w+/);
  try {
    const builtin = await compressPage('tiny-llama.builtin.lowbit');
    const cliBuiltin = path.join(OUT, 'tiny-llama.builtin.cli.lowbit');
    cli('compress', model, '-o', cliBuiltin, '--bpw', '4', '--backend', 'cpu', '--quiet');
    assert.ok(fs.readFileSync(builtin.file).equals(fs.readFileSync(cliBuiltin)), 'empty box: the page\'s file differs from the CLI\'s default');
    assert.equal(builtin.report.sensitivity.source, 'built-in text');

    // A new text measures again; a new budget after it does not.
    await recordPhases();
    await setCalibration(CALIBRATION);
    assert.equal(await phase(), 'estimated', await page.textContent('#calibration-error'));
    assert.ok((await phasesSeen()).includes('measuring'), 'a new calibration text did not measure again');
    await recordPhases();
    await setBpw(4.5);
    await setBpw(4);
    assert.ok(!(await phasesSeen()).includes('measuring'), 'a new budget measured the sensitivity again');

    const pasted = await compressPage('tiny-llama.pasted.lowbit');
    const textFile = path.join(OUT, 'calibration.txt');
    fs.writeFileSync(textFile, CALIBRATION);
    const cliPasted = path.join(OUT, 'tiny-llama.calibrated.cli.lowbit');
    cli('compress', model, '-o', cliPasted, '--bpw', '4', '--backend', 'cpu', '--quiet', '--calibrate', textFile);
    const pageBytes = fs.readFileSync(pasted.file);
    const differing = lowrankOnlyDifferences(pageBytes, fs.readFileSync(cliPasted));
    if (differing.length) console.log(`      low-rank sections whose SVD bits differ from the CLI's (faer's per-CPU kernels): ${differing.join(', ')}`);
    assert.ok(!pageBytes.equals(fs.readFileSync(builtin.file)), 'the pasted text gave the built-in text\'s file');
    // The text's label is the report's alone: the .lowbit holds neither it nor the CLI's file name.
    assert.equal(pasted.report.sensitivity.source, 'calibration text');
    assert.equal(pageBytes.indexOf('calibration text'), -1);
    const same = pasted.report.tensors.filter((t, i) => t.sensitivity === builtin.report.tensors[i].sensitivity).length;
    assert.ok(same < pasted.report.tensors.length, 'the pasted text gave the built-in text\'s sensitivities');
    console.log(`      ${pageBytes.length} bytes = --calibrate's; ${pasted.report.sensitivity.units} tokens of it; ${same} of ${pasted.report.tensors.length} tensors' sensitivities as with the built-in text`);

    // The same text loaded from a .txt file: the box holds it, and the run is the same.
    await setCalibration('');
    await page.evaluate(() => { document.body.dataset.phase = 'test-loading'; });
    await page.setInputFiles('#calibration-file', textFile);
    await page.waitForTimeout(300);
    await waitPhase(['estimated', 'error', 'stale']);
    assert.equal(await page.inputValue('#calibration-text'), CALIBRATION);
    const loaded = await compressPage('tiny-llama.loaded.lowbit');
    assert.ok(fs.readFileSync(loaded.file).equals(pageBytes), 'the text loaded from a file gave another file');
    await page.click('#copy-cli');
    assert.match(await page.inputValue('#cli-command'), / --calibrate calibration\.txt /);
    await page.locator('#settings').screenshot({ path: path.join(OUT, '09-calibration-text.png') });
  } finally {
    await setCalibration('');
  }
});

await test('calibration text: too long, or too short for an encoder\'s sentence, is said under the box (as the CLI says it)', async () => {
  await dropFixture('tiny-bert', 8);
  try {
    await setCalibration('x'.repeat(2 ** 20 + 1));
    assert.equal(await phase(), 'error');
    assert.match(await page.textContent('#calibration-error'), /^Calibration text: 1048577 bytes, more than the page takes \(1 MiB\)/);
    assert.equal(await page.getAttribute('#calibration-text', 'aria-invalid'), 'true');
    assert.ok(await page.isHidden('#error'));

    const short = 'Hi.';
    await setCalibration(short);
    assert.equal(await phase(), 'error');
    const shown = await page.textContent('#calibration-error');
    const textFile = path.join(OUT, 'short.txt');
    fs.writeFileSync(textFile, short);
    let cliMessage = '';
    try {
      cli('compress', path.join(FIXTURES, 'tiny-bert', 'model.safetensors'), '-o', path.join(OUT, 'short.lowbit'), '--bpw', '8', '--quiet', '--calibrate', textFile);
    } catch (e) {
      cliMessage = String(e.stderr);
    }
    // The CLI: "--calibrate: the model could not be run: short.txt: the text has no line ...".
    const reason = cliMessage.split('short.txt: ')[1].trim();
    assert.match(reason, /no line of 20 to 200 characters/);
    assert.equal(shown, `Calibration text: ${reason}`);

    await setCalibration('');
    assert.equal(await phase(), 'estimated', await page.textContent('#calibration-error'));
    assert.ok(await page.isHidden('#calibration-error'));
    assert.equal(await page.getAttribute('#calibration-text', 'aria-invalid'), null);
  } finally {
    await setCalibration('');
  }
});

await test('calibration text: no box for a checkpoint without a model lowbit runs', async () => {
  await chooseBackend('cpu');
  await drop(small);
  await waitPhase(['estimated', 'error']);
  assert.ok(await page.isHidden('#calibration-row'));
});

if (args.big) {
  await test('a checkpoint larger than 4 GiB goes through (File.slice, tensor by tensor)', async () => {
    // 16 byte buffers of 256 MiB (4 GiB of zeros in a sparse file: nothing on disk), then a 256 x
    // 1024 f32 matrix of values starting past 4 GiB, so that an offset cut to 32 bits would read
    // zeros and the page's file would not equal the native CLI's. The buffers are stored exactly
    // (fast); what is tested is 64-bit offsets, File.slice reads and memory, not codec speed.
    const big = path.join(OUT, 'big.safetensors');
    const header = {};
    const shard = 256 * 2 ** 20;
    for (let i = 0; i < 16; i++) header[`shard.${i}`] = { dtype: 'U8', shape: [shard], data_offsets: [i * shard, (i + 1) * shard] };
    const head = new Float32Array(256 * 1024);
    let x = 1;
    for (let i = 0; i < head.length; i++) { x = (x * 1103515245 + 12345) % 2147483648; head[i] = 0.02 * (x / 2147483648 - 0.5); }
    header['head.weight'] = { dtype: 'F32', shape: [256, 1024], data_offsets: [16 * shard, 16 * shard + head.byteLength] };
    let json = JSON.stringify(header);
    while ((8 + json.length) % 8) json += ' ';
    const fd = fs.openSync(big, 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeSync(fd, Buffer.concat([len, Buffer.from(json)]));
    const headAt = 8 + json.length + 16 * shard;
    assert.ok(headAt > 2 ** 32);
    fs.writeSync(fd, Buffer.from(head.buffer), 0, head.byteLength, headAt);
    fs.closeSync(fd);
    // The largest resident set of any Chromium process while the page works on the file.
    let peakKiB = 0;
    const sample = () => {
      try {
        const rss = execFileSync('ps', ['-C', 'chromium', '-o', 'rss=']).toString().split(/\s+/).filter(Boolean).map(Number);
        peakKiB = Math.max(peakKiB, ...rss);
      } catch { /* no process matched at this instant */ }
    };
    const sampler = setInterval(sample, 500);
    try {
      await chooseBackend('cpu');
      // Forced scalar on both sides: its encoder is bit-identical on wasm32 and x86-64 (auto's
      // low-rank options are not: faer's SIMD kernels differ in the last bits).
      await page.selectOption('#method', 'scalar');
      const t0 = Date.now();
      await drop(big);
      await waitPhase(['estimated', 'error'], 3_600_000);
      assert.equal(await phase(), 'estimated', await page.textContent('#error'));
      await setBpw(4);
      await page.click('#compress');
      await waitPhase(['done', 'error'], 3_600_000);
      assert.equal(await phase(), 'done', await page.textContent('#error'));
      const seconds = (Date.now() - t0) / 1000;
      sample();
      const report = JSON.parse(await page.evaluate(() => window.lowbit.lastReport()));
      assert.ok(report.input.bytes > 4 * 2 ** 30);
      const pageFile = await downloadOf('#downloads a[download$=".lowbit"]', 'big.page.lowbit');
      const cliFile = path.join(OUT, 'big.native-cpu.lowbit');
      execFileSync(CLI, ['compress', big, '-o', cliFile, '--bpw', '4', '--method', 'scalar', '--backend', 'cpu', '--quiet']);
      const same = Buffer.compare(fs.readFileSync(pageFile), fs.readFileSync(cliFile)) === 0;
      console.log(`      ${report.input.bytes} bytes in, ${report.output.bytes} out, ${seconds.toFixed(0)} s; ` +
        `largest Chromium process ${(peakKiB / 1024).toFixed(0)} MiB; page file ${same ? '=' : '!='} native CLI file`);
      assert.ok(same, 'the page and the native CLI wrote different files for the > 4 GiB checkpoint');
      assert.ok(peakKiB < 4 * 1024 * 1024, `a Chromium process held ${peakKiB} KiB`);
      for (const f of [pageFile, cliFile]) fs.rmSync(f);
    } finally {
      clearInterval(sampler);
      fs.rmSync(big, { force: true });
    }
  });
}

await test('Content-Security-Policy: no violation in the whole flow', async () => {
  assert.ok(await page.$('meta[http-equiv="Content-Security-Policy"]'), 'no Content-Security-Policy meta tag');
  assert.deepEqual(cspViolations.filter((v) => v.main).map((v) => v.text), []);
});

await test('no request left 127.0.0.1, no console errors', async () => {
  assert.deepEqual(offsite, []);
  assert.deepEqual(consoleErrors, []);
});

await browser.close();
fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(results, null, 1));
const failed = results.filter((r) => !r.ok).length;
console.log(`browser tests: ${results.length - failed} passed, ${failed} failed (screenshots in ${OUT})`);
process.exit(failed ? 1 : 0);
