// Drives the web demo in headless Chromium with playwright-core: opens the
// page, waits for the model, and then, as asked, runs token ids from zero
// states (per-step logits and latency), times a benchmark, types text into
// the keyboard and takes a screenshot. Prints one JSON object on stdout.
//
//   node drive.mjs URL [--ids 1,2,3] [--bench N] [--type TEXT]
//                      [--screenshot FILE] [--timeout MS]
//
// Chromium: $CHROMIUM_PATH, else the first of chromium / chromium-browser /
// google-chrome on the PATH or in /usr/bin.

import {existsSync} from 'node:fs';
import {delimiter, join} from 'node:path';
import {chromium} from 'playwright-core';

function findChromium() {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  const dirs = [...(process.env.PATH || '').split(delimiter), '/usr/bin'];
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    for (const dir of dirs) {
      const path = join(dir, name);
      if (dir && existsSync(path)) return path;
    }
  }
  throw new Error('no Chromium found: set CHROMIUM_PATH or run scripts/setup_browser.sh');
}

function parseArgs(argv) {
  const args = {url: null, ids: null, bench: 0, type: null, screenshot: null, timeout: 60000};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--ids') args.ids = next().split(',').filter(Boolean).map(Number);
    else if (a === '--bench') args.bench = Number(next());
    else if (a === '--type') args.type = next();
    else if (a === '--screenshot') args.screenshot = next();
    else if (a === '--timeout') args.timeout = Number(next());
    else if (!args.url) args.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!args.url) throw new Error('usage: node drive.mjs URL [options]');
  return args;
}

const args = parseArgs(process.argv.slice(2));
const browser = await chromium.launch({
  executablePath: findChromium(),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const result = {console: [], errors: []};
try {
  const page = await browser.newPage({viewport: {width: 900, height: 520}});
  page.on('console', (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => result.errors.push(String(e)));
  await page.goto(args.url);
  await page.waitForFunction(
    () => document.body.dataset.ready === 'true' || document.body.dataset.error,
    null, {timeout: args.timeout});
  const error = await page.evaluate(() => document.body.dataset.error || null);
  if (error) throw new Error(`the page failed: ${error}`);
  result.manifest = await page.evaluate(() => window.keyboard.manifest);
  result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  if (args.ids) result.run = await page.evaluate((ids) => window.keyboard.runIds(ids), args.ids);
  if (args.bench) result.bench = await page.evaluate((n) => window.keyboard.benchmark(n), args.bench);
  if (args.type !== null) {
    await page.click('#text');
    await page.keyboard.type(args.type, {delay: 15});
    await page.evaluate(() => window.keyboard.keyboard.queue);
    result.suggestions = await page.$$eval('.suggestion', (bs) => bs.map((b) => b.textContent));
    result.latency = await page.textContent('#latency');
    result.context = await page.textContent('#context');
  }
  if (args.screenshot) await page.screenshot({path: args.screenshot, fullPage: true});
} catch (e) {
  result.errors.push(String(e.stack || e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
