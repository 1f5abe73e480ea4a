#!/usr/bin/env python3
"""PyTorch (CPU) reference implementation and speed benchmark of the NAS-Bench-201 network.

The network follows shared/PROXIES.md section 3 (C=16, N=5, 10 classes, 32x32 input).
Default mode benchmarks the archs given by --archs; --check-params K instead checks the
parameter count of K random archs against the params_M column of nb201.csv.
See README.md in this directory for the commands and the meaning of each column.
"""
import argparse, csv, json, os, random, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
CSV_CANDIDATES = [os.path.join(HERE, "..", "..", "shared", "data", "nb201", "nb201.csv"),
                  os.path.join(HERE, "..", "..", "..", "shared", "data", "nb201", "nb201.csv")]


def relu_conv_bn(c_in, c_out, k, stride=1):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(c_out, affine=True, track_running_stats=True))


OPS = {  # 'none' has no entry: those edges are dropped (adding zeros changes nothing)
    "skip_connect": lambda c: nn.Identity(),
    "nor_conv_1x1": lambda c: relu_conv_bn(c, c, 1),
    "nor_conv_3x3": lambda c: relu_conv_bn(c, c, 3),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}


def parse_arch(arch):
    """'|op~0|+|op~0|op~1|+|...|' -> list over nodes 1..3 of [(op, src), ...]."""
    nodes = []
    for group in arch.strip("|").split("|+|"):
        nodes.append([(op, int(src)) for op, src in (e.split("~") for e in group.split("|"))])
    assert len(nodes) == 3 and all(len(n) == j + 1 for j, n in enumerate(nodes)), arch
    return nodes


class Cell(nn.Module):
    def __init__(self, arch, c):
        super().__init__()
        # 'none' edges are dropped entirely: adding zeros to a sum changes nothing.
        self.edges = [[(src, f"{j}_{src}") for op, src in node if op != "none"]
                      for j, node in enumerate(parse_arch(arch), start=1)]
        self.ops = nn.ModuleDict({f"{j}_{src}": OPS[op](c)
                                  for j, node in enumerate(parse_arch(arch), start=1)
                                  for op, src in node if op != "none"})

    def forward(self, x):
        nodes = [x]
        for edges in self.edges:
            terms = [self.ops[key](nodes[src]) for src, key in edges]
            nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
        return nodes[3]


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_a = relu_conv_bn(c_in, c_out, 3, stride=2)
        self.conv_b = relu_conv_bn(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Net(nn.Module):
    def __init__(self, arch, c=16, n=5, num_classes=10, in_channels=3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
        for stage, width in enumerate([c, 2 * c, 4 * c]):
            if stage > 0:
                layers.append(ResBlock(width // 2, width))
            layers += [Cell(arch, width) for _ in range(n)]
        layers += [nn.BatchNorm2d(4 * c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(4 * c, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def forward_flops(model, hw=32):
    """Analytic forward FLOPs per image: 2 x multiply-adds of every Conv2d and Linear."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += 2 * out[0].numel() * k
        else:
            total[0] += 2 * mod.in_features * mod.out_features
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, hw, hw))
    model.train(was_training)
    [h.remove() for h in handles]
    return total[0]


def load_csv(path):
    with open(path, newline="") as f:
        return {int(r["arch_index"]): r for r in csv.DictReader(f)}


def median_ms(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def matmul_gflops(n=2048, reps=7):
    """The machine's large-matmul rate: the fastest of `reps` products after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def bench_arch(index, arch, args):
    torch.manual_seed(args.seed)
    model = NB201Net(arch).train()
    flops = forward_flops(model)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))

    def fwd_nograd():
        with torch.no_grad():
            model(x)

    def fwdbwd():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    fwd_nograd_ms = median_ms(fwd_nograd, args.iters, args.warmup)
    fwd_ms = median_ms(lambda: model(x), args.iters, args.warmup)
    fwdbwd_ms = median_ms(fwdbwd, args.iters, args.warmup)

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    tx, ty = torch.randn(args.train_batch, 3, 32, 32), torch.randint(0, 10, (args.train_batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(tx), ty).backward()
        opt.step()
    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.train_batches):
        step()
    train_ips = args.train_batches * args.train_batch / (time.perf_counter() - t0)

    return {"index": index, "arch": arch, "params": count_params(model), "flops_per_image": flops,
            "fwd_ms": fwd_ms, "fwd_nograd_ms": fwd_nograd_ms, "fwdbwd_ms": fwdbwd_ms,
            "train_images_per_s": train_ips,
            "fwd_nograd_gflops": flops * args.batch / (fwd_nograd_ms * 1e-3) / 1e9,
            "fwdbwd_gflops": 3 * flops * args.batch / (fwdbwd_ms * 1e-3) / 1e9}


def check_params(rows, k, seed):
    rng = np.random.default_rng(seed)
    bad = 0
    for idx in rng.choice(sorted(rows), size=min(k, len(rows)), replace=False):
        r = rows[int(idx)]
        got = count_params(NB201Net(r["arch_str"]))
        if abs(got / 1e6 - float(r["params_M"])) > 5e-7:
            bad += 1
            print(f"MISMATCH {idx} {r['arch_str']}: {got} vs params_M {r['params_M']}")
    print(f"checked {min(k, len(rows))} archs, {bad} mismatches")
    return bad == 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=next((c for c in CSV_CANDIDATES if os.path.exists(c)), CSV_CANDIDATES[0]))
    p.add_argument("--archs", default="6111", help="comma-separated arch indices of nb201.csv")
    p.add_argument("--arch-strings", help="';'-separated INDEX=ARCH pairs (instead of reading --csv)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--train-batches", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--check-params", type=int, metavar="K", default=0)
    args = p.parse_args()

    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    if args.arch_strings:
        pairs = [p.split("=", 1) for p in args.arch_strings.split(";")]
        archs = [(int(i), a) for i, a in pairs]
    else:
        rows = load_csv(args.csv)
        if args.check_params:
            sys.exit(0 if check_params(rows, args.check_params, args.seed) else 1)
        archs = [(i, rows[i]["arch_str"]) for i in map(int, args.archs.split(","))]

    mm = matmul_gflops()
    results = [bench_arch(i, a, args) for i, a in archs]
    if args.json:
        print(json.dumps({"threads": args.threads, "torch_version": torch.__version__, "batch": args.batch,
                          "train_batch": args.train_batch, "matmul_gflops": mm, "archs": results}))
        return
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"train batch {args.train_batch}; 2048^3 f32 matmul: {mm:.1f} GFLOP/s")
    cols = ["index", "params", "MFLOP/img", "fwd_ng ms", "fwd ms", "fwdbwd ms", "train img/s", "fwd_ng GF/s", "f+b GF/s"]
    print("".join(f"{c:>12}" for c in cols))
    for r in results:
        vals = [r["index"], r["params"], f"{r['flops_per_image'] / 1e6:.2f}", f"{r['fwd_nograd_ms']:.2f}",
                f"{r['fwd_ms']:.2f}", f"{r['fwdbwd_ms']:.2f}", f"{r['train_images_per_s']:.1f}",
                f"{r['fwd_nograd_gflops']:.2f}", f"{r['fwdbwd_gflops']:.2f}"]
        print("".join(f"{v:>12}" for v in vals) + "   " + r["arch"])


if __name__ == "__main__":
    main()
