// In this repository the example takes next and react from the repository's node_modules (root `npm ci`) and
// sanity-fly-sync from its own node_modules (the packed tarball, unpacked by local/next-app.mjs); a real app needs
// none of this file.
import {fileURLToPath} from 'node:url'

const repository = fileURLToPath(new URL('../..', import.meta.url))

/** @type {import('next').NextConfig} */
export default {
  turbopack: {root: repository},
  outputFileTracingRoot: repository,
}
