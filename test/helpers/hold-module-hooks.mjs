/** The loader hooks of hold-module.mjs; they run on the loader's own thread. */
import { readFile } from 'node:fs/promises';

let hold = null;

export function initialize(data) {
  hold = data?.suffix && data?.fifo ? data : null;
}

export async function load(url, context, nextLoad) {
  if (hold !== null && url.endsWith(hold.suffix)) {
    const { fifo } = hold;
    hold = null;
    // Returns once the writer has closed its end.
    await readFile(fifo);
  }
  return nextLoad(url, context);
}
