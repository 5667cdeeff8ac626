// Serves a built single-page app (stackpad-buildd puts it in images of Vite apps).
// Files from ROOT; a path with no file extension that names no file gets index.html (the app's
// router takes it from there); hashed assets are cached for a year, index.html never.
// Node built-ins only.
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { extname, join, normalize, sep } from "node:path";

const ROOT = process.env.STATIC_ROOT || "/app/www";
const PORT = Number(process.env.PORT) || 8080;
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".wasm": "application/wasm",
  ".webmanifest": "application/manifest+json",
};

async function file(path) {
  try {
    const s = await stat(path);
    if (s.isFile()) return { path, size: s.size };
    if (s.isDirectory()) return file(join(path, "index.html"));
  } catch {}
  return null;
}

function send(req, res, status, found) {
  const type = TYPES[extname(found.path).toLowerCase()] || "application/octet-stream";
  const immutable = found.path.startsWith(join(ROOT, "assets") + sep);
  res.writeHead(status, {
    "content-type": type,
    "content-length": found.size,
    "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
    "x-content-type-options": "nosniff",
  });
  if (req.method === "HEAD") return res.end();
  createReadStream(found.path)
    .on("error", () => res.destroy())
    .pipe(res);
}

createServer(async (req, res) => {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  let path;
  try {
    path = decodeURIComponent(new URL(req.url, "http://x").pathname);
  } catch {
    res.writeHead(400).end();
    return;
  }
  const target = join(ROOT, normalize(path));
  if (target !== ROOT && !target.startsWith(ROOT + sep)) {
    res.writeHead(404).end();
    return;
  }
  const found = await file(target);
  if (found) return send(req, res, 200, found);
  if (extname(path) === "") {
    const index = await file(join(ROOT, "index.html"));
    if (index) return send(req, res, 200, index);
  }
  res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found\n");
}).listen(PORT, "0.0.0.0", () => console.log(`serving ${ROOT} on port ${PORT}`));
