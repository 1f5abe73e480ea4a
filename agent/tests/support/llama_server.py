"""Serves a GGUF model with llama.cpp's OpenAI-compatible server (the `xllamacpp` package) on
loopback, for the agent's tests.

    python llama_server.py --model FILE.gguf --port 8123 [--alias smollm2] [--n-ctx 4096]

Serves until SIGTERM/SIGINT, or until its parent process goes away (so a killed test run leaves
no server behind). One inference thread: with the cores busy, more threads were many times slower.
"""

import argparse
import os
import signal
import sys
import threading


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--alias", default="smollm2", help="model name the server reports")
    ap.add_argument("--n-ctx", type=int, default=4096)
    args = ap.parse_args()

    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = args.model
    p.hostnames = [args.host]
    p.port = args.port
    p.n_ctx = args.n_ctx
    p.n_parallel = 1
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.warmup = False
    # A set: a plain string would become a set of characters.
    p.model_alias = {args.alias}

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                stop.set()
            stop.wait(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()

    server = xlc.Server(p)  # loads the model and starts serving in the background
    print(f"llama_server: serving {args.model} on {args.host}:{args.port}", file=sys.stderr, flush=True)
    stop.wait()
    del server
    # The native server threads may not stop on their own: leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
