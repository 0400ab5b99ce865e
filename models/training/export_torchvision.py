#!/usr/bin/python3
"""Export seeded, untrained reference networks to ONNX with PyTorch's outputs, for tests and
benchmarks of convserve (no training, no downloads; a few seconds per model).

    /usr/bin/python3 models/training/export_torchvision.py --out DIR
        [--models mobilenet_v2,mobilenet_v3_small,resnet18,resnet50] [--batch 1,4]
    /usr/bin/python3 models/training/export_torchvision.py --out DIR --kernel-study

For each model M and batch size N it writes into DIR:

    M.onnx              opset 13, input "input", output "logits", dynamic batch axis 0 on both
    M_bN_input.bin      a seeded random input, raw little-endian float32, shape [N, C, H, W]
    M_bN_output.bin     PyTorch's fp32 output for that input, raw little-endian float32, [N, 10|1000]
    M.json              shapes, file names, seeds and versions

torchvision models: weights=None, torch.manual_seed(0) before construction, eval mode (so
BatchNorm uses its initial running statistics and Dropout is off).  --kernel-study models
(cifar-k3, cifar-k5, cifar-sep; 3x32x32 input): the CIFAR-sized convnets of the kernel-size study,
two blocks (32 then 64 channels) of two 3x3 convs / one 5x5 conv / two depthwise-separable 3x3s,
each followed by 2x2 max pooling, then flatten, dense 128 + ReLU, dense 10; seeded random weights.
Model names may also be mixed freely in --models.
"""

import argparse
import collections
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

TORCHVISION_MODELS = ["mobilenet_v2", "mobilenet_v3_small", "resnet18", "resnet50"]
KERNEL_STUDY_MODELS = ["cifar-k3", "cifar-k5", "cifar-sep"]
OPSET = 13
MODEL_SEED = 0
INPUT_SEED = 1000  # input for batch N uses seed INPUT_SEED + N


def conv(c_in, c_out, k, groups=1):
    return nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2, groups=groups, bias=True)


def cifar_block(kind, c_in, c_out):
    if kind == "k3":
        return [conv(c_in, c_out, 3), nn.ReLU(), conv(c_out, c_out, 3), nn.ReLU()]
    if kind == "k5":
        return [conv(c_in, c_out, 5), nn.ReLU()]
    if kind == "sep":  # depthwise 3x3 then pointwise 1x1, ReLU after the pointwise (as fashion-sep)
        return [conv(c_in, c_in, 3, groups=c_in), conv(c_in, c_out, 1), nn.ReLU(),
                conv(c_out, c_out, 3, groups=c_out), conv(c_out, c_out, 1), nn.ReLU()]
    raise ValueError(kind)


def build_cifar(kind):
    layers = (cifar_block(kind, 3, 32) + [nn.MaxPool2d(2)] + cifar_block(kind, 32, 64) +
              [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10)])
    return nn.Sequential(*layers)


def build(name):
    """Returns (model in eval mode, input shape without batch)."""
    torch.manual_seed(MODEL_SEED)
    if name in TORCHVISION_MODELS:
        import torchvision
        model = getattr(torchvision.models, name)(weights=None)
        shape = (3, 224, 224)
    elif name in KERNEL_STUDY_MODELS:
        model = build_cifar(name.split("-", 1)[1])
        shape = (3, 32, 32)
    else:
        raise ValueError(name)
    return model.eval(), shape


def write_f32(path, tensor):
    array = tensor.detach().cpu().contiguous().numpy().astype("<f4", copy=False)
    with open(path, "wb") as f:
        f.write(array.tobytes(order="C"))


def export(name, out_dir, batches):
    import onnx
    start = time.time()
    model, shape = build(name)
    onnx_path = os.path.join(out_dir, name + ".onnx")
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros((1,) + shape), onnx_path, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load(onnx_path)
    onnx.checker.check_model(proto)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    runs = []
    for n in batches:
        generator = torch.Generator().manual_seed(INPUT_SEED + n)
        x = torch.randn((n,) + shape, generator=generator)
        with torch.no_grad():
            y = model(x)
        input_file = "%s_b%d_input.bin" % (name, n)
        output_file = "%s_b%d_output.bin" % (name, n)
        write_f32(os.path.join(out_dir, input_file), x)
        write_f32(os.path.join(out_dir, output_file), y)
        runs.append({"batch": n, "input_file": input_file, "input_shape": list(x.shape),
                     "output_file": output_file, "output_shape": list(y.shape),
                     "input_seed": INPUT_SEED + n, "input_distribution": "standard normal"})
    meta = collections.OrderedDict([
        ("model", name),
        ("onnx_file", name + ".onnx"),
        ("opset", OPSET),
        ("input_name", "input"),
        ("output_name", "logits"),
        ("input_shape", ["batch"] + list(shape)),
        ("output_shape", ["batch", int(runs[0]["output_shape"][1]) if runs else None]),
        ("dtype", "float32 little-endian, C order"),
        ("model_seed", MODEL_SEED),
        ("weights", "random (torch.manual_seed(%d) before construction), eval mode" % MODEL_SEED),
        ("parameters", sum(p.numel() for p in model.parameters())),
        ("onnx_ops", dict(sorted(ops.items()))),
        ("torch_version", torch.__version__),
        ("runs", runs),
    ])
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
    return time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--models", default=None,
                        help="comma-separated list from %s (default: all four, or none with --kernel-study)"
                        % ", ".join(TORCHVISION_MODELS + KERNEL_STUDY_MODELS))
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--kernel-study", action="store_true",
                        help="also export cifar-k3, cifar-k5, cifar-sep")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    if args.models is None:
        names = [] if args.kernel_study else list(TORCHVISION_MODELS)
    else:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.kernel_study:
        names += [n for n in KERNEL_STUDY_MODELS if n not in names]
    for n in names:
        if n not in TORCHVISION_MODELS + KERNEL_STUDY_MODELS:
            parser.error("unknown model %r" % n)
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        parser.error("--batch must be a comma-separated list of integers")
    if any(b < 1 for b in batches):
        parser.error("batch sizes must be >= 1")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        seconds = export(name, args.out, batches)
        if not args.quiet:
            print("%s: %s.onnx + %d batch size(s) in %.1f s" % (name, os.path.join(args.out, name),
                                                               len(batches), seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
