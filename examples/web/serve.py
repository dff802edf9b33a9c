"""Serves the web demo on 127.0.0.1 with Python's http.server.

`/` is this folder (the page, `keyboard.js`, `node_modules/` with the
LiteRT.js runtime and its wasm files: nothing from a CDN); with
`--model-dir DIR`, `/model/` is DIR instead of `./model/`. The responses
carry the cross-origin isolation headers, which give the page
`performance.now()` at microsecond resolution for the latency numbers.
Prints `serving http://127.0.0.1:PORT/` once listening (`--port 0`: a free
port).

Example:

```
python examples/web/serve.py            # then open http://127.0.0.1:8000/
```
"""

import argparse
import functools
import http.server
import os
import posixpath
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


class Handler(http.server.SimpleHTTPRequestHandler):
    model_dir = None

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
        ".tflite": "application/octet-stream",
        ".txt": "text/plain; charset=utf-8",
    }

    def translate_path(self, path):
        parts = urllib.parse.urlsplit(path).path
        parts = posixpath.normpath(urllib.parse.unquote(parts))
        if self.model_dir and (parts == "/model" or parts.startswith("/model/")):
            rest = [p for p in parts[len("/model"):].split("/") if p and p not in (".", "..")]
            return os.path.join(self.model_dir, *rest)
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


def make_server(port=0, model_dir=None, quiet=True):
    handler = functools.partial(Handler, directory=HERE)
    Handler.model_dir = os.path.abspath(model_dir) if model_dir else None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.quiet = quiet
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve the web demo locally.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-dir", help="folder served as /model/ (default: ./model)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(HERE, "node_modules", "@litertjs", "core")):
        print("serve.py: node_modules missing: run `npm ci` in examples/web "
              "(or bash scripts/setup_browser.sh)", file=sys.stderr)
        return 2
    server = make_server(args.port, args.model_dir, quiet=not args.verbose)
    print(f"serving http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
