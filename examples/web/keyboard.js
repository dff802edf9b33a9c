// Next-word keyboard on a keras-l0 streaming .tflite, with LiteRT.js.
//
// Everything the code needs to know about the model comes from its
// manifest (keras_l0.manifest, written beside the .tflite): the signature
// key, the token input and logits output names, the state input -> output
// pairs with their shapes, the vocabulary file and the special tokens.
// One call advances the model by one token; the states it returns are fed
// back at the next call, and reset to zero at a new sentence.

import {Tensor, loadAndCompile, loadLiteRt} from '@litertjs/core';

const WASM_DIR = new URL('node_modules/@litertjs/core/wasm/', document.baseURI).href;
const TYPED = {float32: Float32Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array};

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/** A streaming language model: its manifest, vocabulary and state loop. */
export class NextWordModel {
  static async load(manifestUrl) {
    const manifestResponse = await fetch(manifestUrl);
    if (!manifestResponse.ok) throw new Error(`cannot fetch ${manifestUrl}: ${manifestResponse.status}`);
    const manifest = await manifestResponse.json();
    if (manifest.format !== 'keras-l0-manifest' || manifest.version !== 1) {
      throw new Error(`${manifestUrl} is not a keras-l0-manifest version 1`);
    }
    if (manifest.sequence_mode !== 'streaming' || !manifest.language_model) {
      throw new Error('the keyboard needs a streaming language model (sequence_mode "streaming", language_model set)');
    }
    const base = new URL(manifestUrl, document.baseURI);
    const lm = manifest.language_model;
    const vocabText = await (await fetch(new URL(lm.vocabulary_file, base))).text();
    const vocabulary = vocabText.split('\n');
    if (vocabulary[vocabulary.length - 1] === '') vocabulary.pop();
    if (lm.vocabulary_size !== null && vocabulary.length !== lm.vocabulary_size) {
      throw new Error(`vocabulary has ${vocabulary.length} words, the manifest says ${lm.vocabulary_size}`);
    }
    await loadLiteRt(WASM_DIR, {threads: false});
    const modelBytes = new Uint8Array(await (await fetch(new URL(manifest.model.file, base))).arrayBuffer());
    if (modelBytes.length !== manifest.model.bytes) {
      throw new Error(`${manifest.model.file} has ${modelBytes.length} bytes, the manifest says ${manifest.model.bytes}`);
    }
    const compiled = await loadAndCompile(modelBytes, {accelerator: 'wasm', cpuOptions: {numThreads: 1}});
    return new NextWordModel(manifest, vocabulary, compiled);
  }

  constructor(manifest, vocabulary, compiled) {
    this.manifest = manifest;
    this.vocabulary = vocabulary;
    this.compiled = compiled;
    this.runner = compiled.signatures[manifest.signature];
    if (!this.runner) throw new Error(`the file has no signature '${manifest.signature}'`);
    const lm = manifest.language_model;
    const byName = Object.fromEntries(manifest.inputs.map((t) => [t.name, t]));
    this.tokenInput = byName[lm.token_input];
    this.logitsOutput = manifest.outputs.find((t) => t.name === lm.logits_output);
    this.states = manifest.states;
    this.index = new Map(vocabulary.map((word, i) => [word, i]));
    this.special = Object.fromEntries(Object.entries(lm.special_tokens).map(([role, t]) => [role, t.id]));
    this.specialIds = new Set(Object.values(this.special));
    this.reset();
  }

  /** Zero states: the start of a new sequence. */
  reset() {
    this.stateValues = {};
    for (const s of this.states) {
      this.stateValues[s.input] = new TYPED[s.dtype](product(s.shape));
    }
    this.logits = null;
    this.fed = [];
  }

  /** Feeds one token id; returns {logits: Float32Array, ms}. */
  async step(id) {
    const start = performance.now();
    const tokens = new TYPED[this.tokenInput.dtype](product(this.tokenInput.shape));
    tokens[tokens.length - 1] = id;
    const inputs = {[this.tokenInput.name]: new Tensor(tokens, this.tokenInput.shape)};
    for (const s of this.states) {
      inputs[s.input] = new Tensor(this.stateValues[s.input], s.shape);
    }
    const outputs = await this.runner.run(inputs);
    for (const s of this.states) {
      this.stateValues[s.input] = outputs[s.output].toTypedArray().slice();
    }
    const logits = outputs[this.logitsOutput.name].toTypedArray().slice();
    for (const t of Object.values(inputs)) t.delete();
    for (const t of Object.values(outputs)) t.delete();
    const ms = performance.now() - start;
    this.logits = logits;
    this.fed.push(id);
    return {logits, ms};
  }

  idOf(word) {
    const id = this.index.get(word);
    return id === undefined ? this.special.unknown : id;
  }

  /** The k most likely next words (special tokens left out), among the
   * words that start with `prefix` when one is given. */
  topK(k, prefix = '') {
    const best = [];
    const logits = this.logits;
    if (!logits) return best;
    const width = this.vocabulary.length;
    const offset = logits.length - width;
    for (let i = 0; i < width; i++) {
      if (this.specialIds.has(i)) continue;
      if (prefix && !this.vocabulary[i].startsWith(prefix)) continue;
      const v = logits[offset + i];
      if (best.length < k || v > best[best.length - 1].logit) {
        best.push({word: this.vocabulary[i], id: i, logit: v});
        best.sort((a, b) => b.logit - a.logit);
        if (best.length > k) best.pop();
      }
    }
    let max = -Infinity;
    for (let i = 0; i < width; i++) max = Math.max(max, logits[offset + i]);
    let sum = 0;
    for (let i = 0; i < width; i++) sum += Math.exp(logits[offset + i] - max);
    for (const b of best) b.probability = Math.exp(b.logit - max) / sum;
    return best;
  }
}

// PTB's text: lower case, numbers as "N", contractions split ("do n't",
// "it 's"), no punctuation; ". ! ?" end a sentence.
const CONTRACTION = /^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$/;
const NUMBER = /^[0-9][0-9.,:\/-]*$/;

export function sentenceWords(text) {
  const sentences = text.toLowerCase().split(/[.!?]+/);
  const current = sentences[sentences.length - 1];
  const endsWord = /\S$/.test(current);
  const raw = current.split(/\s+/).filter(Boolean);
  const prefix = endsWord ? raw.pop().replace(/[^a-z0-9'&$-]/g, '') : '';
  const words = [];
  for (let w of raw) {
    w = w.replace(/[^a-z0-9'&$-]/g, '');
    if (!w) continue;
    if (NUMBER.test(w)) {
      words.push('N');
      continue;
    }
    const m = w.match(CONTRACTION);
    if (m) words.push(m[1], m[2]);
    else words.push(w);
  }
  return {words, prefix: NUMBER.test(prefix) ? '' : prefix};
}

function median(values) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The page: a text box, three suggestions, latency. */
export class Keyboard {
  constructor(model, elements) {
    this.model = model;
    this.el = elements;
    this.latencies = [];
    this.queue = Promise.resolve();
  }

  /** Brings the model's states to the words of the current sentence: only
   * the new words are fed when the text grew, else from zero states. */
  async sync(text) {
    const {words, prefix} = sentenceWords(text);
    const m = this.model;
    const wanted = [m.special.end_of_sentence, ...words.map((w) => m.idOf(w))];
    const isPrefix = m.fed.length <= wanted.length && m.fed.every((id, i) => id === wanted[i]);
    if (!isPrefix || m.fed.length === 0) m.reset();
    for (let i = m.fed.length; i < wanted.length; i++) {
      const {ms} = await m.step(wanted[i]);
      this.latencies.push(ms);
    }
    return {words, prefix, suggestions: m.topK(3, prefix)};
  }

  update() {
    const text = this.el.input.value;
    this.queue = this.queue.then(() => this.sync(text)).then((r) => this.render(r));
    return this.queue;
  }

  render({words, prefix, suggestions}) {
    this.el.suggestions.replaceChildren(...suggestions.map((s) => {
      const b = document.createElement('button');
      b.className = 'suggestion';
      b.textContent = s.word;
      b.title = `p = ${s.probability.toFixed(3)}`;
      b.addEventListener('click', () => this.accept(s.word, prefix));
      return b;
    }));
    const last = this.latencies[this.latencies.length - 1];
    this.el.latency.textContent = this.latencies.length
      ? `last token ${last.toFixed(3)} ms · median ${median(this.latencies).toFixed(3)} ms over ${this.latencies.length} tokens`
      : '';
    this.el.context.textContent = `context: <eos> ${words.join(' ')}${prefix ? ` [${prefix}…]` : ''}`;
  }

  accept(word, prefix) {
    const v = this.el.input.value;
    // Replace the word being typed, or start a new one after the space.
    this.el.input.value = (prefix ? v.replace(/\S+$/, '') : v) + word + ' ';
    this.el.input.focus();
    this.update();
  }
}

function describe(manifest, vocabulary) {
  const states = manifest.states.map((s) => `${s.input} [${s.shape.join('×')}]`).join(', ');
  return `${manifest.model.file} (${(manifest.model.bytes / 1024).toFixed(0)} KiB, ` +
    `quantization ${manifest.quantization}) · signature "${manifest.signature}" · ` +
    `${vocabulary.length} words · states ${states}`;
}

async function main() {
  const params = new URLSearchParams(location.search);
  const manifestUrl = params.get('manifest') || 'model/slim/gated_slim_streaming.manifest.json';
  const el = {
    status: document.getElementById('status'),
    input: document.getElementById('text'),
    suggestions: document.getElementById('suggestions'),
    latency: document.getElementById('latency'),
    context: document.getElementById('context'),
    info: document.getElementById('info'),
  };
  try {
    const model = await NextWordModel.load(manifestUrl);
    const keyboard = new Keyboard(model, el);
    el.info.textContent = describe(model.manifest, model.vocabulary);
    el.input.disabled = false;
    el.input.addEventListener('input', () => keyboard.update());
    await keyboard.update();
    el.status.textContent = 'ready';
    window.keyboard = {
      model,
      keyboard,
      manifest: model.manifest,
      /** Runs `ids` from zero states; per-step logits and ms. */
      async runIds(ids) {
        model.reset();
        const logits = [];
        const ms = [];
        for (const id of ids) {
          const r = await model.step(id);
          logits.push(Array.from(r.logits));
          ms.push(r.ms);
        }
        model.reset();
        return {logits, ms};
      },
      /** `steps` tokens cycled from the vocabulary, timed one by one. */
      async benchmark(steps) {
        model.reset();
        const ms = [];
        for (let i = 0; i < steps; i++) ms.push((await model.step((i * 7919) % model.vocabulary.length)).ms);
        model.reset();
        return {ms, median: median(ms)};
      },
      type: (text) => {
        el.input.value = text;
        return keyboard.update();
      },
    };
    document.body.dataset.ready = 'true';
  } catch (e) {
    el.status.textContent = `error: ${e.message}`;
    document.body.dataset.error = String(e.stack || e);
    throw e;
  }
}

if (typeof document !== 'undefined' && document.getElementById('text')) main();
