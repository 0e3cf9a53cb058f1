// Browser tests of lowbit's page (run by `cargo xtask test-web`, which builds and serves the page):
// Debian's Chromium driven by playwright-core. Each test is what a person does: drop a file, pick
// settings, compress on WebGPU and on the CPU, download, check the download with the native CLI,
// drop a corrupt file, cancel a run. Every request must stay on 127.0.0.1; no console errors.
// Screenshots go to --out for a person to look at.
//
// node run.mjs --url=http://127.0.0.1:PORT/ --cli=PATH/lowbit --out=DIR [--chromium=PATH] [--big]

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
const page = await context.newPage();
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
page.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`worker: ${m.text()}`); }));

const results = [];
async function test(name, body) {
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
async function chooseBackend(choice) {
  // Forget the old answer first, so that a refused choice fails here with the page's reason
  // instead of timing out.
  await page.evaluate(() => { delete document.getElementById('backend-status').dataset.used; });
  await page.selectOption('#backend-choice', choice);
  await page.waitForFunction(() => document.getElementById('backend-status').dataset.used, null, { timeout: 120_000 });
  const used = await page.evaluate(() => document.getElementById('backend-status').dataset.used);
  if (choice !== 'auto') assert.equal(used, choice, await page.textContent('#backend-status'));
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

await test('every WGSL kernel on WebGPU matches the CPU path in the same page', async () => {
  await chooseBackend('gpu');
  assert.match(await page.textContent('#backend-status'), /^WebGPU: /);
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

await test('no request left 127.0.0.1, no console errors', async () => {
  assert.deepEqual(offsite, []);
  assert.deepEqual(consoleErrors, []);
});

await browser.close();
fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(results, null, 1));
const failed = results.filter((r) => !r.ok).length;
console.log(`browser tests: ${results.length - failed} passed, ${failed} failed (screenshots in ${OUT})`);
process.exit(failed ? 1 : 0);
