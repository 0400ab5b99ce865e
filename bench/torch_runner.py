#!/usr/bin/python3
"""PyTorch peer for bench/run.py; same line protocol as engine_runner.cc.

    load NAME PATH C,H,W   (PATH unused: the network is rebuilt by models/training/
                            export_torchvision.py's build(NAME), the same seeded weights that
                            were exported to the ONNX file the other runtimes load)
    run NAME BATCH THREADS ITERATIONS
    quit

Models are traced and frozen (torch.jit.freeze) per batch size, in inference mode.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models",
                                "training"))
import export_torchvision  # noqa: E402

models = {}
frozen = {}


def handle(words):
    if words[0] == "load":
        name = words[1]
        model, shape = export_torchvision.build(name)
        models[name] = (model, tuple(int(d) for d in words[3].split(",")))
        return {"ok": True}
    if words[0] == "run":
        name, batch, threads, iterations = words[1], int(words[2]), int(words[3]), int(words[4])
        torch.set_num_threads(threads)
        model, shape = models[name]
        generator = torch.Generator().manual_seed(42)
        x = torch.rand((batch,) + shape, generator=generator) * 2 - 1
        key = (name, batch)
        with torch.inference_mode():
            if key not in frozen:
                frozen[key] = torch.jit.freeze(torch.jit.trace(model, x).eval())
            f = frozen[key]
            ms = []
            for _ in range(iterations):
                start = time.perf_counter()
                f(x)
                ms.append((time.perf_counter() - start) * 1e3)
        return {"ok": True, "ms": ms}
    return {"ok": False, "error": "unknown command " + words[0]}


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "quit":
        break
    try:
        answer = handle(words)
    except Exception as e:  # report, keep serving the driver
        answer = {"ok": False, "error": repr(e)}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
