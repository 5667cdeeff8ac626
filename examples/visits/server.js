// Counts visits in a Stackpad managed Redis (a `cache` service with `engine: redis`), with
// node's built-ins only: the Redis protocol (RESP) over a plain TCP socket.
//
// The service's env says `REDIS_URL = "${{ cache.REDIS_URL }}"`; Stackpad resolves it at each
// deploy to redis://default:<password>@cache.<environment>.internal:6379.
const http = require("http");
const net = require("net");

const port = Number(process.env.PORT || 3000);
const redisUrl = new URL(process.env.REDIS_URL || "redis://127.0.0.1:6379");

// One RESP array of bulk strings per command.
function encode(args) {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");
}

// Sends `commands` on a new connection; resolves with one reply line per command (every
// command used here answers a one-line reply: +OK, :<integer> or -ERR).
function redis(commands) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(redisUrl.port || 6379), redisUrl.hostname);
    let buffered = "";
    const replies = [];
    socket.setTimeout(3000, () => socket.destroy(new Error("redis did not answer in 3 s")));
    socket.on("connect", () => socket.write(commands.map(encode).join("")));
    socket.on("data", (chunk) => {
      buffered += chunk.toString("utf8");
      let end;
      while ((end = buffered.indexOf("\r\n")) >= 0) {
        replies.push(buffered.slice(0, end));
        buffered = buffered.slice(end + 2);
      }
      if (replies.length >= commands.length) {
        socket.end();
        const error = replies.find((r) => r.startsWith("-"));
        if (error) reject(new Error(`redis: ${error.slice(1)}`));
        else resolve(replies);
      }
    });
    socket.on("error", reject);
  });
}

async function countVisit() {
  const user = decodeURIComponent(redisUrl.username || "default");
  const password = decodeURIComponent(redisUrl.password || "");
  const auth = password ? [["AUTH", user, password]] : [];
  const replies = await redis([...auth, ["INCR", "visits"]]);
  return Number(replies[replies.length - 1].slice(1));
}

const server = http.createServer(async (req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  try {
    const visits = await countVisit();
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`visits ${visits}\n`);
  } catch (e) {
    res.writeHead(503, { "content-type": "text/plain" });
    res.end(`${e.message}\n`);
  }
});

server.listen(port, () => console.log(`visits listening on :${port}, redis at ${redisUrl.host}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
