#!/usr/bin/env python3
"""A git repository over smart HTTPS for buildd's fetch tests: `git http-backend` as CGI behind
TLS (a test CA's certificate), optionally with Basic auth, or answering every request with a 301
to another URL. Listens on ADDRESS port 0; the chosen port is printed on stdout's first line.

usage: git_https.py ADDRESS CERT KEY PROJECT_ROOT [--auth USER PASSWORD] [--redirect URL]
"""
import base64
import http.server
import os
import ssl
import subprocess
import sys

ADDRESS, CERT, KEY, ROOT = sys.argv[1:5]
EXPECTED = None
REDIRECT = None
rest = sys.argv[5:]
while rest:
    if rest[0] == "--auth":
        EXPECTED = "Basic " + base64.b64encode(f"{rest[1]}:{rest[2]}".encode()).decode()
        rest = rest[3:]
    elif rest[0] == "--redirect":
        REDIRECT = rest[1]
        rest = rest[2:]
    else:
        sys.exit(f"unknown argument {rest[0]}")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def empty(self, status, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def handle_any(self):
        if REDIRECT is not None:
            self.empty(301, [("Location", REDIRECT + self.path)])
            return
        if EXPECTED is not None and self.headers.get("Authorization") != EXPECTED:
            self.empty(401, [("WWW-Authenticate", 'Basic realm="private"')])
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = dict(os.environ)
        env.update({
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "tester",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        })
        out = subprocess.run(["git", "-c", "safe.directory=*", "http-backend"], input=body,
                             env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = handle_any
    do_POST = handle_any


server = http.server.ThreadingHTTPServer((ADDRESS, 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
