#!/usr/bin/python3
"""Engine benchmark: convserve's engine against ONNX Runtime (onnxruntime-node) and PyTorch on
the same networks, interleaved in the same rounds, best and median of many runs.

    /usr/bin/python3 bench/run.py [--build build] [--rounds 7] [--quick] [--out bench/README.md]

Needs: a built ./build/bench/convserve-engine-runner, `npm install --ignore-scripts` in bench/
(onnxruntime-node 1.30), Debian's python3-torch. Each runtime is a long-lived process speaking
a line protocol; every round runs each (model, batch, threads) row on each runtime in turn for a
fixed number of iterations after a warm-up, so clock and load changes hit all runtimes alike.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = [  # name, per-image input dims
    ("cifar-k3", "3,32,32"),
    ("cifar-k5", "3,32,32"),
    ("cifar-sep", "3,32,32"),
    ("mobilenet_v2", "3,224,224"),
    ("resnet18", "3,224,224"),
    ("resnet50", "3,224,224"),
]


class Runner:
    def __init__(self, name, argv, cwd=None, env=None):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=cwd, env=env, bufsize=1)

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise RuntimeError("%s: %s -> %s" % (self.name, line, answer.get("error")))
        return answer

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=30)


def iterations_for(model, batch):
    big = model in ("mobilenet_v2", "resnet18", "resnet50")
    if big:
        return 3 if batch >= 16 else 10
    return 20 if batch >= 16 else 100


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                                            "amx_int8") if f in flags)
    return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small models only, 3 rounds")
    parser.add_argument("--models", default=None, help="comma-separated subset")
    parser.add_argument("--out", default=os.path.join(HERE, "README.md"))
    parser.add_argument("--json", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()

    models = MODELS
    if args.quick:
        models = [m for m in MODELS if m[0].startswith("cifar")]
        args.rounds = min(args.rounds, 3)
    if args.models:
        wanted = set(args.models.split(","))
        models = [m for m in models if m[0] in wanted]

    workdir = tempfile.mkdtemp(prefix="convserve-bench-")
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "models", "training",
                                                     "export_torchvision.py"),
                    "--out", workdir, "--models", ",".join(m for m, _ in models), "--batch", "1",
                    "--quiet"], check=True)
    env = dict(os.environ)
    runners = [
        Runner("convserve", [os.path.join(args.build, "bench", "convserve-engine-runner")], env=env),
        Runner("onnxruntime", ["node", os.path.join(HERE, "ort_runner.js")], cwd=HERE, env=env),
        Runner("pytorch", ["/usr/bin/python3", os.path.join(HERE, "torch_runner.py")], env=env),
    ]
    for name, dims in models:
        for r in runners:
            r.ask("load %s %s %s" % (name, os.path.join(workdir, name + ".onnx"), dims))

    rows = [(m, dims, b, t) for m, dims in models for b in (1, 16) for t in (1, 2)]
    samples = {}  # (model, batch, threads, runtime) -> list of ms per image
    for rnd in range(args.rounds):
        for model, dims, batch, threads in rows:
            n = iterations_for(model, batch)
            for r in (runners if rnd % 2 == 0 else list(reversed(runners))):
                r.ask("run %s %d %d %d" % (model, batch, threads, max(2, n // 5)))  # warm-up
                ms = r.ask("run %s %d %d %d" % (model, batch, threads, n))["ms"]
                samples.setdefault((model, batch, threads, r.name), []).extend(
                    v / batch for v in ms)
        print("round %d/%d done" % (rnd + 1, args.rounds), file=sys.stderr)

    # Efficiency of resnet50's 3x3 convolutions against the measured fp32 FMA peak.
    efficiency = []
    if any(m == "resnet50" for m, _ in models):
        for threads in (1, 2):
            rep = runners[0].ask("report resnet50 1 %d 10" % threads)
            convs = [st for st in rep["steps"] if st["kind"] == "Conv" and st["kh"] == 3
                     and st["groups"] == 1]
            total_ms = sum(st["ms"] for st in convs)
            total_flops = sum(st["flops"] for st in convs)
            gflops = total_flops / total_ms / 1e6 if total_ms else 0
            efficiency.append({
                "threads": threads, "peak_gflops": rep["peak_gflops"], "layers": len(convs),
                "gflops": gflops, "peak_percent": 100 * gflops / rep["peak_gflops"],
                "min_layer_percent": min(st["peak_percent"] for st in convs),
                "max_layer_percent": max(st["peak_percent"] for st in convs),
                "kernels": sorted(set(st["kernel"] for st in convs))})
    for r in runners:
        r.close()

    results = []
    for model, dims, batch, threads in rows:
        entry = {"model": model, "batch": batch, "threads": threads}
        for r in runners:
            v = samples[(model, batch, threads, r.name)]
            entry[r.name] = {"best_ms": min(v), "median_ms": statistics.median(v), "runs": len(v)}
        entry["ratio_median"] = entry["onnxruntime"]["median_ms"] / entry["convserve"]["median_ms"]
        entry["ratio_best"] = entry["onnxruntime"]["best_ms"] / entry["convserve"]["best_ms"]
        results.append(entry)
    geo = 1.0
    for e in results:
        geo *= e["ratio_median"]
    geo **= 1.0 / len(results)

    machine = "%s, %d cores, flags: %s" % (cpu_name(), os.cpu_count(), cpu_flags())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "date": when, "rounds": args.rounds, "results": results,
                   "resnet50_3x3_efficiency": efficiency,
                   "geomean_speedup_vs_onnxruntime": geo}, f, indent=2)
    lines = [
        "# Engine benchmark: convserve vs ONNX Runtime vs PyTorch",
        "",
        "Generated by `/usr/bin/python3 bench/run.py` on %s (%s). %d interleaved rounds;" % (
            when, machine, args.rounds),
        "each cell is milliseconds per image, median (best) over all timed runs of all rounds.",
        "Ratio = ONNX Runtime median / convserve median (above 1: convserve is faster).",
        "Peers: onnxruntime-node 1.30.0 (graph optimisation 'all', sequential), PyTorch %s "
        "(traced + torch.jit.freeze, inference_mode). Same networks, same seeded weights." %
        _torch_version(),
        "",
        "| model | batch | threads | convserve ms/img | ONNX Runtime ms/img | PyTorch ms/img | ratio vs ORT |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in results:
        cell = lambda k: "%.3f (%.3f)" % (e[k]["median_ms"], e[k]["best_ms"])
        lines.append("| %s | %d | %d | %s | %s | %s | %.2fx |" % (
            e["model"], e["batch"], e["threads"], cell("convserve"), cell("onnxruntime"),
            cell("pytorch"), e["ratio_median"]))
    lines += ["", "Geometric mean of the ratios vs ONNX Runtime: **%.2fx**." % geo, ""]
    if efficiency:
        lines += ["## resnet50: 3x3 convolutions against the fp32 FMA peak", "",
                  "Batch 1, per-layer medians from the engine's profiler; the peak is measured by "
                  "the engine's calibration loop (FMA chains) in the same process.", "",
                  "| threads | measured peak GFLOP/s | 3x3 layers | aggregate GFLOP/s | % of peak | "
                  "layer range | kernels |", "|---:|---:|---:|---:|---:|---|---|"]
        for e in efficiency:
            lines.append("| %d | %.1f | %d | %.1f | %.0f%% | %.0f%%-%.0f%% | %s |" % (
                e["threads"], e["peak_gflops"], e["layers"], e["gflops"], e["peak_percent"],
                e["min_layer_percent"], e["max_layer_percent"], ", ".join(e["kernels"])))
        lines.append("")
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            lines += [f.read()]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def _torch_version():
    try:
        import torch
        return torch.__version__
    except ImportError:
        return "?"


if __name__ == "__main__":
    main()
