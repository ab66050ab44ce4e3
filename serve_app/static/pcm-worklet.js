// The Live view's audio worklet: the microphone's float samples (at the page's 24-kHz AudioContext) as
// PCM16 little-endian chunks of `chunk` samples, posted to the page, which sends each as an append.
"use strict";

class Pcm16Chunks extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions.chunk;
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (channel) {
      for (const sample of channel) {
        this.buffer[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(sample * 32768)));
        if (this.filled === this.chunk) {
          this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
          this.buffer = new Int16Array(this.chunk);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm16-chunks", Pcm16Chunks);
