// Builds the npm package @arbor/web into pack/package/ and packs it into
// pack/arbor-web-<version>.tgz (the path is printed on the last line).
//
//   bash scripts/build-web.sh        # once: the wasm, into web/pkg/
//   cd web && node scripts/package.mjs
//
// The package (see README.md, which it ships):
//   dist/arbor.js                   the API (src/arbor.ts, src/types.ts), ESM
//   dist/react.js                   the React hooks and the Inspector (react/); imports react
//   dist/arbor-worker.js            the Web Worker (src/worker.ts with the wasm-bindgen glue)
//   dist/arbor_client_web_bg.wasm   the replica, loaded by the worker from next to itself
//   types/src/*.d.ts, types/react/{index,context,inspector}.d.ts
// It is built from the same sources as web/dist (build.mjs), not copied
// from it, so the API and the worker always match.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const web = resolve(import.meta.dirname, "..");
const out = join(web, "pack/package");
const wasm = join(web, "pkg/arbor_client_web_bg.wasm");
if (!existsSync(wasm)) {
  console.error("web/pkg/ is empty: run scripts/build-web.sh first (it builds the wasm)");
  process.exit(1);
}
if (!existsSync(join(web, "node_modules/@types/react"))) {
  console.error("web/node_modules lacks @types/react (for the hooks' declarations): run npm ci in web/");
  process.exit(1);
}
const { version, license } = JSON.parse(readFileSync(join(web, "package.json"), "utf8"));

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "dist"), { recursive: true });

const common = { absWorkingDir: web, bundle: true, format: "esm", target: "es2022", logLevel: "warning" };
await build({ ...common, entryPoints: ["src/worker.ts"], outfile: join(out, "dist/arbor-worker.js") });
await build({ ...common, entryPoints: ["src/arbor.ts"], outfile: join(out, "dist/arbor.js"), sourcemap: true });
// React comes from the application. Whatever the hooks import from the
// API at run time (today: types only) comes from ./arbor.js, never a
// second copy bundled in (so `instanceof ArborError` would hold).
const apiIsExternal = {
  name: "api-is-external",
  setup(b) {
    b.onResolve({ filter: /\/src\/(arbor|types)\.js$/ }, () => ({ path: "./arbor.js", external: true }));
  },
};
await build({
  ...common,
  entryPoints: ["react/index.ts"],
  outfile: join(out, "dist/react.js"),
  sourcemap: true,
  external: ["react"],
  plugins: [apiIsExternal],
});
copyFileSync(wasm, join(out, "dist/arbor_client_web_bg.wasm"));
// Type-check the API and the hooks, and emit their declarations into types/.
execFileSync(join(web, "node_modules/.bin/tsc"), ["-p", "tsconfig.package.json"], { cwd: web, stdio: "inherit" });
copyFileSync(join(web, "README.md"), join(out, "README.md"));

const manifest = {
  name: "@arbor/web",
  version,
  description: "Arbor in the browser: a local-first tree replica in a Web Worker (SQLite on OPFS, synced over WebSocket), its typed API and React hooks.",
  license,
  type: "module",
  exports: {
    ".": { types: "./types/src/arbor.d.ts", default: "./dist/arbor.js" },
    "./react": { types: "./types/react/index.d.ts", default: "./dist/react.js" },
    "./arbor-worker.js": "./dist/arbor-worker.js",
    "./arbor_client_web_bg.wasm": "./dist/arbor_client_web_bg.wasm",
    "./package.json": "./package.json",
  },
  types: "./types/src/arbor.d.ts",
  files: ["dist", "types", "README.md"],
  sideEffects: false,
  peerDependencies: { react: "^18.0.0 || ^19.0.0" },
  peerDependenciesMeta: { react: { optional: true } },
};
writeFileSync(join(out, "package.json"), JSON.stringify(manifest, null, 2) + "\n");

const packed = JSON.parse(
  execFileSync("npm", ["pack", "--json", "--pack-destination", join(web, "pack")], {
    cwd: out,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }),
);
const tarball = join(web, "pack", packed[0].filename);
console.log(`${packed[0].entryCount} files, ${(packed[0].size / 1024).toFixed(0)} KiB packed`);
console.log(tarball);
