// Bundles the browser side into dist/: the API (arbor.js + .d.ts types),
// the worker (arbor-worker.js + the wasm it loads) and the demo outliner.
// Run by scripts/build-web.sh after the wasm build (which fills pkg/).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, existsSync } from "node:fs";

const dist = "dist";
if (!existsSync("pkg/arbor_client_web_bg.wasm")) {
  console.error("pkg/ is empty: run scripts/build-web.sh (it builds the wasm first)");
  process.exit(1);
}
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const common = { bundle: true, format: "esm", target: "es2022", sourcemap: true, logLevel: "warning" };
await build({ ...common, entryPoints: { "arbor-worker": "src/worker.ts" }, outdir: dist });
await build({ ...common, entryPoints: { arbor: "src/arbor.ts", demo: "demo/main.ts" }, outdir: dist, splitting: true });
copyFileSync("pkg/arbor_client_web_bg.wasm", `${dist}/arbor_client_web_bg.wasm`);
copyFileSync("demo/index.html", `${dist}/index.html`);
copyFileSync("demo/style.css", `${dist}/style.css`);
// Type-check everything, then emit the API's declarations.
execFileSync("node_modules/.bin/tsc", ["--noEmit", "-p", "."], { stdio: "inherit" });
execFileSync("node_modules/.bin/tsc", ["-p", "tsconfig.lib.json"], { stdio: "inherit" });
console.log(`built ${dist}/`);
