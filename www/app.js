// The page's UI thread: reads settings, talks to the worker, draws what comes back. It never
// computes: every figure shown is the core's (report JSON, SVG charts, the teaching view), or a
// sum of them (a block's totals, the memory line). `document.body.dataset.phase` says what the
// page is doing (the browser tests wait on it).

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
  // How long the last measurement took; one longer than `askAfterSeconds` is not redone for new
  // settings without asking.
  measureSeconds: 0,
  askAfterSeconds: 5,
  // Dropped with the file: model files by name ({name: File}), a .lowbit to try, the rest.
  modelFiles: {},
  droppedLowbit: null,
  ignored: [],
  modelFileNames: [],
  // The Try-it panel: which compressed model it runs ({blob, name}; blob null: the open .lowbit),
  // and whether the worker has loaded the models for it.
  tryModel: null,
  tryLoaded: false,
  // The teaching view shown (the core's `TensorView`), for the tests.
  tensorView: null,
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
    seed: Number($('seed').value || 0),
    calibration_text: calibrationText(),
  };
}

/// The calibration box's text ('' = the built-in paragraph), sent only while the box is shown:
/// text typed for a model before is not this file's.
function calibrationText() {
  return $('calibration-row').hidden ? '' : $('calibration-text').value;
}

// --- settings in the URL (`#bpw=3&method=auto&...`) and as a CLI command ------------------------

/// The form's settings as URL parameters, named as the CLI's flags (`keep`: one per override).
function settingsParams() {
  const p = new URLSearchParams();
  const o = options();
  if (o.max_error !== null) p.set('max-error', $('max-error').value); else p.set('bpw', $('bpw').value);
  p.set('method', o.method);
  for (const rule of o.overrides) p.append('keep', rule);
  p.set('allocator', o.allocator);
  p.set('seed', $('seed').value || '0');
  p.set('backend', $('backend-choice').value);
  return p;
}

/// Sets the form from `location.hash` (values a list does not offer are ignored); returns the
/// backend choice it names, or null.
function applyHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const byError = p.has('max-error');
  if (byError) $('max-error').value = p.get('max-error');
  else if (p.has('bpw')) { $('bpw').value = p.get('bpw'); $('bpw-slider').value = $('bpw').value; }
  if (byError || p.has('bpw')) {
    document.querySelector(`input[name=target][value=${byError ? 'error' : 'bpw'}]`).checked = true;
    $('bpw-row').hidden = byError;
    $('error-row').hidden = !byError;
  }
  const pick = (id, key) => {
    if (p.has(key) && [...$(id).options].some((o) => o.value === p.get(key))) $(id).value = p.get(key);
  };
  pick('method', 'method');
  pick('allocator', 'allocator');
  pick('backend-choice', 'backend');
  if (p.has('seed')) $('seed').value = p.get('seed');
  if (p.has('keep') || p.has('method')) $('overrides').value = p.getAll('keep').join('\n');
  return p.has('backend') ? $('backend-choice').value : null;
}

let hashTimer = null;
/// Writes the settings into the URL (replaced, not a new history entry; at most every 100 ms while
/// the slider moves) and into the CLI command when it is shown.
function settingsToUrl() {
  clearTimeout(hashTimer);
  hashTimer = setTimeout(() => {
    history.replaceState(null, '', `#${settingsParams()}`);
    if (!$('cli-row').hidden) {
      $('cli-command').value = cliCommand();
      $('cli-copied').textContent = '';
    }
  }, 100);
}

/// A word of a shell command, quoted when it holds anything but plain characters.
const shellWord = (w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, "'\\''")}'`);

/// `lowbit compress` with the page's settings: the same run on the command line.
function cliCommand() {
  const name = state.file ? state.file.name : 'model.safetensors';
  const words = ['lowbit', 'compress', name, '-o', `${stem(name)}.lowbit`];
  // Sequence files are always lossless: the CLI refuses a budget, a method or overrides for them.
  if (!(state.opened && state.opened.kind === 'sequence')) {
    const o = options();
    if (o.max_error !== null) words.push('--max-error', $('max-error').value); else words.push('--bpw', $('bpw').value);
    words.push('--method', o.method);
    for (const rule of o.overrides) words.push('--keep', rule);
    words.push('--allocator', o.allocator, '--seed', $('seed').value || '0');
    // The CLI reads the text from a file: the box's text saved under this name.
    if (o.calibration_text) words.push('--calibrate', 'calibration.txt');
  }
  words.push('--backend', $('backend-choice').value);
  return words.map(shellWord).join(' ');
}

async function copyCli() {
  const command = cliCommand();
  $('cli-command').value = command;
  $('cli-row').hidden = false;
  let copied = false;
  try {
    await navigator.clipboard.writeText(command);
    copied = true;
  } catch {
    // No clipboard (permission refused, an insecure context): the field is there to copy from.
  }
  $('cli-command').dataset.copied = String(copied);
  $('cli-copied').textContent = copied ? '(copied to the clipboard)' : '(the browser refused the clipboard: select it and copy)';
  if (!copied) $('cli-command').select();
}

/// What the measurement depends on (the target does not: moving the slider re-allocates at once).
function measureKey(o) {
  return JSON.stringify([o.method, o.overrides, o.seed, state.backend && state.backend.used, o.calibration_text]);
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
  clearOverrideError();
  clearCalibrationError();
}

/// The CLI's flag names in the core's messages, as the form calls them.
const FLAG_WORDS = [
  ['--max-error', 'maximum relative error'], ['--bpw', 'bits per weight'], ['--method', 'method'],
  ['--keep', 'per-tensor overrides'], ['--allocator', 'allocator'], ['--seed', 'seed'],
  ['--backend', 'kernels on'], ['--importance', 'importance'],
];

/// A core error worded for the page: the file's name once (the core's message may name it
/// already: `Error::in_file`), none for a settings error, and the form's words for the CLI's flags
/// (the CLI's own messages are unchanged).
function pageMessage(message, name) {
  let m = message;
  const option = m.startsWith('invalid option: ');
  if (option) m = m.slice('invalid option: '.length);
  if (name && m.startsWith(`${name}: `)) m = m.slice(name.length + 2);
  for (const [flag, words] of FLAG_WORDS) m = m.replace(new RegExp(`${flag}(?![\\w-])`, 'g'), words);
  return name && !option ? `${name}: ${m}` : m.charAt(0).toUpperCase() + m.slice(1);
}

/// An error of a run on the open file: an override's next to the overrides field, the
/// calibration text's (too long, or no token or sentence in it) next to its box, others above.
function showRunError(e, name) {
  if (e.message === 'cancelled') return;
  const field = /^invalid option: override '/.test(e.message) ? 'overrides'
    : /^(invalid option: )?calibration text: /.test(e.message) ? 'calibration-text' : null;
  if (field) {
    const at = field === 'overrides' ? 'overrides-error' : 'calibration-error';
    $(at).textContent = pageMessage(e.message);
    $(at).hidden = false;
    $(field).setAttribute('aria-invalid', 'true');
    setPhase('error');
    return;
  }
  showError(pageMessage(e.message, name));
}
function clearOverrideError() {
  $('overrides-error').hidden = true;
  $('overrides-error').textContent = '';
  $('overrides').removeAttribute('aria-invalid');
}
function clearCalibrationError() {
  $('calibration-error').hidden = true;
  $('calibration-error').textContent = '';
  $('calibration-text').removeAttribute('aria-invalid');
}

// --- progress ---------------------------------------------------------------------------------

// What a stage is called on the page.
const STAGE_WORDS = { analyse: 'measuring', encode: 'encoding', decode: 'decoding' };
let stageStart = 0;
let stageName = '';
let lastProgress = null;
let progressTimer = null;

/// Seconds as the page says them: "40 s", "3 min 5 s".
function roughTime(s) {
  if (s < 60) return `${Math.max(1, Math.round(s))} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - 60 * m)} s`;
}

/// The progress line: the share done, an estimate of the time left as soon as part of the work is
/// done (from the time so far and the parameters done), else the time so far, and the item being
/// worked on ("working on X (n of m)") where the core says which.
function progressLine(p) {
  const fraction = p.total ? p.done / p.total : 0;
  const elapsed = (performance.now() - stageStart) / 1000;
  let time = '';
  if (fraction > 0 && fraction < 1) time = ` · about ${roughTime(elapsed * (1 - fraction) / fraction)} left`;
  else if (elapsed >= 1) time = ` · ${roughTime(elapsed)} so far`;
  const percent = fraction > 0 && fraction < 0.1 ? (100 * fraction).toFixed(1) : (100 * fraction).toFixed(0);
  let what = '';
  if (p.working) what = ` · working on ${p.working}${p.count ? ` (${num(p.index)} of ${num(p.count)})` : ''}`;
  else if (p.item) what = ` · ${p.item} done`;
  return `${STAGE_WORDS[p.stage] || p.stage}: ${percent}%${time}${what}`;
}

function onProgress(p) {
  if (p.stage !== stageName) { stageName = p.stage; stageStart = performance.now(); }
  lastProgress = p;
  $('progress').value = p.total ? p.done / p.total : 0;
  $('progress-text').textContent = progressLine(p);
}

/// The line again every second while a long item runs (the worker is silent meanwhile), so the
/// time moves and the page never looks frozen.
function tickProgress() {
  clearInterval(progressTimer);
  progressTimer = setInterval(() => {
    if (lastProgress && !$('run').hidden) $('progress-text').textContent = progressLine(lastProgress);
  }, 1000);
}

function running(label) {
  $('run').hidden = false;
  $('run-title').textContent = label;
  $('progress').value = 0;
  $('progress-text').textContent = '';
  $('compress').disabled = true;
  for (const b of document.querySelectorAll('#try button')) b.disabled = true;
  stageName = '';
  lastProgress = null;
  tickProgress();
  // "Cancelled. ..." is about the run before: gone once another starts.
  $('remeasure').hidden = true;
  if (['cancelled', 'stale'].includes($('estimate').dataset.note)) {
    $('estimate').textContent = '';
    delete $('estimate').dataset.note;
  }
}
function idle() {
  clearInterval(progressTimer);
  $('run').hidden = true;
  $('compress').disabled = false;
  for (const b of document.querySelectorAll('#try button')) b.disabled = false;
}

/// Stops whatever the worker is doing (it may be deep in a computation: it is terminated at once)
/// and starts a fresh one with the same backend choice; the runs waiting on it end as cancelled.
async function restartWorker() {
  state.worker.terminate();
  for (const job of state.pending.values()) job.reject(new Error('cancelled'));
  state.pending.clear();
  idle();
  await startWorker();
  await applyBackend($('backend-choice').value);
}

/// `restartWorker`, with the open file opened again in the new worker (nothing measured there,
/// no models loaded: the new worker loads them again when asked).
async function restartWithFile() {
  await restartWorker();
  if (state.file) await call('open', { file: state.file, modelFiles: state.modelFiles });
  state.measuredKey = null;
  state.tryLoaded = false;
}

async function cancel() {
  setPhase('cancelling');
  await restartWithFile();
  $('estimate').textContent = 'Cancelled. Change a setting or press Compress to run again.';
  $('estimate').dataset.note = 'cancelled';
  setPhase('cancelled');
}

/// A backend chosen while a measurement runs: the measurement is of the other backend, so it is
/// stopped at once (not finished first, then redone or kept unseen) and started again on the new
/// one, which the fresh worker takes.
async function measureAgainOnNewBackend() {
  setPhase('cancelling');
  await restartWithFile();
  await measure();
}

// --- backend ----------------------------------------------------------------------------------

// The method list is the core's (one enum in the Rust code), not repeated here.
async function fillMethods() {
  const select = $('method');
  const chosen = select.value;
  select.replaceChildren(...(await call('methods')).map(({ name, note }) => el('option', { value: name }, note ? `${name} (${note})` : name)));
  select.value = chosen;
}

/// Where the kernels run, in the page's words (the core's reason stays in the tooltip), and whether
/// the WebGPU adapter is a software one (emulated on the CPU: it works, slowly).
function backendWords(b, info) {
  const name = info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') : '';
  const software = Boolean(info && info.isFallbackAdapter) || /\bCpu\b|swiftshader/i.test(`${b.adapter || ''} ${name} ${b.reason || ''}`);
  if (b.used === 'gpu') return { text: `Kernels run on WebGPU (${name || 'adapter'})`, software };
  const r = b.reason || '';
  let why = '';
  if ($('backend-choice').value === 'cpu') why = 'as chosen';
  else if (/emulated on the CPU/.test(r)) why = 'this browser\'s only WebGPU adapter is a software emulation, slower than the CPU';
  else if (/calibration/.test(r)) why = 'WebGPU was slower than the CPU in a test product';
  else if (/adapter|WebGPU|navigator/i.test(r)) why = 'this browser offers no usable WebGPU adapter';
  return { text: `Kernels run on the CPU (WebAssembly${why ? `; ${why}` : ''})`, software: false };
}

async function applyBackend(choice) {
  const b = await call('backend', { choice });
  state.backend = b;
  // wgpu cannot name a browser's adapter; the browser can.
  const info = b.used === 'gpu' ? await call('adapterInfo') : null;
  const words = backendWords(b, info);
  $('backend-status').textContent = words.text;
  $('backend-status').title = b.reason || b.adapter || '';
  $('backend-status').dataset.used = b.used;
  $('backend-warning').hidden = !(b.used === 'gpu' && words.software);
  $('backend-warning').textContent = $('backend-warning').hidden ? ''
    : 'Warning: this WebGPU adapter is a software emulation on the CPU: it gives the same results, many times more slowly than the CPU choice.';
  return b;
}

// --- input ------------------------------------------------------------------------------------

function renderSummary(opened) {
  const s = $('summary');
  s.replaceChildren();
  const i = opened.inspection;
  if (opened.kind === 'sequence') {
    const counts = i.records ? `, ${num(i.records)} records, ${num(i.residues)} residues` : '';
    s.append(el('p', {}, `${opened.name}: ${i.format || 'sequence'} file, ${bytes(i.bytes)}${counts}. Coded losslessly.`));
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
  const m = opened.model;
  if (m) {
    const what = m.family ? m.description : `the Try-it panel cannot run it: ${m.description}`;
    s.append(el('p', { id: 'model-line' }, `Model files: ${m.files.join(', ')}. ${what}.`));
  }
  if (state.droppedLowbit) s.append(el('p', {}, `Compressed model to try: ${state.droppedLowbit.name} (dropped with it).`));
  if (state.ignored.length) s.append(el('p', { class: 'hint' }, `Not used: ${state.ignored.join(', ')}.`));
  s.hidden = false;
}

/// The name a dropped file has among the model files (`config.json`, `1_Pooling/config.json`, ...),
/// from its path in the dropped folder, or null.
function modelFileName(path) {
  const parts = path.split('/');
  for (let k = parts.length; k >= 1; k--) {
    const name = parts.slice(-k).join('/');
    if (state.modelFileNames.includes(name)) return name;
  }
  return null;
}

/// Sorts dropped files (`[{file, path}]`): model files by name, the checkpoint to open
/// (`model.safetensors`, or the only `.safetensors`), a `.lowbit` to try beside it, the rest unused.
function sortDropped(list) {
  const modelFiles = {};
  const others = [];
  // Shallow paths first: a model folder's own config.json before one in a subfolder.
  const depth = (p) => p.split('/').length;
  for (const item of [...list].sort((a, b) => depth(a.path) - depth(b.path))) {
    const name = list.length > 1 ? modelFileName(item.path) : null;
    if (name && !(name in modelFiles)) modelFiles[name] = item.file; else others.push(item);
  }
  const ext = (item, e) => item.file.name.toLowerCase().endsWith(e);
  const checkpoints = others.filter((o) => ext(o, '.safetensors'));
  const lowbits = others.filter((o) => ext(o, '.lowbit'));
  let main = checkpoints.find((o) => o.file.name === 'model.safetensors') || (checkpoints.length === 1 ? checkpoints[0] : null);
  if (!main && checkpoints.length > 1) {
    throw new Error(`${checkpoints.length} checkpoints were dropped and none is model.safetensors: drop one (sharded checkpoints are not supported)`);
  }
  main = main || lowbits[0] || others[0];
  if (!main) throw new Error('no checkpoint or data file among the dropped files (only model files)');
  const lowbit = main !== lowbits[0] ? lowbits[0] || null : null;
  const ignored = others.filter((o) => o !== main && o !== lowbit).map((o) => o.path);
  return { file: main.file, modelFiles, lowbit: lowbit && lowbit.file, ignored };
}

/// Opens what was dropped or chosen: one file, several, or a folder's files.
async function openDropped(list) {
  if (!list.length) return;
  let picked;
  try {
    picked = sortDropped(list);
  } catch (e) {
    clearError();
    showError(e.message);
    return;
  }
  await openFile(picked.file, picked);
}

/// `[{file, path}]` of a drop, walking dropped folders (`webkitGetAsEntry`). The entries must be
/// taken before the first `await`: the drop's data is gone after the event.
async function droppedFiles(dataTransfer) {
  const files = [...dataTransfer.files];
  const entries = [...(dataTransfer.items || [])].filter((i) => i.kind === 'file')
    .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (!entries.length || entries.some((e) => !e)) return files.map((f) => ({ file: f, path: f.name }));
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      out.push({ file: await new Promise((ok, fail) => entry.file(ok, fail)), path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const e of entries) await walk(e, '');
  return out;
}

/// The files of a file input: their paths inside a chosen folder (`webkitdirectory`) or names.
function chosenFiles(input) {
  return [...input.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name }));
}

async function openFile(file, dropped = {}) {
  if (!file) return;
  // A file chosen while a run goes on replaces it: the run is cancelled, the new file opened.
  const busy = state.pending.size > 0;
  state.file = file; // first: the cancelled run sees that its file is no longer the open one
  setPhase('opening');
  if (busy) await restartWorker();
  clearError();
  for (const u of state.urls) URL.revokeObjectURL(u);
  state.urls = [];
  $('results').hidden = true;
  $('teach').hidden = true;
  $('settings').hidden = true;
  $('summary').hidden = true;
  $('cli-row').hidden = true; // its command named the file before
  $('tensor-filter').value = ''; // a search is of the file before's names
  $('remeasure').hidden = true;
  $('memory-row').hidden = true;
  hideTry();
  state.file = file;
  state.measuredKey = null;
  state.result = null;
  state.modelFiles = dropped.modelFiles || {};
  state.droppedLowbit = dropped.lowbit || null;
  state.ignored = dropped.ignored || [];
  let opened;
  try {
    opened = await call('open', { file, modelFiles: state.modelFiles });
  } catch (e) {
    state.file = null;
    showError(pageMessage(e.message, file.name));
    return;
  }
  state.opened = opened;
  renderSummary(opened);
  const runnable = opened.model && opened.model.family;
  if (runnable && opened.kind === 'lowbit') showTry(null, file.name);
  else if (runnable && opened.kind === 'checkpoint' && state.droppedLowbit) showTry(state.droppedLowbit, state.droppedLowbit.name);
  if (opened.kind === 'lowbit') {
    showLowbitActions(file);
    setPhase('opened');
    return;
  }
  $('settings').hidden = false;
  const vectorish = opened.kind === 'checkpoint';
  for (const id of ['bpw', 'bpw-slider', 'max-error', 'method', 'allocator', 'seed', 'overrides']) $(id).disabled = !vectorish;
  // The model is run over the calibration text only when lowbit runs it (its config.json and
  // tokenizer dropped with it): otherwise there is no text to give.
  $('calibration-row').hidden = !(vectorish && runnable);
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
  $('tensor-tools').hidden = true;
  const d = $('downloads');
  d.replaceChildren(el('button', { type: 'button', onclick: () => restore(file, file.name) }, 'Restore'));
}

// --- measure, estimate, compress --------------------------------------------------------------

async function measure() {
  const o = options();
  const file = state.file;
  running('Measuring every tensor\'s options');
  setPhase('measuring');
  try {
    const t0 = performance.now();
    const plan = await call('analyse', { options: o }, onProgress);
    // Another file opened meanwhile: this measurement is of the old one.
    if (state.file !== file) return;
    state.measuredKey = measureKey(o);
    state.measureSeconds = (performance.now() - t0) / 1000;
    clearError(); // a settings error from before (these settings measured)
    showEstimate(plan);
  } catch (e) {
    if (state.file !== file) return;
    showRunError(e, file.name);
  } finally {
    if (state.file === file && document.body.dataset.phase !== 'cancelling') idle();
  }
}

/// New settings that need a new measurement: measured at once when the last one was quick,
/// otherwise the page says so and waits for "Measure again" (a long analysis is never re-run
/// behind the user's back).
async function measureOrAsk() {
  if (state.measuredKey === null || state.measureSeconds < state.askAfterSeconds) {
    await measure();
    return;
  }
  $('estimate').textContent = `Re-analysis needed: the settings changed since the last measurement (it took ${roughTime(state.measureSeconds)}).`;
  $('estimate').dataset.note = 'stale';
  $('remeasure').hidden = false;
  setPhase('stale');
}

/// Size, memory and download time of the original and the compressed file (`report`: the
/// core's report or plan), at the link speed chosen beside them.
function memoryFigures(report) {
  const inBytes = report.input.bytes;
  const outBytes = report.output.bytes;
  const mbit = Number($('link-speed').value);
  const seconds = (b) => roughTime((8 * b) / (mbit * 1e6));
  const parts = [`File: ${bytes(inBytes)} → ${bytes(outBytes)}.`,
    `Download at ${mbit >= 1000 ? `${mbit / 1000} Gbit/s` : `${mbit} Mbit/s`}: ${seconds(inBytes)} → ${seconds(outBytes)}.`];
  if (report.input.parameters) {
    parts.push(`Memory to load: ${bytes(outBytes)} for the weights kept at this size;`
      + ` ${bytes(4 * report.input.parameters)} decoded to f32 (as the Try-it panel runs them).`);
  }
  return parts.join(' ');
}

function showMemory(report) {
  state.memoryReport = report;
  $('memory').textContent = memoryFigures(report);
  $('memory-row').hidden = false;
}

function showEstimate(plan) {
  $('remeasure').hidden = true;
  showMemory(plan);
  const o = plan.output;
  delete $('estimate').dataset.note;
  $('estimate').textContent = `Estimate: ${bytes(o.bytes)} (${num(o.bytes)} bytes), ${fmt(o.bits_per_weight, 4)} bits per weight, ratio ${fmt(o.ratio, 3)}, relative MSE ${fmt(o.rel_mse_2d, 3)}.${o.sizes_estimated ? ' Sizes estimated from the codes\' histograms: Compress codes the chosen options and keeps the file within the budget.' : ''}`;
  setPhase('estimated');
}

let estimateTimer = null;
let runs = 0; // compress runs started: an estimate asked for before one must not change the phase
function settingsChanged() {
  clearTimeout(estimateTimer);
  settingsToUrl();
  if (!state.opened || state.opened.kind !== 'checkpoint') return;
  setPhase('estimating');
  const runsBefore = runs;
  const file = state.file;
  // An estimate that comes back after a run started or another file was opened is stale.
  const current = () => runs === runsBefore && state.file === file;
  estimateTimer = setTimeout(async () => {
    const o = options();
    if (measureKey(o) !== state.measuredKey) {
      await measureOrAsk();
      return;
    }
    try {
      const plan = await call('estimate', { options: o });
      if (current()) {
        showEstimate(plan);
        clearError();
      }
    } catch (e) {
      if (!current()) return;
      $('estimate').textContent = pageMessage(e.message);
      setPhase('estimated');
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
    $('remeasure').hidden = true;
    if ($('estimate').dataset.note === 'stale') { $('estimate').textContent = ''; delete $('estimate').dataset.note; }
    clearError();
    showResult(result);
    setPhase('done');
  } catch (e) {
    showRunError(e, state.file.name);
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
  ];
  // A sequence file has bytes and residues, not weights: its own figures, its records' table.
  const sequence = report.streams !== undefined;
  if (sequence) rows.push(...sequenceRows(report));
  else rows.push(['bits per weight', fmt(o.bits_per_weight, 5)]);
  if (o.rel_mse_2d !== undefined) rows.push(['relative MSE (2-D float tensors)', fmt(o.rel_mse_2d, 4)]);
  if (report.backend) rows.push(['kernels ran on', report.backend.used === 'gpu' ? $('backend-status').textContent.replace(/^Kernels run on /, '') : 'CPU']);
  if (report.backend && report.backend.fallback) rows.push(['WebGPU failed, finished on the CPU', report.backend.fallback]);
  showMemory(report);
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
  $('charts-count').textContent = `(${(result.charts || []).length})`;
  $('charts-box').hidden = !(result.charts || []).length;
  if (sequence) renderRecordTable(report.records || []);
  else renderTensorTable(report.tensors || []);
  $('results').hidden = false;
  if (state.opened.model && state.opened.model.family) showTry(result.lowbit, lowbitName);
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
    if (e.message !== 'cancelled') showError(pageMessage(e.message, name));
  } finally {
    if (document.body.dataset.phase !== 'cancelling') idle();
  }
}

// --- the Try-it panel: the compressed model next to the original -----------------------------

function hideTry() {
  $('try').hidden = true;
  state.tryModel = null;
  state.tryLoaded = false;
}

/// Shows the panel for a compressed model (`blob` null: the open .lowbit itself).
function showTry(blob, name) {
  state.tryModel = { blob, name };
  state.tryLoaded = false;
  const family = state.opened.model.family;
  const original = state.opened.kind === 'checkpoint';
  $('try-intro').textContent = `${original ? `The original (${state.file.name}) and the compressed model (${name})` : `The compressed model (${name}); drop the original checkpoint with it to compare`} run here, in the page's worker, `
    + 'on the CPU or, if you choose it below, on WebGPU (the "Kernels on" choice applies to compression only). Nothing leaves this page.';
  $('try-models').textContent = '';
  $('try-encoder').hidden = family !== 'encoder';
  $('try-decoder').hidden = family !== 'decoder';
  for (const id of ['try-similarity', 'try-cosines', 'try-eval']) $(id).replaceChildren();
  for (const id of ['try-embed-status', 'try-eval-status', 'gen-original-text', 'gen-original-stats', 'gen-compressed-text', 'gen-compressed-stats']) $(id).textContent = '';
  $('gen-original').hidden = !original;
  $('try-perplexity').hidden = !original;
  $('try-embed').textContent = original ? 'Embed with both models' : 'Embed';
  $('try-generate').textContent = original ? 'Generate with both models' : 'Generate';
  $('try').hidden = false;
}

/// Runs one Try-it job in the worker (loading the models first when needed): progress shown,
/// Cancel available, errors shown in the panel's status line. Returns false when it failed.
async function tryJob(label, phase, body) {
  clearError();
  running(label);
  setPhase(phase);
  try {
    if (!state.tryLoaded) {
      const { blob, name } = state.tryModel;
      $('run-title').textContent = 'Loading the models';
      const info = await call('loadModels', { blob, name }, onProgress);
      state.tryLoaded = true;
      $('try-models').textContent = (info.original ? `Original: ${info.original}. ` : '')
        + `Compressed: ${info.compressed}. Loaded in ${duration(info.seconds)}; runs on ${info.backend}.`;
      $('try-models').dataset.seconds = info.seconds;
      $('run-title').textContent = label;
    }
    await body();
    return true;
  } catch (e) {
    if (e.message !== 'cancelled') showError(`Try it: ${e.message}`);
    return false;
  } finally {
    if (document.body.dataset.phase !== 'cancelling') idle();
  }
}

const f6 = (x) => Number(x).toFixed(6);
const duration = (s) => (s < 1 ? `${(1000 * s).toFixed(1)} ms` : `${s.toFixed(2)} s`);

/// A similarity matrix as a small heatmap table (the value in each cell, 3 decimals; the exact
/// one in its title and data-value).
function heatmap(id, caption, matrix) {
  const table = el('table', { class: 'heatmap', id });
  table.append(el('caption', {}, caption));
  const head = el('tr', {}, el('td'));
  matrix.forEach((_, j) => head.append(el('th', { scope: 'col' }, String(j + 1))));
  table.append(el('thead', {}, head));
  const body = el('tbody');
  matrix.forEach((row, i) => {
    const tr = el('tr', {}, el('th', { scope: 'row' }, String(i + 1)));
    row.forEach((v, j) => {
      const light = 96 - 50 * Math.max(0, Math.min(1, v));
      const td = el('td', { 'data-value': String(v), title: `sentences ${i + 1} and ${j + 1}: ${v}` }, v.toFixed(3));
      td.style.background = `hsl(210 70% ${light}%)`;
      td.style.color = light < 65 ? 'white' : 'inherit';
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(body);
  return table;
}

async function embedSentences() {
  const sentences = $('try-sentences').value.split('\n').map((l) => l.trim()).filter(Boolean);
  if (!sentences.length) { showError('Try it: type at least one sentence'); return; }
  let r;
  const ok = await tryJob('Embedding the sentences', 'embedding', async () => {
    $('progress-text').textContent = `embedding ${sentences.length} sentences with ${state.opened.kind === 'checkpoint' ? 'both models' : 'the model'}`;
    r = await call('embed', { sentences, backend: $('try-backend').value });
  });
  if (!ok) return;
  const pair = $('try-similarity');
  pair.replaceChildren();
  if (r.similarity_original) pair.append(el('div', { class: 'table-wrap' }, heatmap('sim-original', 'Original: cosine between sentences', r.similarity_original)));
  pair.append(el('div', { class: 'table-wrap' }, heatmap('sim-compressed', 'Compressed: cosine between sentences', r.similarity_compressed)));
  const table = $('try-cosines');
  table.replaceChildren(el('caption', {}, r.cosine ? 'Each sentence: cosine between the original\'s and the compressed model\'s embedding' : 'Sentences'));
  table.append(el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, '#'), el('th', { scope: 'col' }, 'sentence'), ...(r.cosine ? [el('th', { scope: 'col' }, 'cosine')] : []))));
  const body = el('tbody');
  r.sentences.forEach((text, i) => {
    const tr = el('tr', {}, el('td', {}, String(i + 1)), el('td', {}, text));
    if (r.cosine) tr.append(el('td', { class: 'num', 'data-value': String(r.cosine[i]) }, f6(r.cosine[i])));
    body.append(tr);
  });
  table.append(body);
  const s = r.summary;
  $('try-embed-status').textContent = `${r.sentences.length} sentences in ${duration(r.seconds)} on ${r.backend}.`
    + (s ? ` Cosine mean ${f6(s.cosine_mean)}, smallest ${f6(s.cosine_min)}; nearest-neighbour agreement ${fmt(100 * s.neighbour_agreement, 4)}%.` : '');
  Object.assign($('try-embed-status').dataset, { backend: r.backend, seconds: r.seconds });
  if (s) Object.assign($('try-embed-status').dataset, { cosineMean: s.cosine_mean, cosineMin: s.cosine_min, neighbourAgreement: s.neighbour_agreement });
  setPhase('embedded');
}

async function generateBoth() {
  const prompt = $('try-prompt').value;
  const args = {
    prompt,
    maxTokens: Math.max(1, Math.floor(Number($('try-max-tokens').value) || 1)),
    temperature: Math.max(0, Number($('try-temperature').value) || 0),
    topK: 0,
    seed: 0,
    backend: $('try-backend').value,
  };
  const which = state.opened.kind === 'checkpoint' ? ['original', 'compressed'] : ['compressed'];
  for (const w of which) { $(`gen-${w}-text`).textContent = ''; $(`gen-${w}-stats`).textContent = w === which[0] ? '' : 'waiting for the original to finish'; }
  await tryJob('Generating', 'generating', async () => {
    // One after the other in the one worker, so each one's tokens per second is its own.
    for (const w of which) {
      const out = $(`gen-${w}-text`);
      const stats = $(`gen-${w}-stats`);
      out.setAttribute('aria-busy', 'true');
      stats.textContent = 'reading the prompt';
      $('progress').removeAttribute('value');
      try {
        const r = await call('generate', { which: w, ...args }, (ev) => {
          out.textContent = ev.text;
          const rate = ev.seconds > 0 ? ` · ${(ev.tokens / ev.seconds).toFixed(1)} tokens/s` : '';
          stats.textContent = `${ev.tokens} tokens${rate}`;
          $('progress-text').textContent = `${w} model: ${ev.tokens} of at most ${args.maxTokens} tokens`;
        });
        out.textContent = r.text;
        out.dataset.done = 'true';
        stats.textContent = `${r.tokens} tokens in ${duration(r.seconds)} · ${r.tokens_per_second.toFixed(1)} tokens/s (prompt ${r.prompt_tokens} tokens) · ${r.backend}`;
        Object.assign(stats.dataset, { tokens: r.tokens, tokensPerSecond: r.tokens_per_second, backend: r.backend });
      } finally {
        out.setAttribute('aria-busy', 'false');
      }
    }
    setPhase('generated');
  });
}

async function perplexity() {
  const text = $('try-eval-text').value;
  let r;
  const ok = await tryJob('Scoring the text with both models', 'evaluating', async () => {
    $('progress-text').textContent = `perplexity of both models on ${text.trim() ? 'the pasted text' : 'the built-in text'}`;
    r = await call('evaluate', { text, backend: $('try-backend').value });
  });
  if (!ok) return;
  const d = r.downstream;
  const rows = [
    ['perplexity_original', 'perplexity, original', fmt(d.perplexity_original, 6)],
    ['perplexity_compressed', 'perplexity, compressed', fmt(d.perplexity_compressed, 6)],
    ['kl_mean', 'mean KL(original ‖ compressed), nats per token', fmt(d.kl_mean, 6)],
    ['top1_agreement', 'top-1 agreement', `${fmt(100 * d.top1_agreement, 6)}%`],
    ['scored', 'positions scored', `${num(d.scored)} (${num(d.tokens)} tokens in ${d.windows} windows of up to ${d.context})`],
  ];
  const table = $('try-eval');
  table.replaceChildren();
  for (const [key, label, shown] of rows) {
    table.append(el('tr', {}, el('th', { scope: 'row' }, label), el('td', { 'data-key': key, 'data-value': String(d[key]) }, shown)));
  }
  $('try-eval-status').textContent = `The ${r.text} text, in ${duration(r.seconds)} on ${r.backend}.`;
  $('try-eval-status').dataset.backend = r.backend;
  setPhase('evaluated');
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

/// A sequence file's figures: bits per input byte, per residue and per base where it has them.
function sequenceRows(report) {
  const o = report.output;
  const rows = [['bits per input byte', fmt(o.bits_per_byte, 4)]];
  if (report.input.records) rows.push(['records, residues', `${num(report.input.records)}, ${num(report.input.residues)}`]);
  if (report.input.residues) rows.push(['bits per residue', fmt(o.bits_per_residue, 4)]);
  if (report.input.bases && o.base_stream_bits_per_base !== undefined) rows.push(['bits per base (the bases\' stream)', fmt(o.base_stream_bits_per_base, 4)]);
  rows.push(['lossless', 'yes: restored byte for byte']);
  return rows;
}

/// The records of a sequence file (FASTA/FASTQ) in the table's place; a text file has none.
function renderRecordTable(records) {
  $('tensors-title').firstChild.textContent = records.length ? 'Records ' : 'Records: none (a text file is coded as one stream) ';
  $('tensors-title').querySelector('small').hidden = true;
  $('tensor-tools').hidden = true;
  const table = $('tensor-table');
  table.replaceChildren();
  if (!records.length) return;
  table.append(el('thead', {}, el('tr', {}, ...['record', 'bases', 'coded bytes', 'bits per base'].map((h) => el('th', {}, h)))));
  const body = el('tbody');
  for (const r of records.slice(0, 1000)) {
    body.append(el('tr', {}, el('td', {}, r.name), el('td', {}, num(r.bases)), el('td', {}, num(r.coded_bytes)), el('td', {}, fmt(r.bits_per_base, 4))));
  }
  table.append(body);
}

// The tensor table is a tree of blocks (`encoder.layer.3.`: a transformer layer's tensors) under
// the tensors outside any block (embeddings, a final norm), like Netron's layer list: a model's
// hundreds of tensors fit on a screen and one layer's can be compared with another's. Sorting by a
// column lists the tensors flat (a ranking across blocks); the search box filters either way.
const tensorTable = { tensors: [], items: [], open: new Set(), filter: '' };
/// Blocks start folded when there are more than this many (a model's layers, not a test's few).
const OPEN_BLOCKS_UP_TO = 8;
const natural = new Intl.Collator('en', { numeric: true });

/// The block a tensor belongs to: its name up to and including the first numeric component that
/// has more after it (`encoder.layer.3.`, `model.layers.12.`), or null (embeddings, a final norm).
function blockOf(name) {
  const parts = name.split('.');
  const k = parts.findIndex((p, i) => i < parts.length - 1 && /^\d+$/.test(p));
  return k < 0 ? null : `${parts.slice(0, k + 1).join('.')}.`;
}

/// The tree's top level: blocks (`{block, tensors}`, their tensors in the file's order) and lone
/// tensors (`{tensor}`), in natural order (layer 2 before layer 10).
function treeItems(tensors) {
  const blocks = new Map();
  const items = [];
  for (const t of tensors) {
    const block = blockOf(t.name);
    if (!block) items.push({ key: t.name, tensor: t });
    else if (blocks.has(block)) blocks.get(block).tensors.push(t);
    else {
      const item = { key: block, block, tensors: [t] };
      blocks.set(block, item);
      items.push(item);
    }
  }
  return items.sort((a, b) => natural.compare(a.key, b.key));
}

/// A block's totals from its tensors' figures in the report: parameters, coded bits (the sections
/// as stored), bits per weight over the block, and the worst relative error in it.
function blockTotals(tensors) {
  const parameters = tensors.reduce((s, t) => s + t.parameters, 0);
  const bits = tensors.reduce((s, t) => s + 8 * t.section_bytes, 0);
  return { parameters, bits, bitsPerWeight: bits / Math.max(1, parameters), worstError: Math.max(...tensors.map((t) => t.rel_error)) };
}

function renderTensorTable(tensors) {
  $('tensors-title').firstChild.textContent = 'Tensors ';
  $('tensors-title').querySelector('small').hidden = false;
  $('tensor-tools').hidden = false;
  tensorTable.tensors = tensors;
  tensorTable.items = treeItems(tensors);
  tensorTable.open = blocksOpenAtFirst();
  tensorTable.filter = '';
  filterTensors($('tensor-filter').value);
}

/// The blocks open while nothing is searched: all of a few, none of many.
function blocksOpenAtFirst() {
  const blocks = tensorTable.items.filter((i) => i.block);
  return new Set(blocks.length <= OPEN_BLOCKS_UP_TO ? blocks.map((b) => b.block) : []);
}

/// Shows the tensors whose names contain `text` (any case): the blocks holding one open, the
/// others hidden. An empty text shows every tensor, the blocks folded as at first.
function filterTensors(text) {
  const needle = text.trim().toLowerCase();
  if (needle) {
    const blocks = tensorTable.items.filter((i) => i.block && i.tensors.some((t) => t.name.toLowerCase().includes(needle)));
    tensorTable.open = new Set(blocks.map((b) => b.block));
  } else if (tensorTable.filter) {
    tensorTable.open = blocksOpenAtFirst();
  }
  tensorTable.filter = needle;
  drawTensorTable();
}

/// A tensor's row: focusable, Enter (or a click) opens its teaching view. `shortName`: the name
/// within its block, shown indented under the block's row.
function tensorRow(t, shortName) {
  const tr = el('tr', { tabindex: '0', 'data-tensor': t.name, class: shortName ? 'in-block' : '' });
  for (const [key, , show] of COLUMNS) {
    tr.append(key === 'name' && shortName ? el('td', { title: t.name }, shortName) : el('td', {}, show(t)));
  }
  const open = () => teach(t.name);
  tr.addEventListener('click', open);
  tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
  return tr;
}

/// A block's row: its toggle (a button, `aria-expanded`) and its totals.
function blockRow(item, shown) {
  const open = tensorTable.open.has(item.block);
  const sum = blockTotals(item.tensors);
  const count = shown < item.tensors.length ? `${shown} of ${item.tensors.length} tensors match` : `${item.tensors.length} tensors`;
  const toggle = el('button', { type: 'button', class: 'block-toggle', 'aria-expanded': String(open), onclick: () => {
    if (open) tensorTable.open.delete(item.block); else tensorTable.open.add(item.block);
    drawTensorTable();
    $('tensor-table').querySelector(`tr[data-block="${CSS.escape(item.block)}"] button`).focus();
  } }, `${open ? '▾' : '▸'} ${item.block.slice(0, -1)}`);
  const cells = {
    name: el('td', {}, toggle, el('span', { class: 'hint' }, ` ${count}`)),
    parameters: el('td', {}, num(sum.parameters)),
    label: el('td', {}, `${bytes(sum.bits / 8)} coded`),
    bits_per_weight: el('td', {}, fmt(sum.bitsPerWeight, 4)),
    rel_error: el('td', { title: 'the worst in the block' }, `≤ ${fmt(sum.worstError, 3)}`),
  };
  const tr = el('tr', {
    class: 'block', 'data-block': item.block, 'data-parameters': String(sum.parameters), 'data-bits': String(sum.bits),
    'data-bits-per-weight': String(sum.bitsPerWeight), 'data-worst-error': String(sum.worstError),
  }, ...COLUMNS.map(([key]) => cells[key] || el('td')));
  // The whole row is the toggle's target for a mouse (the button alone for the keyboard).
  tr.addEventListener('click', (e) => { if (e.target !== toggle) toggle.click(); });
  return tr;
}

function drawTensorTable() {
  const { tensors, items, filter } = tensorTable;
  const matches = (t) => !filter || t.name.toLowerCase().includes(filter);
  const table = $('tensor-table');
  table.replaceChildren();
  const head = el('tr');
  for (const [key, label] of COLUMNS) {
    const arrow = sortKey === key ? (sortAscending ? ' ▲' : ' ▼') : '';
    // A third click on the sorted column goes back to the blocks.
    const button = el('button', { type: 'button', onclick: () => {
      if (sortKey !== key) { sortKey = key; sortAscending = true; } else if (sortAscending) sortAscending = false; else sortKey = null;
      drawTensorTable();
    } }, label + arrow);
    head.append(el('th', { 'aria-sort': sortKey === key ? (sortAscending ? 'ascending' : 'descending') : 'none' }, button));
  }
  table.append(el('thead', {}, head));
  const body = el('tbody');
  const found = tensors.filter(matches);
  if (sortKey) {
    const rows = [...found].sort((a, b) => {
      const x = a[sortKey]; const y = b[sortKey];
      const c = typeof x === 'number' ? x - y : natural.compare(String(x), String(y));
      return sortAscending ? c : -c;
    });
    for (const t of rows) body.append(tensorRow(t));
  } else {
    for (const item of items) {
      if (item.tensor) {
        if (matches(item.tensor)) body.append(tensorRow(item.tensor));
        continue;
      }
      const shown = item.tensors.filter(matches);
      if (!shown.length) continue;
      body.append(blockRow(item, shown.length));
      if (tensorTable.open.has(item.block)) for (const t of shown) body.append(tensorRow(t, t.name.slice(item.block.length)));
    }
  }
  if (!found.length) body.append(el('tr', {}, el('td', { colspan: String(COLUMNS.length) }, 'No tensor name contains that text.')));
  table.append(body);
  const blocks = items.filter((i) => i.block).length;
  $('tensor-count').textContent = filter
    ? `${num(found.length)} of ${num(tensors.length)} tensors match`
    : `${num(tensors.length)} tensors${blocks ? `, ${num(blocks)} blocks` : ''}${sortKey ? ', sorted' : ''}`;
  $('tensor-count').dataset.matches = String(found.length);
}

/// A weight's colour on a heatmap of scale ±`scale`: blue below zero, white at zero, red above.
function heatColour(v, scale) {
  const t = scale > 0 && Number.isFinite(v) ? Math.max(-1, Math.min(1, v / scale)) : 0;
  const fade = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
}

/// A heatmap canvas of a `rows` x `cols` window (row-major `values`), one pixel per weight
/// (scaled up by the style sheet, pixelated), each weight's values in its tooltip.
function heatCanvas(id, label, values, rows, cols, scale, describe) {
  const canvas = el('canvas', { id, class: 'heat', width: String(cols), height: String(rows), role: 'img', 'aria-label': label });
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(cols, rows);
  values.forEach((v, i) => {
    image.data.set([...heatColour(v, scale), 255], 4 * i);
  });
  ctx.putImageData(image, 0, 0);
  canvas.addEventListener('mousemove', (e) => {
    const box = canvas.getBoundingClientRect();
    const r = Math.min(rows - 1, Math.floor(((e.clientY - box.top) / box.height) * rows));
    const c = Math.min(cols - 1, Math.floor(((e.clientX - box.left) / box.width) * cols));
    canvas.title = describe(r, c);
  });
  return canvas;
}

/// The before/after view: the top-left window of the tensor, original and restored (what the
/// .lowbit gives back) on one colour scale, and their difference on its own.
function beforeAfterFigure(w) {
  const { shown_rows: rows, shown_cols: cols } = w;
  const error = w.original.map((v, i) => w.restored[i] - v);
  const cell = (r, c) => `row ${r + 1}, column ${c + 1}: original ${w.original[r * cols + c]}, restored ${w.restored[r * cols + c]}`;
  const panel = (id, title, values, scale) => el('div', { class: 'heat-panel' }, el('p', {}, title),
    heatCanvas(id, `${title}: a heatmap of the window`, values, rows, cols, scale, cell));
  const figure = el('figure', {
    id: 'before-after', 'data-rows': String(w.rows), 'data-cols': String(w.cols), 'data-shown-rows': String(rows),
    'data-shown-cols': String(cols), 'data-scale': String(w.scale), 'data-max-error': String(w.max_error),
  });
  const whole = rows === w.rows && cols === w.cols;
  figure.append(
    el('figcaption', {}, 'Before and after: the weights themselves'),
    el('p', { id: 'before-after-window', class: 'hint' }, whole
      ? `All ${num(w.rows)} × ${num(w.cols)} weights, one cell each.`
      : `Rows 1–${num(rows)} of ${num(w.rows)}, columns 1–${num(cols)} of ${num(w.cols)} (the top-left corner), one cell per weight.`),
    el('div', { class: 'heat-row' },
      panel('heat-original', 'Original', w.original, w.scale),
      panel('heat-restored', 'Restored (what the .lowbit gives back)', w.restored, w.scale),
      panel('heat-error', 'Error (restored − original)', error, w.max_error)),
    el('p', { class: 'hint' }, `Blue below zero, white at zero, red above: ±${fmt(w.scale, 3)} for the original and the restored weights, `
      + `±${fmt(w.max_error, 3)} for the error (its own scale, so that small errors show).`),
  );
  return figure;
}

async function teach(name) {
  $('teach').hidden = false;
  $('teach-caption').textContent = `${name}: computing…`;
  $('teach-charts').replaceChildren();
  state.tensorView = null;
  try {
    const v = await call('tensorView', { tensor: name, options: options() });
    state.tensorView = v;
    $('teach-caption').textContent = `${v.name} (${v.shape.join(' × ')}): coded as ${v.chosen}, relative error ${fmt(v.chosen_error, 3)}.`;
    const charts = $('teach-charts');
    if (v.before_after) charts.append(beforeAfterFigure(v.before_after));
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

/// The built-in examples, opened as dropped files: `lowbit demo`'s checkpoint (made by the core),
/// or a real genome served with the page (examples/lambda.fa, from the page's own origin).
async function openExample(which) {
  if (state.pending.size) {
    state.file = null; // the run going on is of another file: stopped first
    setPhase('opening');
    await restartWorker();
  }
  if (which === 'genome') {
    let blob;
    try {
      const response = await fetch('examples/lambda.fa');
      if (!response.ok) throw new Error(`the page's server answered ${response.status}`);
      blob = await response.blob();
    } catch (e) {
      showError(`The example genome could not be read: ${e.message}`);
      return;
    }
    await openFile(new File([blob], 'lambda.fa', { type: 'text/plain' }));
    return;
  }
  const bytes = await call('demoCheckpoint');
  await openFile(new File([bytes], 'demo.safetensors', { type: 'application/octet-stream' }));
}

/// A .txt file chosen for the calibration box: its text goes into the box (decoded as UTF-8, as
/// the CLI reads `--calibrate`'s file) and is measured as if typed.
async function loadCalibrationFile(e) {
  const file = e.target.files[0];
  e.target.value = ''; // the same file chosen again loads again
  if (!file) return;
  $('calibration-text').value = await file.text();
  settingsChanged();
}

/// A preset: a bits-per-weight budget (the size of a common llama.cpp format), or an error bound
/// (the smallest file whose every tensor keeps its relative error under it).
function usePreset({ bpw, maxError }) {
  const byError = maxError !== undefined;
  document.querySelector(`input[name=target][value=${byError ? 'error' : 'bpw'}]`).checked = true;
  $('bpw-row').hidden = byError;
  $('error-row').hidden = !byError;
  if (byError) {
    $('max-error').value = maxError;
  } else {
    $('bpw').value = bpw;
    $('bpw-slider').value = bpw;
  }
  settingsChanged();
}

// --- wiring -----------------------------------------------------------------------------------

function wire() {
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    await openDropped(await droppedFiles(e.dataTransfer));
  });
  // The zone is a button (role, focus): a click or Enter/Space opens the file picker. Clicks on
  // the "choose files" / "a model folder" labels inside it open their own inputs.
  zone.addEventListener('click', (e) => {
    if (!e.target.closest('label, input, a, button')) $('file-input').click();
  });
  zone.addEventListener('keydown', (e) => {
    if (e.target !== zone) return;
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('file-input').click(); }
  });
  for (const id of ['file-input', 'folder-input']) {
    $(id).addEventListener('change', (e) => openDropped(chosenFiles(e.target)));
  }
  $('try-example').addEventListener('click', () => openExample('checkpoint'));
  $('try-genome').addEventListener('click', () => openExample('genome'));
  $('link-speed').addEventListener('change', () => { if (state.memoryReport) showMemory(state.memoryReport); });
  $('teach-close').addEventListener('click', () => { $('teach').hidden = true; });
  $('tensor-filter').addEventListener('input', (e) => filterTensors(e.target.value));
  for (const b of document.querySelectorAll('#presets .preset')) b.addEventListener('click', () => usePreset(b.dataset));
  $('remeasure').addEventListener('click', () => { clearTimeout(estimateTimer); measure(); });
  $('try-embed').addEventListener('click', embedSentences);
  $('try-generate').addEventListener('click', generateBoth);
  $('try-perplexity').addEventListener('click', perplexity);
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
  for (const id of ['method', 'allocator', 'seed']) $(id).addEventListener('change', settingsChanged);
  $('overrides').addEventListener('change', settingsChanged);
  // On 'change' (the box left), not on every key: each new text runs the model again.
  $('calibration-text').addEventListener('change', settingsChanged);
  $('calibration-file').addEventListener('change', loadCalibrationFile);
  $('compress').addEventListener('click', compress);
  $('copy-cli').addEventListener('click', copyCli);
  $('cancel').addEventListener('click', cancel);
  $('backend-choice').addEventListener('change', async (e) => {
    settingsToUrl();
    if (document.body.dataset.phase === 'measuring') {
      await measureAgainOnNewBackend();
      return;
    }
    const had = state.measuredKey;
    await applyBackend(e.target.value);
    // The worker dropped the measurement made with the other backend.
    if (had !== null) state.measuredKey = 'another backend';
    if (state.opened && state.opened.kind === 'checkpoint' && had !== null) await measureOrAsk();
  });
}

/// A link's settings edited by hand (or another link opened in this tab): applied as if chosen.
async function hashChanged() {
  if (document.body.dataset.phase === 'starting') return;
  const before = $('backend-choice').value;
  applyHash();
  if ($('backend-choice').value !== before) {
    await applyBackend($('backend-choice').value);
    if (state.measuredKey !== null) state.measuredKey = 'another backend';
  }
  settingsChanged();
}

async function main() {
  wire();
  window.addEventListener('hashchange', hashChanged);
  setPhase('starting');
  try {
    await startWorker();
    await fillMethods();
    state.modelFileNames = await call('modelFileNames');
    $('try-sentences').value = (await call('exampleSentences')).join('\n');
    $('builtin-text').textContent = await call('builtinText');
    $('version').textContent = await call('version');
    applyHash(); // after the method list is filled: a shared link's settings
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
  // The teaching view's data (the before/after window's values among it).
  lastTensorView: () => state.tensorView,
  // The tests make every measurement count as long (0) to see the question without a long run.
  setAskAfterSeconds: (s) => { state.askAfterSeconds = s; },
};

main();
