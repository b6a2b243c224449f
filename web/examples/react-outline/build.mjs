// Builds the example into dist/: type-checks it against the installed
// package's declarations, bundles it with esbuild, and copies the worker
// and the wasm of @arbor/web next to the bundle (where `Arbor.open` looks
// for the worker by default: next to the module, here dist/app.js).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";

process.chdir(import.meta.dirname);
execFileSync("node_modules/.bin/tsc", ["-p", "."], { stdio: "inherit" });
rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: { app: "src/main.tsx" },
  outdir: "dist",
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
for (const asset of ["@arbor/web/arbor-worker.js", "@arbor/web/arbor_client_web_bg.wasm"]) {
  const file = fileURLToPath(import.meta.resolve(asset));
  copyFileSync(file, `dist/${basename(file)}`);
}
copyFileSync("index.html", "dist/index.html");
console.log("built dist/");
