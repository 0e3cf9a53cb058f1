// The Web Worker that owns the wasm module: every computation of the page runs here, never on the
// UI thread. Requests are `{id, cmd, args}`; answers `{id, result}` or `{id, error}`, with
// `{id, progress}` messages in between. Requests run one after another (the core keeps one open
// file); cancelling is the page terminating this worker and starting a new one.
import init, * as lowbit from './pkg/lowbit.js';

const ready = init();

const commands = {
  methods: () => lowbit.methods(),
  version: () => lowbit.version(),
  demoCheckpoint: () => lowbit.demo_checkpoint(),
  builtinText: () => lowbit.builtin_text(),
  modelFileNames: () => lowbit.model_file_names(),
  open: ({ file, modelFiles }) => lowbit.open(file, modelFiles || undefined),
  backend: ({ choice }) => lowbit.set_backend(choice),
  analyse: async ({ options }, progress) => JSON.parse(await lowbit.analyse(options, progress)),
  estimate: ({ options }) => JSON.parse(lowbit.estimate(options)),
  compress: ({ options }, progress) => lowbit.compress(options, progress),
  compressSequence: (_, progress) => lowbit.compress_sequence(progress),
  restore: ({ blob, name }, progress) => lowbit.restore(blob, name, progress),
  tensorView: ({ tensor, options }) => lowbit.tensor_view(tensor, options),
  checkKernels: () => lowbit.check_kernels(),
  // The Try-it panel: the model runtime (`backend`: 'cpu', in this worker, or 'webgpu').
  loadModels: ({ blob, name }, progress) => lowbit.load_models(blob || undefined, name, progress),
  exampleSentences: () => lowbit.example_sentences(),
  embed: ({ sentences, backend }) => lowbit.embed(sentences, backend || 'cpu'),
  generate: ({ which, prompt, maxTokens, temperature, topK, seed, backend }, progress) =>
    lowbit.generate(which, prompt, maxTokens, temperature, topK, seed, progress, backend || 'cpu'),
  evaluate: ({ text, backend }) => lowbit.evaluate(text, backend || 'cpu'),
  adapterInfo: async () => {
    // What the browser itself says about its WebGPU adapter (the page shows it).
    if (!self.navigator.gpu) return null;
    const adapter = await self.navigator.gpu.requestAdapter();
    if (!adapter) return null;
    const info = adapter.info || {};
    return {
      vendor: info.vendor || '',
      architecture: info.architecture || '',
      description: info.description || '',
      isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    };
  },
};

let queue = Promise.resolve();

self.onmessage = ({ data }) => {
  const { id, cmd, args } = data;
  queue = queue.then(async () => {
    const progress = (p) => self.postMessage({ id, progress: p });
    try {
      await ready;
      const run = commands[cmd];
      if (!run) throw new Error(`unknown command ${cmd}`);
      self.postMessage({ id, result: await run(args || {}, progress) });
    } catch (e) {
      self.postMessage({ id, error: String((e && e.message) || e) });
    }
  });
};

ready.then(
  () => self.postMessage({ ready: true }),
  (e) => self.postMessage({ ready: false, error: String((e && e.message) || e) }),
);
