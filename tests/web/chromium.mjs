// Debian's Chromium as the browser tests and the web benchmark launch it (installed with apt, never `playwright install`): headless,
// no network of its own, WebGPU on (SwiftShader where there is no GPU).
import { chromium } from 'playwright-core';

export function launch(executablePath = '/usr/bin/chromium') {
  return chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--enable-unsafe-webgpu'],
  });
}
