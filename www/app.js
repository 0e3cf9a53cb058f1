// The page's UI thread: reads settings, talks to the worker, draws what comes back. It never
// computes: every figure shown is the core's (report JSON, SVG charts). `document.body.dataset.phase`
// says what the page is doing (the browser tests wait on it).

const $ = (id) => document.getElementById(id);
const state = {
  worker: null,
  nextId: 1,
  pending: new Map(),
  file: null,
  opened: null,
  backend: null,
  result: null,
  urls: [],
  measuredKey: null,
};

function setPhase(phase) {
  document.body.dataset.phase = phase;
}

// --- the worker -------------------------------------------------------------------------------

function startWorker() {
  const worker = new Worker('worker.js', { type: 'module' });
  const ready = new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if ('ready' in data) {
        worker.onmessage = onWorkerMessage;
        data.ready ? resolve() : reject(new Error(data.error));
      }
    };
  });
  state.worker = worker;
  return ready;
}

function onWorkerMessage({ data }) {
  const job = state.pending.get(data.id);
  if (!job) return;
  if ('progress' in data) {
    job.onProgress && job.onProgress(data.progress);
    return;
  }
  state.pending.delete(data.id);
  'error' in data ? job.reject(new Error(data.error)) : job.resolve(data.result);
}

function call(cmd, args, onProgress) {
  const id = state.nextId++;
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject, onProgress });
    state.worker.postMessage({ id, cmd, args });
  });
}

// --- settings ---------------------------------------------------------------------------------

function options() {
  const byError = document.querySelector('input[name=target]:checked').value === 'error';
  return {
    bpw: byError ? null : Number($('bpw').value),
    max_error: byError ? Number($('max-error').value) : null,
    method: $('method').value,
    overrides: $('overrides').value.split('\n').map((l) => l.trim()).filter(Boolean),
    allocator: $('allocator').value,
    seed: 0,
  };
}

/// What the measurement depends on (the target does not: moving the slider re-allocates at once).
function measureKey(o) {
  return JSON.stringify([o.method, o.overrides, o.seed, state.backend && state.backend.used]);
}

// --- formatting -------------------------------------------------------------------------------

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 2 : 0)} ${units[i]}`;
}
const num = (n) => Number(n).toLocaleString('en-US');
const fmt = (x, d = 3) => (x === null || x === undefined ? '—' : Number(x).toPrecision(d));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svgBlock(title, svg) {
  const figure = el('figure');
  const body = el('div', { class: 'chart' });
  body.innerHTML = svg; // SVG from the core (escaped there), not from the file's bytes
  figure.append(el('figcaption', {}, title), body);
  return figure;
}

// --- messages ---------------------------------------------------------------------------------

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  setPhase('error');
}
function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

// --- progress ---------------------------------------------------------------------------------

let stageStart = 0;
let stageName = '';
function onProgress(p) {
  if (p.stage !== stageName) { stageName = p.stage; stageStart = performance.now(); }
  const fraction = p.total ? p.done / p.total : 0;
  $('progress').value = fraction;
  const elapsed = (performance.now() - stageStart) / 1000;
  const eta = fraction > 0.02 ? ` · about ${Math.ceil(elapsed * (1 - fraction) / fraction)} s left` : '';
  $('progress-text').textContent = `${p.stage}: ${(100 * fraction).toFixed(0)}%${eta}${p.item ? ` · ${p.item}` : ''}`;
}

function running(label) {
  $('run').hidden = false;
  $('run-title').textContent = label;
  $('progress').value = 0;
  $('progress-text').textContent = '';
  $('compress').disabled = true;
  stageName = '';
}
function idle() {
  $('run').hidden = true;
  $('compress').disabled = false;
}

async function cancel() {
  // The worker may be deep in a computation: it is stopped at once and a fresh one started.
  state.worker.terminate();
  for (const job of state.pending.values()) job.reject(new Error('cancelled'));
  state.pending.clear();
  idle();
  setPhase('cancelling');
  await startWorker();
  await applyBackend($('backend-choice').value);
  if (state.file) await call('open', { file: state.file });
  state.measuredKey = null;
  $('estimate').textContent = 'Cancelled. Change a setting or press Compress to run again.';
  setPhase('cancelled');
}

// --- backend ----------------------------------------------------------------------------------

// The method list is the core's (one enum in the Rust code), not repeated here.
async function fillMethods() {
  const select = $('method');
  const chosen = select.value;
  select.replaceChildren(...(await call('methods')).map(({ name, note }) => el('option', { value: name }, note ? `${name} (${note})` : name)));
  select.value = chosen;
}

async function applyBackend(choice) {
  const b = await call('backend', { choice });
  state.backend = b;
  let adapter = b.adapter || '';
  if (b.used === 'gpu') {
    // wgpu cannot name a browser's adapter; the browser can.
    const info = await call('adapterInfo');
    if (info) {
      const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ');
      adapter = `${name || 'adapter'}${info.isFallbackAdapter ? ' (software fallback adapter)' : ''}`;
    }
  }
  $('backend-status').textContent = b.used === 'gpu' ? `WebGPU: ${adapter}` : `CPU (${b.reason})`;
  $('backend-status').dataset.used = b.used;
  return b;
}

// --- input ------------------------------------------------------------------------------------

function renderSummary(opened) {
  const s = $('summary');
  s.replaceChildren();
  const i = opened.inspection;
  if (opened.kind === 'sequence') {
    s.append(el('p', {}, `${opened.name}: ${i.format || 'sequence'} file, ${bytes(i.bytes)}, ${num(i.records)} records, ${num(i.residues)} residues.`));
  } else {
    const dtypes = [...new Set(i.tensors.map((t) => t.dtype))].join(', ');
    const what = i.kind === 'lowbit'
      ? `a .lowbit file: ${fmt(i.bits_per_weight, 4)} bits per weight`
      : `${i.format}`;
    s.append(el('p', {}, `${opened.name}: ${what}, ${num(i.tensors.length)} tensors, ${num(i.parameters)} parameters (${dtypes}), ${bytes(i.bytes)}.`));
    const table = el('table', { class: 'compact' });
    table.append(el('tr', {}, el('th', {}, 'tensor'), el('th', {}, 'dtype'), el('th', {}, 'shape'), el('th', {}, 'parameters'), el('th', {}, i.kind === 'lowbit' ? 'codec' : 'bytes')));
    for (const t of i.tensors.slice(0, 200)) {
      table.append(el('tr', {}, el('td', {}, t.name), el('td', {}, t.dtype), el('td', {}, t.shape.join(' × ')), el('td', {}, num(t.parameters)), el('td', {}, i.kind === 'lowbit' ? t.codec : bytes(t.bytes))));
    }
    const details = el('details', {}, el('summary', {}, 'Tensors'), table);
    if (i.tensors.length > 200) details.append(el('p', {}, `… and ${i.tensors.length - 200} more`));
    s.append(details);
  }
  s.hidden = false;
}

async function openFile(file) {
  if (!file) return;
  setPhase('opening');
  clearError();
  for (const u of state.urls) URL.revokeObjectURL(u);
  state.urls = [];
  $('results').hidden = true;
  $('teach').hidden = true;
  $('settings').hidden = true;
  $('summary').hidden = true;
  state.file = file;
  state.measuredKey = null;
  state.result = null;
  let opened;
  try {
    opened = await call('open', { file });
  } catch (e) {
    state.file = null;
    showError(`${file.name}: ${e.message}`);
    return;
  }
  state.opened = opened;
  renderSummary(opened);
  if (opened.kind === 'lowbit') {
    showLowbitActions(file);
    setPhase('opened');
    return;
  }
  $('settings').hidden = false;
  const vectorish = opened.kind === 'checkpoint';
  for (const id of ['bpw', 'bpw-slider', 'max-error', 'method', 'allocator', 'overrides']) $(id).disabled = !vectorish;
  if (vectorish) {
    await measure();
  } else {
    $('estimate').textContent = 'Sequence files are coded losslessly (finite-context models).';
    setPhase('estimated');
  }
}

function showLowbitActions(file) {
  $('results').hidden = false;
  $('result-summary').replaceChildren(el('p', {}, 'This is a compressed file: restore it to the original kind of file.'));
  $('charts').replaceChildren();
  $('tensor-table').replaceChildren();
  const d = $('downloads');
  d.replaceChildren(el('button', { type: 'button', onclick: () => restore(file, file.name) }, 'Restore'));
}

// --- measure, estimate, compress --------------------------------------------------------------

async function measure() {
  const o = options();
  running('Measuring every tensor\'s options');
  setPhase('measuring');
  try {
    const plan = await call('analyse', { options: o }, onProgress);
    state.measuredKey = measureKey(o);
    showEstimate(plan);
  } catch (e) {
    if (e.message !== 'cancelled') showError(`${state.file.name}: ${e.message}`);
  } finally {
    if (document.body.dataset.phase !== 'cancelling') idle();
  }
}

function showEstimate(plan) {
  const o = plan.output;
  $('estimate').textContent = `Estimate: ${bytes(o.bytes)} (${num(o.bytes)} bytes), ${fmt(o.bits_per_weight, 4)} bits per weight, ratio ${fmt(o.ratio, 3)}, relative MSE ${fmt(o.rel_mse_2d, 3)}.`;
  setPhase('estimated');
}

let estimateTimer = null;
let runs = 0; // compress runs started: an estimate asked for before one must not change the phase
function settingsChanged() {
  clearTimeout(estimateTimer);
  if (!state.opened || state.opened.kind !== 'checkpoint') return;
  setPhase('estimating');
  const runsBefore = runs;
  estimateTimer = setTimeout(async () => {
    const o = options();
    if (measureKey(o) !== state.measuredKey) {
      await measure();
      return;
    }
    try {
      const plan = await call('estimate', { options: o });
      if (runs === runsBefore) {
        showEstimate(plan);
        clearError();
      }
    } catch (e) {
      $('estimate').textContent = e.message;
      if (runs === runsBefore) setPhase('estimated');
    }
  }, 150);
}

async function compress() {
  if (!state.file) return;
  clearError();
  const sequence = state.opened.kind === 'sequence';
  runs += 1;
  clearTimeout(estimateTimer);
  running('Compressing');
  setPhase('compressing');
  try {
    const result = sequence
      ? await call('compressSequence', {}, onProgress)
      : await call('compress', { options: options() }, onProgress);
    if (!sequence) state.measuredKey = measureKey(options());
    showResult(result);
    setPhase('done');
  } catch (e) {
    if (e.message !== 'cancelled') showError(`${state.file.name}: ${e.message}`);
  } finally {
    if (document.body.dataset.phase !== 'cancelling') idle();
  }
}

function download(blob, name, label) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return el('a', { href: url, download: name, class: 'button' }, label);
}

function stem(name) {
  return name.replace(/\.[^.]*$/, '');
}

function showResult(result) {
  state.result = result;
  const report = JSON.parse(result.report_json);
  const o = report.output;
  const inBytes = report.input.bytes;
  const summary = $('result-summary');
  summary.replaceChildren();
  const rows = [
    ['input', `${bytes(inBytes)} (${num(inBytes)} bytes)`],
    ['output', `${bytes(o.bytes)} (${num(o.bytes)} bytes)`],
    ['ratio', `${fmt(inBytes / o.bytes, 4)} ×`],
    ['bits per weight', fmt(o.bits_per_weight, 5)],
  ];
  if (o.rel_mse_2d !== undefined) rows.push(['relative MSE (2-D float tensors)', fmt(o.rel_mse_2d, 4)]);
  if (report.backend) rows.push(['kernels ran on', report.backend.used === 'gpu' ? $('backend-status').textContent : 'CPU']);
  if (report.backend && report.backend.fallback) rows.push(['WebGPU failed, finished on the CPU', report.backend.fallback]);
  const table = el('table', { class: 'compact', id: 'result-figures' });
  for (const [k, v] of rows) table.append(el('tr', {}, el('th', {}, k), el('td', {}, v)));
  summary.append(table);
  const base = stem(state.file.name);
  const lowbitName = `${base}.lowbit`;
  $('downloads').replaceChildren(
    download(result.lowbit, lowbitName, `Download ${lowbitName}`),
    el('button', { type: 'button', id: 'restore', onclick: () => restore(result.lowbit, lowbitName) }, 'Restore and download'),
    download(new Blob([result.report_html], { type: 'text/html' }), 'report.html', 'report.html'),
    download(new Blob([result.report_json], { type: 'application/json' }), 'report.json', 'report.json'),
  );
  const charts = $('charts');
  charts.replaceChildren();
  for (const [title, svg] of result.charts || []) charts.append(svgBlock(title, svg));
  renderTensorTable(report.tensors || []);
  $('results').hidden = false;
}

async function restore(blob, name) {
  running('Restoring');
  setPhase('restoring');
  try {
    const r = await call('restore', { blob, name }, onProgress);
    const link = download(r.blob, `${stem(name)}.restored.${r.extension}`, `Download ${stem(name)}.restored.${r.extension}`);
    link.id = 'restored-link';
    $('downloads').append(link);
    link.focus();
    setPhase('restored');
  } catch (e) {
    if (e.message !== 'cancelled') showError(`${name}: ${e.message}`);
  } finally {
    if (document.body.dataset.phase !== 'cancelling') idle();
  }
}

// --- the tensor table and the teaching view -----------------------------------------------------

const COLUMNS = [
  ['name', 'tensor', (t) => t.name],
  ['shape', 'shape', (t) => t.shape.join(' × ')],
  ['parameters', 'parameters', (t) => num(t.parameters)],
  ['label', 'codec', (t) => t.label],
  ['bits_per_weight', 'bits/weight', (t) => fmt(t.bits_per_weight, 4)],
  ['rel_error', 'rel. error', (t) => fmt(t.rel_error, 3)],
  ['reason', 'why', (t) => t.reason],
];
let sortKey = null;
let sortAscending = true;

function renderTensorTable(tensors) {
  const table = $('tensor-table');
  table.replaceChildren();
  const head = el('tr');
  for (const [key, label] of COLUMNS) {
    const arrow = sortKey === key ? (sortAscending ? ' ▲' : ' ▼') : '';
    const button = el('button', { type: 'button', onclick: () => {
      sortAscending = sortKey === key ? !sortAscending : true;
      sortKey = key;
      renderTensorTable(tensors);
    } }, label + arrow);
    head.append(el('th', { 'aria-sort': sortKey === key ? (sortAscending ? 'ascending' : 'descending') : 'none' }, button));
  }
  table.append(el('thead', {}, head));
  const rows = [...tensors];
  if (sortKey) {
    rows.sort((a, b) => {
      const x = a[sortKey]; const y = b[sortKey];
      const c = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
      return sortAscending ? c : -c;
    });
  }
  const body = el('tbody');
  for (const t of rows) {
    const tr = el('tr', { tabindex: '0', 'data-tensor': t.name });
    for (const [, , show] of COLUMNS) tr.append(el('td', {}, show(t)));
    const open = () => teach(t.name);
    tr.addEventListener('click', open);
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
    body.append(tr);
  }
  table.append(body);
}

async function teach(name) {
  $('teach').hidden = false;
  $('teach-caption').textContent = `${name}: computing…`;
  $('teach-charts').replaceChildren();
  try {
    const v = await call('tensorView', { tensor: name, options: options() });
    $('teach-caption').textContent = `${v.name} (${v.shape.join(' × ')}): coded as ${v.chosen}, relative error ${fmt(v.chosen_error, 3)}.`;
    const charts = $('teach-charts');
    for (const [title, svg] of [
      ['Weights', v.histogram_svg],
      ['Restored weights', v.restored_histogram_svg],
      ['Singular values', v.spectrum_svg],
      ['Error vs rank', v.error_vs_rank_svg],
      ['Error vs bits', v.error_vs_bits_svg],
    ]) if (svg) charts.append(svgBlock(title, svg));
    $('teach').scrollIntoView({ block: 'nearest' });
  } catch (e) {
    $('teach-caption').textContent = `${name}: ${e.message}`;
  }
}

// --- wiring -----------------------------------------------------------------------------------

function wire() {
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    openFile(e.dataTransfer.files[0]);
  });
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('file-input').click(); }
  });
  $('file-input').addEventListener('change', (e) => openFile(e.target.files[0]));
  $('bpw-slider').addEventListener('input', () => { $('bpw').value = $('bpw-slider').value; settingsChanged(); });
  $('bpw').addEventListener('input', () => { $('bpw-slider').value = $('bpw').value; settingsChanged(); });
  $('max-error').addEventListener('input', settingsChanged);
  for (const r of document.querySelectorAll('input[name=target]')) {
    r.addEventListener('change', () => {
      const byError = r.value === 'error' && r.checked;
      $('bpw-row').hidden = byError;
      $('error-row').hidden = !byError;
      settingsChanged();
    });
  }
  for (const id of ['method', 'allocator']) $(id).addEventListener('change', settingsChanged);
  $('overrides').addEventListener('change', settingsChanged);
  $('compress').addEventListener('click', compress);
  $('cancel').addEventListener('click', cancel);
  $('backend-choice').addEventListener('change', async (e) => {
    await applyBackend(e.target.value);
    state.measuredKey = null;
    if (state.opened && state.opened.kind === 'checkpoint') await measure();
  });
}

async function main() {
  wire();
  setPhase('starting');
  try {
    await startWorker();
    await fillMethods();
    await applyBackend($('backend-choice').value);
    setPhase('ready');
  } catch (e) {
    showError(`lowbit could not start: ${e.message}`);
  }
}

// The hook the browser tests (tests/web) and a curious person's console use.
window.lowbit = {
  call,
  lastReport: () => (state.result ? state.result.report_json : null),
};

main();
