// Runs the built Worker (worker-realtime/build) in one workerd process
// through Miniflare's API, as Cloudflare runs it: requests reach the
// Worker's own socket (a direct socket: Miniflare's own entry socket goes
// through its `core:entry` Worker, a JavaScript dev router that production
// does not have).
// (`wrangler dev` puts a second, proxying workerd in front, which adds a
// hop production does not have.)
//
//   node tests/workerd/miniflare.mjs PORT SERVER_URL SECRET BUILD_DIR
//
// Env: ARBOR_WORKER_TOOLS, the tools folder of scripts/build-worker.sh
// (miniflare ships inside its wrangler).
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [, , port, server, secret, build] = process.argv;
const tools = process.env.ARBOR_WORKER_TOOLS;
if (!tools) throw new Error("set ARBOR_WORKER_TOOLS (bash scripts/build-worker.sh --tools)");
const { Miniflare } = await import(
  pathToFileURL(join(tools, "node_modules/miniflare/dist/src/index.js")).href
);
const mf = new Miniflare({
  host: "127.0.0.1",
  // The entry socket, unused: clients connect to the direct socket.
  port: 0,
  unsafeDirectSockets: [{ host: "127.0.0.1", port: Number(port) }],
  modules: true,
  modulesRoot: build,
  scriptPath: join(build, "index.js"),
  modulesRules: [
    { type: "CompiledWasm", include: ["**/*.wasm"] },
    { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
  ],
  compatibilityDate: "2025-09-01",
  bindings: { ARBOR_SERVER_URL: server, ARBOR_JWT_SECRET: secret },
  durableObjects: { ROOMS: { className: "RoomObject", useSQLite: true } },
});
await mf.ready;
console.log("ready");
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
