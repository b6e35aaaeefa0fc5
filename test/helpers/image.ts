/** A real multi-layer OCI image built with umoci and pushed with skopeo, as a user without Docker would. */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeBlob } from './registry.js';

const run = promisify(execFile);

export interface PushedImage {
  ref: string;
  /** Digests and sizes of the image's blobs (layers + config). */
  blobs: { digest: string; size: number }[];
}

export async function buildAndPushImage(dir: string, registryHost: string, repo: string, layerSizes: number[], creds?: string): Promise<PushedImage> {
  const layout = join(dir, 'layout');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:v1`]);
  for (const [i, size] of layerSizes.entries()) {
    const file = join(dir, `layer${i}.bin`);
    await writeFile(file, makeBlob(size, 100 + i));
    await run('umoci', ['insert', '--image', `${layout}:v1`, file, `/data/layer${i}.bin`]);
  }
  const ref = `${registryHost}/${repo}:v1`;
  await run('skopeo', ['copy', '--dest-tls-verify=false', ...(creds ? ['--dest-creds', creds] : []), `oci:${layout}:v1`, `docker://${ref}`]);
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
  const manifestDigest: string = index.manifests[0].digest;
  const manifest = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', manifestDigest.slice(7)), 'utf8'));
  const blobs = [manifest.config, ...manifest.layers].map((d: { digest: string; size: number }) => ({ digest: d.digest, size: d.size }));
  return { ref, blobs };
}

/** registries.conf making `proxyHost` a mirror of `registryHost` (both plain HTTP). */
export async function mirrorConf(dir: string, registryHost: string, proxyHost: string): Promise<string> {
  const file = join(dir, 'registries.conf');
  await writeFile(
    file,
    `[[registry]]\nprefix = "${registryHost}"\nlocation = "${registryHost}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${proxyHost}"\ninsecure = true\n`,
  );
  return file;
}

export function skopeo(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('skopeo', args, { maxBuffer: 1 << 24 }, (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }));
  });
}

export interface PushedMultiArch {
  ref: string;
  /** Per platform (`os/arch`): its manifest's blobs (config + layers). */
  platforms: Record<string, { digest: string; size: number }[]>;
}

/**
 * A real multi-platform image: one image per platform built with umoci (each with its own config and layers), an
 * OCI image index over them written into the same layout, and the whole pushed with `skopeo copy --all`.
 */
export async function buildAndPushMultiArchImage(dir: string, registryHost: string, repo: string, platforms: { os: string; arch: string; layerSizes: number[] }[], creds?: string): Promise<PushedMultiArch> {
  const layout = join(dir, 'multi');
  await run('umoci', ['init', '--layout', layout]);
  const out: PushedMultiArch['platforms'] = {};
  for (const [p, { os, arch, layerSizes }] of platforms.entries()) {
    const tag = `${os}-${arch}`;
    await run('umoci', ['new', '--image', `${layout}:${tag}`]);
    await run('umoci', ['config', '--image', `${layout}:${tag}`, '--os', os, '--architecture', arch]);
    for (const [i, size] of layerSizes.entries()) {
      const file = join(dir, `${tag}-layer${i}.bin`);
      await writeFile(file, makeBlob(size, 200 + p * 10 + i));
      await run('umoci', ['insert', '--image', `${layout}:${tag}`, file, `/data/${arch}-${i}.bin`]);
    }
  }
  const root = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; size: number; mediaType: string; annotations?: Record<string, string> }[] };
  const entries = [];
  for (const { os, arch } of platforms) {
    const m = root.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === `${os}-${arch}`)!;
    const manifest = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', m.digest.slice(7)), 'utf8'));
    out[`${os}/${arch}`] = [manifest.config, ...manifest.layers].map((d: { digest: string; size: number }) => ({ digest: d.digest, size: d.size }));
    entries.push({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: { os, architecture: arch } });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries }));
  const { createHash } = await import('node:crypto');
  const indexDigest = createHash('sha256').update(index).digest('hex');
  await writeFile(join(layout, 'blobs', 'sha256', indexDigest), index);
  root.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${indexDigest}`, size: index.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } });
  await writeFile(join(layout, 'index.json'), JSON.stringify(root));
  const ref = `${registryHost}/${repo}:multi`;
  await run('skopeo', ['copy', '--all', '--dest-tls-verify=false', ...(creds ? ['--dest-creds', creds] : []), `oci:${layout}:multi`, `docker://${ref}`]);
  return { ref, platforms: out };
}
