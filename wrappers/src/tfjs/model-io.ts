import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';

type Tf = typeof tfjs;
type IOHandler = tfjs.io.IOHandler;

const SCHEME = 'file://';

/** The folder (for save) or model.json path (for load) a `file://` URL names, or null for other URLs. */
function pathOf(url: string | string[]): string | null {
  const u = Array.isArray(url) ? url[0] : url;
  return typeof u === 'string' && u.startsWith(SCHEME) ? resolve(u.slice(SCHEME.length)) : null;
}

/**
 * A tfjs IOHandler over `node:fs` for the tfjs Layers format, as tfjs-node's `file://` handler writes it:
 * `DIR/model.json` (topology, training config, weights manifest) and `DIR/weights.bin` (all weights,
 * concatenated). `save` writes both files through temporary names and renames them into place, weights first,
 * so a reader never sees a model.json whose weights are missing. `load` takes the folder or its model.json.
 */
export function nodeFileSystem(tf: Tf, path: string): IOHandler {
  return {
    async save(artifacts) {
      if (artifacts.modelTopology instanceof ArrayBuffer) throw Errors.invalidArg('save', 'binary model topologies are not supported by the file:// handler');
      await mkdir(path, { recursive: true });
      const weights = artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const manifest = [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }];
      // tfjs' own getModelJSONForModelArtifacts is not exported from tf.io: the same fields, by hand.
      const json: tfjs.io.ModelJSON = {
        modelTopology: artifacts.modelTopology!,
        weightsManifest: manifest,
        ...(artifacts.format === undefined ? {} : { format: artifacts.format }),
        ...(artifacts.generatedBy === undefined ? {} : { generatedBy: artifacts.generatedBy }),
        ...(artifacts.convertedBy == null ? {} : { convertedBy: artifacts.convertedBy }),
        ...(artifacts.trainingConfig === undefined ? {} : { trainingConfig: artifacts.trainingConfig }),
        ...(artifacts.signature === undefined ? {} : { signature: artifacts.signature }),
        ...(artifacts.userDefinedMetadata === undefined ? {} : { userDefinedMetadata: artifacts.userDefinedMetadata }),
      };
      const tag = `.tmp-${process.pid}-${Date.now()}`;
      await writeFile(join(path, `weights.bin${tag}`), new Uint8Array(weights));
      await writeFile(join(path, `model.json${tag}`), JSON.stringify(json));
      await rename(join(path, `weights.bin${tag}`), join(path, 'weights.bin'));
      await rename(join(path, `model.json${tag}`), join(path, 'model.json'));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
    async load() {
      let file = path;
      if ((await stat(path).catch(() => null))?.isDirectory()) file = join(path, 'model.json');
      let modelJSON: tfjs.io.ModelJSON;
      try {
        modelJSON = JSON.parse(await readFile(file, 'utf8'));
      } catch (e) {
        throw Errors.data(file, `cannot read a tfjs model.json: ${(e as Error).message}`);
      }
      if (!modelJSON || typeof modelJSON !== 'object' || !('modelTopology' in modelJSON)) throw Errors.data(file, 'has no modelTopology: not a tfjs Layers model.json');
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const specs = manifest.flatMap((g) => g.weights);
        const parts = [];
        for (const group of manifest) for (const p of group.paths) parts.push(await readFile(join(dirname(file), p)));
        const all = Buffer.concat(parts);
        return [specs, all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
      });
    },
  };
}

/**
 * Make `file://` URLs work with `model.save`, `trainer.save` and `tf.loadLayersModel` on Node without
 * tfjs-node (which registers its own handler; nothing is registered when a `file://` handler already exists).
 * `setupTfjs` calls it: tfjs keeps its router registry per process, like its backend.
 */
export function registerFileRouters(tf: Tf): void {
  if (tf.io.getSaveHandlers('file://probe').length > 0) return;
  // A router returns null for URLs it does not handle (tfjs' registry skips those; its type says IOHandler).
  const router = ((url: string | string[]) => {
    const p = pathOf(url);
    return p === null ? null : nodeFileSystem(tf, p);
  }) as unknown as Parameters<Tf["io"]["registerSaveRouter"]>[0];
  tf.io.registerSaveRouter(router);
  tf.io.registerLoadRouter(router);
}
