#!/usr/bin/env python3
"""Exports kiln's public-model corpus: torchvision models kiln was never tuned on, as .onnx.

Every model is built with weights=None (nothing is downloaded), random weights from a fixed
seed, then its BatchNorm statistics are calibrated: with random weights and the default
running stats (mean 0, var 1) activations grow or vanish layer after layer, which would
make every cross-check and every timing meaningless. So each BatchNorm is reset, given
momentum=None (a cumulative average) and put in train mode while the rest of the model
stays in eval mode (dropout and stochastic depth off), a few forward passes on seeded
random inputs set the running stats, and the model goes back to eval before the export.

One file per (model, batch), a static batch, exported with torch.onnx.export at opset 17
into `<out-dir>/torch-<version>-r<RECIPE>/<name>-b<batch>.onnx`; a file already there is
reused (the key is name, batch, torch version and this script's recipe number). A
model that fails to export is reported with torch's error, never dropped silently.

    /usr/bin/python3 bench/corpus.py --out-dir build/bench-corpus [--models a,b] [--batches 1,8]

prints one JSON object: {"torch", "torchvision", "models": [{"name", "batch", "path",
"input_shape", "status": "exported" | "cached" | "failed", "error", "export_s",
"batchnorms_calibrated", "zero_weights_reinitialised"}]}.
"""

import argparse
import json
import os
import sys
import time

OPSET = 17
# The export recipe (seed, initialisation, calibration, export settings): part of the cache key
# with the model, the batch and torch's version. Bump it when any of them changes.
RECIPE = 2
SEED = 1  # the weights and the calibration inputs
CALIBRATION_PASSES = 4
CALIBRATION_BATCH = 8  # > 1: BatchNorm after a global pool sees one value per channel and sample


def _segmentation(factory):
    """A segmentation network as a plain tensor → tensor module (torchvision returns a dict)."""

    def build():
        import torch

        class Out(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x)["out"]

        # weights_backbone=None: the default would download ImageNet backbone weights.
        return Out(factory(weights=None, weights_backbone=None, num_classes=21))

    return build


def _classifier(name, **kwargs):
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kwargs)

    return build


def _segmenters():
    import torchvision.models.segmentation as seg

    return {
        "lraspp_mobilenet_v3_large": seg.lraspp_mobilenet_v3_large,
        "deeplabv3_mobilenet_v3_large": seg.deeplabv3_mobilenet_v3_large,
        "fcn_resnet50": seg.fcn_resnet50,
    }


# name → (builder, image side). Segmentation networks run at 224x224 like the classifiers
# (smaller than their usual 520, to keep the batch-8 rows affordable on a small machine).
CLASSIFIERS = {
    "resnet34": 224,
    "convnext_tiny": 224,
    "efficientnet_b0": 224,
    "efficientnet_v2_s": 224,
    "mobilenet_v3_large": 224,
    "mobilenet_v3_small": 224,
    "densenet121": 224,
    "regnet_y_400mf": 224,
    "shufflenet_v2_x1_0": 224,
    "inception_v3": 299,
    "vit_b_16": 224,
    "swin_t": 224,
}
SEGMENTERS = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50"]
MODELS = list(CLASSIFIERS) + SEGMENTERS


def image_side(name):
    return CLASSIFIERS.get(name, 224)


def build_model(name):
    if name in CLASSIFIERS:
        # Inception v3: no auxiliary head (it only exists in training) and no input
        # re-normalisation (that is for its pretrained weights).
        extra = {"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}
        return _classifier(name, **extra)()
    if name in SEGMENTERS:
        return _segmentation(_segmenters()[name])()
    raise ValueError(f"unknown corpus model '{name}' (models: {', '.join(MODELS)})")


def reinit_zero_weights(model):
    """Gives every all-zero parameter of 2+ dims PyTorch's default Linear/Conv initialisation.

    torchvision zero-initialises some parameters for training from scratch (vit_b_16's
    classifier head and class token): with weights=None its output would be all zeros, and
    a cross-check against another runtime would prove nothing. Returns the names of the
    parameters it re-initialised.
    """
    import math

    import torch

    names = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not p.any():
                torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                names.append(name)
    return names


def calibrate_batchnorm(model, side):
    """Sets every BatchNorm's running stats from CALIBRATION_PASSES seeded random batches."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the passes, not an exponential one
        bn.train()
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for _ in range(CALIBRATION_PASSES):
            model(torch.randn(CALIBRATION_BATCH, 3, side, side, generator=gen))
    model.eval()
    return len(bns)


def export_one(name, batch, path):
    import torch

    torch.manual_seed(SEED)
    model = build_model(name)
    side = image_side(name)
    reinitialised = reinit_zero_weights(model)
    batchnorms = calibrate_batchnorm(model, side)
    model.eval()
    x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(SEED + 1))
    tmp = path + ".tmp"
    # Not under torch.no_grad(): in eval mode without autograd, torch 1.13's MultiheadAttention
    # takes its fused fast path (aten::_native_multi_head_attention), which has no ONNX export
    # (vit_b_16 fails with UnsupportedOperatorError); with autograd on it runs the plain ops.
    torch.onnx.export(model, x, tmp, opset_version=OPSET, input_names=["input"], output_names=["output"],
                      do_constant_folding=True)
    os.replace(tmp, path)  # a crash mid-export leaves no half file that a later run would reuse
    return {"batchnorms_calibrated": batchnorms, "zero_weights_reinitialised": reinitialised}


def export(out_dir, names, batches, log=lambda m: None):
    import torch
    import torchvision

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder = os.path.join(out_dir, f"torch-{torch.__version__}-r{RECIPE}")
    os.makedirs(folder, exist_ok=True)
    result = {"torch": torch.__version__, "torchvision": torchvision.__version__, "opset": OPSET, "seed": SEED,
              "recipe": RECIPE,
              "calibration": {"passes": CALIBRATION_PASSES, "batch": CALIBRATION_BATCH, "momentum": None},
              "models": []}
    for name in names:
        for batch in batches:
            side = image_side(name)
            path = os.path.join(folder, f"{name}-b{batch}.onnx")
            entry = {"name": name, "batch": batch, "path": path, "input_shape": [batch, 3, side, side]}
            if os.path.exists(path):
                entry["status"] = "cached"
            else:
                log(f"exporting {name} at batch {batch}")
                t0 = time.monotonic()
                try:
                    entry.update(export_one(name, batch, path))
                    entry["status"] = "exported"
                except Exception as e:  # noqa: BLE001: every failure is a finding, recorded with its message
                    entry["status"] = "failed"
                    entry["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                entry["export_s"] = round(time.monotonic() - t0, 1)
            result["models"].append(entry)
    return result


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True, help="cache folder, e.g. <build>/bench-corpus")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated; default: " + ", ".join(MODELS))
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    opts = ap.parse_args(argv)
    if opts.list:
        print("\n".join(MODELS))
        return 0
    names = opts.models.split(",")
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model '{n}' (models: {', '.join(MODELS)})")
    batches = [int(b) for b in opts.batches.split(",")]
    result = export(opts.out_dir, names, batches, lambda m: print(f"[corpus] {m}", file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
