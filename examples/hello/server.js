// The sample app the README's main job deploys: a plain Node.js HTTP server, no dependencies.
const http = require("http");

const port = Number(process.env.PORT || 3000);
const version = process.env.APP_VERSION || require("./package.json").version;

const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(200, { "content-type": "text/plain" });
  res.end(`Hello from Stackpad! version ${version}\n`);
});

server.listen(port, () => console.log(`hello listening on :${port}, version ${version}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
