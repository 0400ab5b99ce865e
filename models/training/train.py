#!/usr/bin/python3
"""Train, evaluate and export the bundled Fashion-MNIST models of convserve.

Run with Debian's interpreter (torch 1.13, torchvision 0.14, onnx 1.12):

    /usr/bin/python3 models/training/train.py                 # all five models
    /usr/bin/python3 models/training/train.py --models fashion-k3,fashion-mlp

For each model <name> this writes, relative to the repository root:

    models/repository/<name>/config.pbtxt
    models/repository/<name>/labels.txt
    models/repository/<name>/1/model.onnx
    models/repository/<name>/1/pytorch_reference.json

and, once fashion-k3 has predictions, the test images in tests/data/images/ (+ manifest.json).

Everything is deterministic on a given machine: fixed seeds, deterministic algorithms, a fixed
number of threads (2), hyper-parameters below.  Another CPU, BLAS or thread count may change the
last bits of the weights and so a few predictions.
"""

import argparse
import collections
import gzip
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

# --------------------------------------------------------------------------------------------
# Hyper-parameters (the same recipe for every model).
SEED = 20240501
EPOCHS = 3
BATCH_SIZE = 128
LEARNING_RATE = 1e-3  # Adam, cosine-annealed to 0 over all steps
WEIGHT_DECAY = 0.0
THREADS = 2
OPSET = 13
MEAN = 0.2860
STD = 0.3530
VERSION = "1"
NUMPY_CHECK_IMAGES = 1000  # re-run the exported graph with a numpy interpreter on this many
USE_BATCHNORM = True  # during training only; folded into the convolutions before export

DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MODEL_NAMES = ["fashion-k3", "fashion-k5", "fashion-sep", "fashion-bottleneck", "fashion-mlp"]
MIN_ACCURACY = {"fashion-k3": 91.0}

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REPOSITORY_DIR = os.path.join(ROOT, "models", "repository")
IMAGES_DIR = os.path.join(ROOT, "tests", "data", "images")

# --------------------------------------------------------------------------------------------
# Data.


def read_idx(path, expected_magic):
    if not os.path.exists(path):
        sys.exit("error: Fashion-MNIST file %s is missing.\n"
                 "Install the Debian package dataset-fashion-mnist (it provides "
                 "%s/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz)." % (path, DATA_DIR))
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        sys.exit("error: %s: bad IDX magic 0x%08x (expected 0x%08x)" % (path, magic, expected_magic))
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        sys.exit("error: %s: truncated (%d bytes of payload for dims %s)" % (path, array.size, dims))
    return array.reshape(dims)


def load_split(split):
    images = read_idx(os.path.join(DATA_DIR, "%s-images-idx3-ubyte.gz" % split), 0x00000803)
    labels = read_idx(os.path.join(DATA_DIR, "%s-labels-idx1-ubyte.gz" % split), 0x00000801)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        sys.exit("error: unexpected Fashion-MNIST %s shapes %s %s" % (split, images.shape, labels.shape))
    return images, labels


def normalise(images_u8):
    """uint8 N x 28 x 28 -> float32 N x 1 x 28 x 28, x/255 then (x - MEAN) / STD."""
    x = torch.from_numpy(images_u8.astype(np.float32)).unsqueeze(1) / 255.0
    return (x - MEAN) / STD

# --------------------------------------------------------------------------------------------
# Models.


def conv(c_in, c_out, k, groups=1):
    """A convolution with bias, followed during training by BatchNorm when USE_BATCHNORM.

    The BatchNorm is folded into the convolution's weights and bias before export (fold_batchnorm),
    so the exported graph and the reference predictions use plain convolutions."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2, groups=groups, bias=True)]
    if USE_BATCHNORM:
        layers.append(nn.BatchNorm2d(c_out))
    return layers


def block_k3(c_in, c_out):
    return conv(c_in, c_out, 3) + [nn.ReLU()] + conv(c_out, c_out, 3) + [nn.ReLU()]


def block_k5(c_in, c_out):
    return conv(c_in, c_out, 5) + [nn.ReLU()]


def block_sep(c_in, c_out):
    # Depthwise 3x3 (groups = c_in) then pointwise 1x1; ReLU after the pointwise only.
    return (conv(c_in, c_in, 3, groups=c_in) + conv(c_in, c_out, 1) + [nn.ReLU()] +
            conv(c_out, c_out, 3, groups=c_out) + conv(c_out, c_out, 1) + [nn.ReLU()])


def block_bottleneck(c_in, c_out):
    mid = c_out // 4
    return (conv(c_in, mid, 1) + [nn.ReLU()] + conv(mid, mid, 3) + [nn.ReLU()] +
            conv(mid, c_out, 1) + [nn.ReLU()])


BLOCKS = {"fashion-k3": block_k3, "fashion-k5": block_k5, "fashion-sep": block_sep,
          "fashion-bottleneck": block_bottleneck}


def build_model(name):
    if name == "fashion-mlp":
        layers = [nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(),
                  nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)]
    else:
        block = BLOCKS[name]
        layers = (block(1, 32) + [nn.MaxPool2d(2)] + block(32, 64) + [nn.MaxPool2d(2)] +
                  [nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)])
    return nn.Sequential(*layers)


def fold_batchnorm(model):
    """Eval-mode copy of a trained model with every Conv2d + BatchNorm2d pair merged."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    model.eval()
    layers = list(model)
    out = []
    i = 0
    while i < len(layers):
        if (isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers)
                and isinstance(layers[i + 1], nn.BatchNorm2d)):
            out.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return nn.Sequential(*out).eval()


def describe(model):
    """Layer table (with output shapes for one 1x28x28 image) and parameter counts."""
    rows = []
    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            params = sum(p.numel() for p in layer.parameters())
            if isinstance(layer, nn.Conv2d):
                kind = "Conv %dx%d %d->%d%s" % (layer.kernel_size[0], layer.kernel_size[1],
                                                 layer.in_channels, layer.out_channels,
                                                 " depthwise" if layer.groups > 1 else "")
            elif isinstance(layer, nn.Linear):
                kind = "Dense %d->%d" % (layer.in_features, layer.out_features)
            elif isinstance(layer, nn.MaxPool2d):
                kind = "MaxPool 2x2"
            else:
                kind = type(layer).__name__
            rows.append({"layer": kind, "output": list(x.shape[1:]), "params": params})
    total = sum(p.numel() for p in model.parameters())
    conv_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d)
                      for p in m.parameters())
    return rows, total, conv_params


def format_table(name, rows, total, conv_params):
    lines = ["%s (parameters: %d total, %d in convolutions)" % (name, total, conv_params),
             "  %-28s %-14s %10s" % ("layer", "output", "params")]
    for r in rows:
        lines.append("  %-28s %-14s %10d" % (r["layer"], "x".join(map(str, r["output"])), r["params"]))
    return "\n".join(lines)

# --------------------------------------------------------------------------------------------
# Training and evaluation.


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def train(model, x_train, y_train, x_test, y_test, seed, epochs, log):
    """Trains in place; returns the per-epoch history (test accuracy measured after each epoch,
    outside the timed part)."""
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = (x_train.shape[0] + BATCH_SIZE - 1) // BATCH_SIZE
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    for epoch in range(epochs):
        model.train()
        start = time.time()
        order = torch.randperm(x_train.shape[0], generator=generator)
        total_loss, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]
            xb, yb = x_train[idx].contiguous(memory_format=torch.channels_last), y_train[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * xb.shape[0]
            correct += (logits.argmax(1) == yb).sum().item()
        seconds = time.time() - start
        test_accuracy = 100.0 * float((predict(model, x_test).argmax(1) == y_test).float().mean())
        history.append(collections.OrderedDict([
            ("epoch", epoch + 1), ("train_loss", round(total_loss / x_train.shape[0], 4)),
            ("train_accuracy", round(100.0 * correct / x_train.shape[0], 2)),
            ("test_accuracy", round(test_accuracy, 2)), ("seconds", round(seconds, 1))]))
        log("  epoch %d/%d: loss %.4f, train accuracy %.2f%%, test accuracy %.2f%%, %.1f s" % (
            epoch + 1, epochs, total_loss / x_train.shape[0],
            100.0 * correct / x_train.shape[0], test_accuracy, seconds))
    return history


def predict(model, x, batch=1000):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out.append(model(x[i:i + batch]))
    return torch.cat(out)

# --------------------------------------------------------------------------------------------
# ONNX export and an independent numpy check of the exported graph.


def export_onnx(model, path):
    import onnx
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, dummy, path, opset_version=OPSET, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    allowed = {"Conv", "Relu", "MaxPool", "Flatten", "Reshape", "Shape", "Gather", "Unsqueeze",
               "Concat", "Gemm"}
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    bad = set(ops) - allowed
    if bad:
        raise RuntimeError("%s: unexpected ONNX ops %s" % (path, sorted(bad)))
    return proto, ops


def _attr(node, name, default=None):
    import onnx
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def run_onnx_numpy(proto, x):
    """Minimal reference interpreter for the ops our exports use (fp32, numpy)."""
    from onnx import numpy_helper
    env = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in proto.graph.initializer}
    env[proto.graph.input[0].name] = x.astype(np.float32)
    for node in proto.graph.node:
        ins = [env[i] for i in node.input]
        op = node.op_type
        if op == "Conv":
            w = ins[0 + 1]
            b = ins[2] if len(ins) > 2 else np.zeros(w.shape[0], np.float32)
            group = _attr(node, "group", 1)
            pads = _attr(node, "pads", [0, 0, 0, 0])
            strides = _attr(node, "strides", [1, 1])
            assert list(strides) == [1, 1] and list(_attr(node, "dilations", [1, 1])) == [1, 1]
            xin = np.pad(ins[0], ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
            n, c, h, wd = xin.shape
            m, cg, kh, kw = w.shape
            oh, ow = h - kh + 1, wd - kw + 1
            cols = np.lib.stride_tricks.sliding_window_view(xin, (kh, kw), axis=(2, 3))  # n c oh ow kh kw
            outs = []
            mg = m // group
            for g in range(group):
                xc = cols[:, g * cg:(g + 1) * cg]  # n cg oh ow kh kw
                wg = w[g * mg:(g + 1) * mg]  # mg cg kh kw
                outs.append(np.einsum("nchwij,mcij->nmhw", xc, wg, optimize=True))
            y = np.concatenate(outs, axis=1) + b.reshape(1, -1, 1, 1)
            assert y.shape[2:] == (oh, ow)
            env[node.output[0]] = y.astype(np.float32)
        elif op == "Relu":
            env[node.output[0]] = np.maximum(ins[0], 0)
        elif op == "MaxPool":
            k = _attr(node, "kernel_shape")
            s = _attr(node, "strides")
            assert list(k) == [2, 2] and list(s) == [2, 2]
            a = ins[0]
            n, c, h, wd = a.shape
            env[node.output[0]] = a[:, :, :h // 2 * 2, :wd // 2 * 2].reshape(
                n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
        elif op == "Flatten":
            axis = _attr(node, "axis", 1)
            a = ins[0]
            env[node.output[0]] = a.reshape(int(np.prod(a.shape[:axis])), -1)
        elif op == "Gemm":
            a, b = ins[0], ins[1]
            if _attr(node, "transA", 0):
                a = a.T
            if _attr(node, "transB", 0):
                b = b.T
            y = _attr(node, "alpha", 1.0) * (a @ b)
            if len(ins) > 2:
                y = y + _attr(node, "beta", 1.0) * ins[2]
            env[node.output[0]] = y.astype(np.float32)
        else:
            raise RuntimeError("numpy check: unsupported op %s" % op)
    return env[proto.graph.output[0].name]

# --------------------------------------------------------------------------------------------
# Repository files.


CONFIG_TEMPLATE = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" }} ]
dynamic_batching {{ max_queue_delay_microseconds: 500 preferred_batch_size: [ 8, 16, 32 ] default_queue_policy {{ max_queue_size: 256 }} }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
preprocessing {{ color_format: GRAY width: 28 height: 28 scale: 0.003921569 mean: [ 0.2860 ] std: [ 0.3530 ] input: "input" }}
precision: "fp32"
"""


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_repository_files(name):
    model_dir = os.path.join(REPOSITORY_DIR, name)
    write_text(os.path.join(model_dir, "config.pbtxt"), CONFIG_TEMPLATE.format(name=name))
    write_text(os.path.join(model_dir, "labels.txt"), "\n".join(CLASS_NAMES) + "\n")

# --------------------------------------------------------------------------------------------
# Test images.


def label_slug(label):
    return CLASS_NAMES[label].lower().replace("/", "-").replace(" ", "-")


def write_test_images(test_images, test_labels, k3_predictions, k3_model, log):
    from PIL import Image
    os.makedirs(IMAGES_DIR, exist_ok=True)
    for f in os.listdir(IMAGES_DIR):
        if f.startswith("t10k-") or f == "manifest.json":
            os.remove(os.path.join(IMAGES_DIR, f))
    chosen = []
    for label in range(10):
        for i in range(test_labels.shape[0]):
            if test_labels[i] == label and k3_predictions[i] == label:
                chosen.append(i)
                break
    entries = []

    def k3_on_file(path):
        img = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
        if img.shape != (28, 28):
            return None
        return int(predict(k3_model, normalise(img[None]))[0].argmax())

    for i in chosen:
        label = int(test_labels[i])
        base = "t10k-%05d_label-%d_%s" % (i, label, label_slug(label))
        img = Image.fromarray(test_images[i], mode="L")
        variants = [(base + ".png", "png", img, {}), (base + ".jpg", "jpeg", img, {"quality": 95})]
        if len(entries) < 3 * 3:  # first three classes also get an upscaled RGB copy
            big = img.convert("RGB").resize((112, 112), resample=Image.BILINEAR)
            variants.append((base + "_112x112_rgb.png", "png", big, {}))
        for file_name, fmt, im, kwargs in variants:
            path = os.path.join(IMAGES_DIR, file_name)
            im.save(path, format=fmt.upper(), **kwargs)
            entries.append({
                "file": file_name,
                "label": label,
                "label_name": CLASS_NAMES[label],
                "test_index": i,
                "format": fmt,
                "width": im.size[0],
                "height": im.size[1],
                "channels": 3 if im.mode == "RGB" else 1,
                "fashion_k3_prediction_on_decoded_pixels": k3_on_file(path),
            })
    manifest = {
        "source": "Fashion-MNIST t10k (test set); first test image of each class that fashion-k3 "
                  "classifies correctly",
        "notes": "PNG files are lossless copies of the test images; JPEG files (quality 95) are "
                 "lossy, so their pixels differ slightly from the originals. *_112x112_rgb.png are "
                 "bilinear 4x upscales converted to RGB, for server-side resize and gray conversion. "
                 "fashion_k3_prediction_on_decoded_pixels is PyTorch fashion-k3's class for the "
                 "decoded 28x28 file (null for upscaled files).",
        "images": entries,
    }
    write_text(os.path.join(IMAGES_DIR, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    log("wrote %d test images to %s" % (len(entries), os.path.relpath(IMAGES_DIR, ROOT)))

# --------------------------------------------------------------------------------------------


def main():
    global REPOSITORY_DIR, IMAGES_DIR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help="comma-separated subset of: " + ", ".join(MODEL_NAMES))
    parser.add_argument("--skip-numpy-check", action="store_true",
                        help="do not re-run the exported ONNX graph with the numpy interpreter")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="override the number of epochs (experiments; default %(default)s)")
    parser.add_argument("--limit-train", type=int, default=0,
                        help="smoke test: train on the first N training images only")
    parser.add_argument("--repository", default=REPOSITORY_DIR, help="output model repository")
    parser.add_argument("--images", default=IMAGES_DIR, help="output folder of the test images")
    args = parser.parse_args()
    REPOSITORY_DIR, IMAGES_DIR = os.path.abspath(args.repository), os.path.abspath(args.images)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in MODEL_NAMES:
            parser.error("unknown model %r (known: %s)" % (n, ", ".join(MODEL_NAMES)))

    def log(msg):
        print(msg, flush=True)

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    log("torch %s, %d threads, seed %d, %d epochs, batch %d, Adam lr %g cosine" % (
        torch.__version__, THREADS, SEED, args.epochs, BATCH_SIZE, LEARNING_RATE))

    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("t10k")
    if args.limit_train > 0:
        train_images, train_labels = train_images[:args.limit_train], train_labels[:args.limit_train]
    x_train, y_train = normalise(train_images), torch.from_numpy(train_labels.astype(np.int64))
    x_test, y_test = normalise(test_images), torch.from_numpy(test_labels.astype(np.int64))

    overall = time.time()
    summaries = []
    k3_model, k3_predictions = None, None
    for name in names:
        log("== %s" % name)
        seed_everything(SEED)
        model = build_model(name).to(memory_format=torch.channels_last)  # faster oneDNN kernels
        history = train(model, x_train, y_train, x_test, y_test, SEED, args.epochs, log)
        seconds = sum(h["seconds"] for h in history)
        trained_logits = predict(model, x_test)
        model = fold_batchnorm(model.to(memory_format=torch.contiguous_format))
        logits = predict(model, x_test)
        fold_diff = float((logits - trained_logits).abs().max())
        log("  BatchNorm folded: max |logit diff| %.2e" % fold_diff)
        pred = logits.argmax(1).numpy()
        accuracy = 100.0 * float((pred == test_labels).mean())
        log("  test accuracy %.2f%% (%.1f s training)" % (accuracy, seconds))

        version_dir = os.path.join(REPOSITORY_DIR, name, VERSION)
        onnx_path = os.path.join(version_dir, "model.onnx")
        proto, ops = export_onnx(model, onnx_path)
        log("  exported %s (%d bytes), ops %s" % (os.path.relpath(onnx_path, ROOT),
                                                  os.path.getsize(onnx_path), dict(ops)))
        numpy_check = None
        if NUMPY_CHECK_IMAGES > 0 and not args.skip_numpy_check:
            n = NUMPY_CHECK_IMAGES
            ref = run_onnx_numpy(proto, x_test[:n].numpy())
            diff = float(np.abs(ref - logits[:n].numpy()).max())
            mismatches = int((ref.argmax(1) != pred[:n]).sum())
            numpy_check = collections.OrderedDict([
                ("images", n), ("max_abs_logit_diff", float("%.3g" % diff)),
                ("prediction_mismatches", mismatches)])
            log("  numpy run of the ONNX graph on %d test images: max |logit diff| %.2e, "
                "%d prediction mismatches" % (n, diff, mismatches))
            if diff > 1e-3:
                raise RuntimeError("%s: exported ONNX graph differs from PyTorch" % name)

        write_repository_files(name)
        rows, total, conv_params = describe(model)
        predictions = "".join(str(int(p)) for p in pred)
        reference = collections.OrderedDict([
            ("model", name),
            ("test_accuracy", round(accuracy, 2)),
            ("test_images", int(test_labels.shape[0])),
            ("epochs", args.epochs),
            ("seed", SEED),
            ("batch_size", BATCH_SIZE),
            ("optimizer", "Adam lr %g, cosine annealing per step" % LEARNING_RATE),
            ("batchnorm", "after every convolution during training, folded into the convolutions "
             "before export" if USE_BATCHNORM and name != "fashion-mlp" else "none"),
            ("training_seconds", round(seconds, 1)),
            ("threads", THREADS),
            ("torch_version", torch.__version__),
            ("parameters_total", total),
            ("parameters_convolution", conv_params),
            ("normalisation", {"scale": 1.0 / 255.0, "mean": MEAN, "std": STD}),
            ("onnx_ops", dict(sorted(ops.items()))),
            ("onnx_numpy_check", numpy_check),
            ("history", history),
            ("layers", rows),
            ("predictions_sha256", hashlib.sha256(predictions.encode("ascii")).hexdigest()),
            ("predictions", predictions),
        ])
        write_text(os.path.join(version_dir, "pytorch_reference.json"), json.dumps(reference, indent=2) + "\n")
        summaries.append((name, accuracy, seconds, rows, total, conv_params))
        if name == "fashion-k3":
            k3_model, k3_predictions = model, pred

    # The test images depend on fashion-k3: regenerate them only when it was trained in this run.
    if k3_predictions is not None:
        write_test_images(test_images, test_labels, k3_predictions, k3_model, log)

    log("\n== summary (total %.1f s)" % (time.time() - overall))
    failed = []
    for name, accuracy, seconds, rows, total, conv_params in summaries:
        log("%-20s test accuracy %6.2f%%   training %6.1f s" % (name, accuracy, seconds))
        if accuracy < MIN_ACCURACY.get(name, 0.0):
            failed.append(name)
    for name, accuracy, seconds, rows, total, conv_params in summaries:
        log("\n" + format_table(name, rows, total, conv_params))
    if failed:
        sys.exit("error: below the required accuracy: %s" % ", ".join(failed))


if __name__ == "__main__":
    main()
