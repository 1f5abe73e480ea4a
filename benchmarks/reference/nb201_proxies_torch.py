#!/usr/bin/env python3
"""PyTorch (CPU) reference for zero-cost NAS proxies on NAS-Bench-201 networks.

The network is the one in nb201_torch.py (imported from it): C=16, N=5, 10 classes, 32x32 input,
PyTorch default init, with the torch seed set to --seed before each network is built.
Every proxy follows shared/PROXIES.md section 2. Only Conv2d and Linear *weights* are scored.
"Train mode" means BN normalises with the batch's own statistics.

  synflow    2.2  Works on a copy: every BN forward is replaced by the identity, every state tensor
                  by |.|, and the copy is cast to float64. Input is an all-ones [1,3,32,32] tensor,
                  R = sum of the logits, S = sum(theta * dR/dtheta). This is the raw S, not NASLib's
                  ln S (the ranking is the same).
  grad_norm  2.3  CE loss in train mode. S = sum over layers of the Frobenius norm ||dL/dW_l||.
  snip       2.4  S = sum |W * dL/dW|.
  grasp      2.5  g = dL/dW with no graph kept. Then z = sum <g (detached), dL/dW> over a graph
                  recomputed by a second forward pass, and Hg = dz/dW. S = sum(-W * Hg).
  fisher     2.6  For the output z of each conv/linear layer (before BN) and its gradient dL/dz:
                  g_nk = sum_hw z*dL/dz and Delta_k = 0.5 * mean_n g_nk^2.
                  S = sum_l fan_in_l * sum_k |Delta_lk|, with fan_in = C_in*kh*kw (in_features for Linear).
  jacob_cov  2.7  J = d(sum_k y_nk)/dx_n, Sigma = np.corrcoef(J) (N x N),
                  S = -sum(ln(lam + k) + 1/(lam + k)) with k = 1e-5 (eigenvalues from the symmetric
                  solver). A dead net (J = 0, or no input->output path) gives NaN.
  naswot     2.8  NASLib variant: one forward in train mode, no backward marking. The input of every
                  nn.ReLU is binarised as c = [x > 0] and accumulated as K += c c^T + (1-c)(1-c)^T
                  in float64. S = ln|det K| from slogdet, sign ignored.
  zen        2.9  Works on a copy: conv/linear weights ~ N(0,1), biases 0, BN gamma=1, beta=0,
                  running stats at their defaults. x1, x2 ~ N(0,1) with the batch's shape, drawn from
                  a generator seeded with --seed. xt = x1 + 0.01*x2. F = the features before global
                  average pooling (after the head BN+ReLU). Delta = mean_n sum_chw |F(x1) - F(xt)|
                  in float32 with no grad and train mode.
                  S = ln Delta + sum over BN of ln sqrt(mean_c running_var).
  zico       2.10 The batch is split into two halves, which serve as two minibatches. Gradients are
                  never zeroed between them, so the second stored gradient is the running sum g1+g2.
                  Per layer: mu = mean_b |g_b|, sigma = std_b g_b (ddof 0), s_l = sum over sigma != 0
                  of mu/sigma. S = sum_l ln s_l, skipping s_l = 0 (computed in float64).
  params     2.11 All trainable parameters, in millions.
  flops      2.11 NB201 counter, in millions, per image: conv MACs, linear MACs (no bias term),
                  avg-pool out*k^2, plus 0.43008 per conv op in the arch string, plus 0.136256
                  (the formula of shared/data/nb201/README.md). Should equal flops_M of nb201.csv.

Data: with --data DIR, the first --batch-size records of DIR/data_batch_1.bin (CIFAR-10 binary:
1 label byte + 3072 bytes CHW uint8), scaled to [0,1] and normalised with mean (0.4914, 0.4822, 0.4465)
and std (0.2470, 0.2435, 0.2616). No augmentation is applied, unlike the foresight/NASLib harness (2.1).
Without --data, a normal(0,1) batch and uniform labels are drawn from a generator seeded with --seed.

Timing: each run of a proxy gets a fresh deep copy of the seeded network, made outside the timer.
The timer covers only the proxy computation, including the copy's float64 cast / re-init where the
definition needs one. "ms" is the median over --repeat runs, after --warmup untimed runs.
The scores come from the first timed run.

Output: one JSON line per arch:
  {"arch": str, "index": int|null, "scores": {proxy: float|null}, "ms": {proxy: float},
   "torch_version": str, ...}
Non-finite scores (NaN, +-inf) are written as null.

Usage (from the repository root; PY = a python with torch and numpy):
  PY benchmarks/reference/nb201_proxies_torch.py --indices 6111,9631,5681 \
      --data shared/data/cifar10-mini --batch-size 64 --threads 2 --repeat 3
  PY benchmarks/reference/nb201_proxies_torch.py \
      --archs "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|" --proxies synflow,naswot
  # Spearman rho against NASLib's values (nb201_zc.csv, dataset cifar10) for K sampled archs:
  PY benchmarks/reference/nb201_proxies_torch.py --naslib-check 20 --data shared/data/cifar10-mini
"""
import argparse, copy, csv, json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nb201_torch import NB201Net, CSV_CANDIDATES, count_params, parse_arch  # noqa: E402

PROXIES = ["synflow", "grad_norm", "snip", "grasp", "fisher", "jacob_cov", "naswot", "zen", "zico", "params", "flops"]
NASLIB_COLUMN = {"synflow": "synflow", "grad_norm": "grad_norm", "snip": "snip", "grasp": "grasp", "fisher": "fisher",
                 "jacob_cov": "jacov", "naswot": "nwot", "zen": "zen", "params": "params", "flops": "flops"}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------------------------------
# helpers

def scored_layers(net):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def grad_or_zeros(w):
    return w.grad if w.grad is not None else torch.zeros_like(w)


def ce_backward(net, x, y):
    net.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()


# ----------------------------------------------------------------------------------------------
# proxies: each takes (net, x, y, args), may modify net (a private copy) and returns a float

def p_synflow(net, x, y, args):
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = lambda t: t  # BN bypassed (identity)
    with torch.no_grad():
        for t in net.state_dict().values():  # every state tensor, BN buffers included
            if t.is_floating_point():
                t.abs_()
    net.double()
    net.zero_grad(set_to_none=True)
    r = net(torch.ones(1, *x.shape[1:], dtype=torch.float64)).sum()
    r.backward()
    return sum(float((m.weight.detach() * grad_or_zeros(m.weight)).abs().sum()) for m in scored_layers(net))


def p_grad_norm(net, x, y, args):
    ce_backward(net, x, y)
    return sum(float(grad_or_zeros(m.weight).norm()) for m in scored_layers(net))


def p_snip(net, x, y, args):
    ce_backward(net, x, y)
    return sum(float((m.weight.detach() * grad_or_zeros(m.weight)).abs().sum(dtype=torch.float64)) for m in scored_layers(net))


def p_grasp(net, x, y, args):
    weights = [m.weight for m in scored_layers(net)]
    net.zero_grad(set_to_none=True)
    g = torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True)
    gf = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True, allow_unused=True)
    pairs = [(gi.detach(), fi) for gi, fi in zip(g, gf) if gi is not None and fi is not None]
    if not pairs:
        return 0.0
    z = sum((gi * fi).sum() for gi, fi in pairs)
    if not z.requires_grad:
        return 0.0
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return sum(float((-w.detach() * h).sum(dtype=torch.float64)) for w, h in zip(weights, hg) if h is not None)


def p_fisher(net, x, y, args):
    layers = scored_layers(net)
    delta = {}

    def fwd_hook(mod, inp, out):
        def grad_hook(gz, z=out.detach(), mod=mod):
            g_nk = (z * gz).sum(dim=tuple(range(2, z.dim()))) if z.dim() > 2 else z * gz
            d = g_nk.pow(2).mean(0).mul(0.5)
            delta[mod] = delta[mod] + d if mod in delta else d
        if out.requires_grad:
            out.register_hook(grad_hook)

    handles = [m.register_forward_hook(fwd_hook) for m in layers]
    try:
        ce_backward(net, x, y)
    finally:
        for h in handles:
            h.remove()
    return sum(m.weight[0].numel() * float(delta[m].abs().sum(dtype=torch.float64)) for m in layers if m in delta)


def p_jacob_cov(net, x, y, args):
    net.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    out = net(xg)
    if out.requires_grad:
        out.backward(torch.ones_like(out))
    jac = (xg.grad if xg.grad is not None else torch.zeros_like(xg)).reshape(x.shape[0], -1).double().numpy()
    with np.errstate(all="ignore"):
        corr = np.corrcoef(jac)
    if not np.all(np.isfinite(corr)):
        return float("nan")
    try:
        lam = np.linalg.eigvalsh(corr)
    except np.linalg.LinAlgError:
        return float("nan")
    k = 1e-5
    with np.errstate(all="ignore"):
        return float(-np.sum(np.log(lam + k) + 1.0 / (lam + k)))


def p_naswot(net, x, y, args):
    n = x.shape[0]
    K = torch.zeros(n, n, dtype=torch.float64)

    def hook(mod, inp, out):
        c = (inp[0].reshape(n, -1) > 0).double()
        K.add_(c @ c.T).add_((1.0 - c) @ (1.0 - c).T)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return float(torch.linalg.slogdet(K).logabsdet)


def p_zen(net, x, y, args):
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        x1 = torch.randn(x.shape, generator=gen)
        x2 = torch.randn(x.shape, generator=gen)
        feat = net.features[:-2]  # up to the head BN + ReLU, before AdaptiveAvgPool2d + Flatten
        f1 = feat(x1)
        f2 = feat(x1 + 0.01 * x2)
        delta = float((f1 - f2).abs().sum(dim=(1, 2, 3)).mean())
        log_bn = 0.0
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                log_bn += math.log(math.sqrt(float(m.running_var.mean())))
    return (math.log(delta) if delta > 0 else (-math.inf if delta == 0 else math.nan)) + log_bn


def p_zico(net, x, y, args):
    layers = scored_layers(net)
    n = x.shape[0]
    halves = [(x[: n // 2], y[: n // 2]), (x[n // 2:], y[n // 2:])]
    grads = [[] for _ in layers]
    net.zero_grad(set_to_none=True)
    for xb, yb in halves:  # no zero_grad in between: the running-sum quirk of the official code
        F.cross_entropy(net(xb), yb).backward()
        for i, m in enumerate(layers):
            grads[i].append(grad_or_zeros(m.weight).detach().reshape(-1).double().clone())
    total = 0.0
    for gl in grads:
        G = torch.stack(gl)
        std = G.std(dim=0, unbiased=False)
        mean_abs = G.abs().mean(dim=0)
        nz = std != 0
        s = float((mean_abs[nz] / std[nz]).sum())
        if s != 0:
            total += math.log(s) if s > 0 else math.nan
    return total


def p_params(net, x, y, args):
    return count_params(net) / 1e6


def p_flops(net, x, y, args):
    """NB201 counter (per image, millions), formula of shared/data/nb201/README.md."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            per_pos = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels * mod.out_channels // mod.groups
            total[0] += per_pos * out[0, 0].numel()
        elif isinstance(mod, nn.Linear):
            total[0] += mod.in_features * mod.out_features
        elif isinstance(mod, nn.AvgPool2d):
            kh, kw = (mod.kernel_size, mod.kernel_size) if isinstance(mod.kernel_size, int) else mod.kernel_size
            total[0] += out[0].numel() * kh * kw

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.AvgPool2d))]
    try:
        with torch.no_grad():
            net.eval()
            net(torch.zeros(1, *x.shape[1:]))
    finally:
        for h in handles:
            h.remove()
    n_conv = sum(op.startswith("nor_conv") for node in parse_arch(net.arch_str) for op, _ in node)
    return total[0] / 1e6 + 0.43008 * n_conv + 0.136256


FUNCS = {"synflow": p_synflow, "grad_norm": p_grad_norm, "snip": p_snip, "grasp": p_grasp, "fisher": p_fisher,
         "jacob_cov": p_jacob_cov, "naswot": p_naswot, "zen": p_zen, "zico": p_zico, "params": p_params, "flops": p_flops}


# ----------------------------------------------------------------------------------------------
# data, archs, driver

def load_batch(args):
    b = args.batch_size
    if args.data:
        path = os.path.join(args.data, "data_batch_1.bin")
        rec = np.fromfile(path, dtype=np.uint8)
        assert rec.size % 3073 == 0, f"{path}: size is not a multiple of 3073"
        rec = rec.reshape(-1, 3073)
        assert rec.shape[0] >= b, f"{path} holds {rec.shape[0]} records, fewer than batch size {b}"
        rec = rec[:b]
        y = torch.from_numpy(rec[:, 0].astype(np.int64))
        x = torch.from_numpy(rec[:, 1:].reshape(b, 3, 32, 32).astype(np.float32) / 255.0)
        x = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
        return x.contiguous(), y
    gen = torch.Generator().manual_seed(args.seed)
    return torch.randn(b, 3, 32, 32, generator=gen), torch.randint(0, 10, (b,), generator=gen)


def find_csv(name):
    for c in CSV_CANDIDATES:
        p = os.path.join(os.path.dirname(c), name)
        if os.path.exists(p):
            return p
    sys.exit(f"cannot find {name} next to any of {CSV_CANDIDATES}")


def build(arch, seed):
    torch.manual_seed(seed)
    net = NB201Net(arch).train()
    net.arch_str = arch
    return net


def finite_or_none(v):
    return v if v is not None and math.isfinite(v) else None


def run_arch(arch, index, proxies, x, y, args):
    base = build(arch, args.seed)
    scores, ms = {}, {}
    for name in proxies:
        fn = FUNCS[name]
        times, score = [], None
        for r in range(args.warmup + args.repeat):
            net = copy.deepcopy(base)
            t0 = time.perf_counter()
            v = fn(net, x, y, args)
            dt = (time.perf_counter() - t0) * 1e3
            del net
            if r >= args.warmup:
                times.append(dt)
                if score is None:
                    score = float(v)
        scores[name] = finite_or_none(score)
        ms[name] = float(np.median(times))
    return {"arch": arch, "index": index, "scores": scores, "ms": ms, "torch_version": torch.__version__,
            "batch_size": args.batch_size, "threads": args.threads, "seed": args.seed,
            "data": "cifar10" if args.data else "random"}


def rankdata(a):
    """Average ranks (ties share the mean rank), like scipy.stats.rankdata."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    sa = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(a, b):
    """Spearman rho over the pairs where both values are finite; returns (rho, n)."""
    pairs = [(u, v) for u, v in zip(a, b) if u is not None and v is not None and math.isfinite(u) and math.isfinite(v)]
    if len(pairs) < 3:
        return float("nan"), len(pairs)
    ra, rb = rankdata([p[0] for p in pairs]), rankdata([p[1] for p in pairs])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return (float((ra * rb).sum()) / den if den > 0 else float("nan")), len(pairs)


def naslib_check(k, proxies, x, y, args):
    with open(find_csv("nb201_zc.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == "cifar10"]
    rng = np.random.default_rng(args.seed)
    picked = [rows[i] for i in sorted(rng.choice(len(rows), size=min(k, len(rows)), replace=False))]
    ours = []
    for r in picked:
        res = run_arch(r["arch_str"], None, proxies, x, y, args)
        print(json.dumps(res), flush=True)
        ours.append(res["scores"])
    summary = {}
    for name in proxies:
        mine = [s[name] for s in ours]
        entry = {}
        if name in NASLIB_COLUMN:
            entry["rho_vs_naslib"], entry["n"] = spearman(mine, [float(r[NASLIB_COLUMN[name]]) for r in picked])
        entry["rho_vs_val_acc"], _ = spearman(mine, [float(r["val_acc"]) for r in picked])
        if name in NASLIB_COLUMN:
            entry["naslib_rho_vs_val_acc"], _ = spearman([float(r[NASLIB_COLUMN[name]]) for r in picked],
                                                         [float(r["val_acc"]) for r in picked])
        summary[name] = entry
    print(json.dumps({"naslib_check": summary, "archs": len(picked), "batch_size": args.batch_size,
                      "data": "cifar10" if args.data else "random"}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--archs", help="';'-separated NB201 arch strings, each optionally INDEX=ARCH")
    g.add_argument("--indices", help="comma-separated arch_index values of nb201.csv")
    g.add_argument("--naslib-check", type=int, metavar="K",
                   help="score K archs sampled from nb201_zc.csv (cifar10) and print Spearman rho per proxy")
    p.add_argument("--proxies", default="all", help=f"comma-separated subset of {','.join(PROXIES)}, or all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="directory holding CIFAR-10 data_batch_1.bin (else random data)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0, help="untimed runs per proxy before the timed ones")
    args = p.parse_args()

    proxies = PROXIES if args.proxies == "all" else [s.strip() for s in args.proxies.split(",") if s.strip()]
    unknown = [s for s in proxies if s not in FUNCS]
    if unknown:
        p.error(f"unknown proxies {unknown}; known: {PROXIES}")
    if args.batch_size < 2:
        p.error("--batch-size must be at least 2")
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    x, y = load_batch(args)

    if args.naslib_check:
        naslib_check(args.naslib_check, proxies, x, y, args)
        return
    if args.indices:
        with open(find_csv("nb201.csv"), newline="") as f:
            table = {int(r["arch_index"]): r["arch_str"] for r in csv.DictReader(f)}
        todo = [(table[int(i)], int(i)) for i in args.indices.split(",") if i.strip()]
    else:
        # "ARCH" or "INDEX=ARCH" (the Rust benchmark passes its reference archs so)
        todo = [(a.split("=", 1)[-1].strip(), int(a.split("=", 1)[0]) if "=" in a else None)
                for a in args.archs.split(";") if a.strip()]
    for arch, index in todo:
        print(json.dumps(run_arch(arch, index, proxies, x, y, args)), flush=True)


if __name__ == "__main__":
    main()
