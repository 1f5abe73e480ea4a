#!/usr/bin/env python3
"""Optuna (TPE + Hyperband) on the NAS-Bench-201 vision space under a wall-clock budget, in PyTorch.

What an Optuna user does with autoagent's vision search space and the same budget: TPE samples a
cell, width, depth and training recipe; every trial trains epoch by epoch, reports its validation
accuracy after each epoch and is pruned by Hyperband (epochs are the fidelity). The search gets
(1 - F) of the budget; the best configuration is then retrained on train + validation for as many
epochs as the rest affords and measured once on the official test split (F = 0: the best trial's
own model is measured instead). See README.md in this directory for the recipe and what it mirrors.
"""
import time

_T0 = time.monotonic()  # the budget clock starts here: imports and data loading count

import argparse, gzip, json, math, os, struct, sys  # noqa: E401,E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nb201_torch import CSV_CANDIDATES, NB201Net, count_params, load_csv  # noqa: E402

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
EDGES = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]  # (target, source), arch-string order
WIDTHS, DEPTHS, BATCHES = [8, 16, 32, 64], (1, 5), [32, 64, 128, 256]
AUGMENTS = ["none", "crop_flip", "crop_flip_cutout"]
LR, WEIGHT_DECAY, CUTOUT, SMOOTHING = (1e-3, 0.5), (1e-5, 1e-2), (4, 16), (0.0, 0.2)
MOMENTUM, CROP_PADDING, EVAL_BATCH = 0.9, 4, 500  # autoagent's TrainConfig defaults
DATASETS = {  # name -> (channels, side, per-channel mean and std on the [0, 1] scale, hflip)
    "fashion-mnist": (1, 28, [0.2860], [0.3530], False),
    "cifar10": (3, 32, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616], True),
}
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class Fail(Exception):
    """A bad input: printed as one `error:` line, exit status 2."""


class Diverged(Exception):
    """The training loss became NaN or infinite: the trial fails (autoagent stops such a run too)."""


class OutOfTime(Exception):
    """The search deadline passed inside a trial's epoch."""


# ---------------------------------------------------------------------------------------------
# Data: the official files, read as autoagent's evaluator/src/data reads them.

def idx_path(d, name):
    for p in (os.path.join(d, name + ".gz"), os.path.join(d, name)):
        if os.path.isfile(p):
            return p
    return None


def read_idx(path, dims):
    """An IDX file (gzipped or not) with magic 0x08 0x<dims> as a uint8 array of shape (n, *rest)."""
    raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    if len(raw) < 4 + 4 * dims or raw[:3] != b"\0\0\x08" or raw[3] != dims:
        raise Fail(f"{path}: not an IDX file of unsigned bytes with {dims} dimensions")
    shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise Fail(f"{path}: header says {shape}, body holds {body.size} bytes")
    return body.reshape(shape)


def load_idx_split(d, images, labels, side):
    x, y = read_idx(idx_path(d, images), 3), read_idx(idx_path(d, labels), 1)
    if x.shape[1:] != (side, side) or len(x) != len(y) or (y > 9).any():
        raise Fail(f"{d}: {images} is {x.shape}, {labels} has {len(y)} labels (max {y.max()})")
    return x[:, None], y


def read_cifar(paths):
    recs = []
    for p in paths:
        raw = np.fromfile(p, np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise Fail(f"{p}: {raw.size} bytes is not a whole number of 3073-byte CIFAR-10 records")
        recs.append(raw.reshape(-1, 3073))
    recs = np.concatenate(recs)
    if (recs[:, 0] > 9).any():
        raise Fail(f"{paths[0]}: a label is out of range 0..9")
    return recs[:, 1:].reshape(-1, 3, 32, 32), recs[:, 0]


def has_files(kind, d):
    if kind == "cifar10":
        return os.path.isfile(os.path.join(d, "test_batch.bin")) and os.path.isfile(os.path.join(d, "data_batch_1.bin"))
    return all(idx_path(d, n) for n in IDX_FILES)


def locate(kind, root):
    """The folder holding the files: root itself, or root/<name>[/cifar-10-batches-bin], root/<name>-mini."""
    cands = [root, os.path.join(root, "cifar-10-batches-bin"), os.path.join(root, kind, "cifar-10-batches-bin"),
             os.path.join(root, kind), os.path.join(root, kind + "-mini")]
    found = next((c for c in cands if has_files(kind, c)), None)
    if found is None:
        raise Fail(f"{kind} not found under {root}")
    return found


def load_dataset(kind, root):
    """{'train': (x, y), 'test': (x, y)}: x uint8 (n, C, H, W), y uint8 (n,)."""
    d = locate(kind, root)
    if kind == "cifar10":
        batches = [os.path.join(d, f"data_batch_{i}.bin") for i in range(1, 6)]
        return {"train": read_cifar([b for b in batches if os.path.isfile(b)]),
                "test": read_cifar([os.path.join(d, "test_batch.bin")])}
    return {"train": load_idx_split(d, IDX_FILES[0], IDX_FILES[1], 28),
            "test": load_idx_split(d, IDX_FILES[2], IDX_FILES[3], 28)}


def hold_out(x, y, fraction):
    """(train, valid): the validation hold-out is the *last* fraction of the training split."""
    n = len(y)
    hold = max(int(math.floor(n * fraction + 1e-9)), 1)
    if n < 20 or hold >= n:
        raise Fail(f"{n} training images cannot give a validation hold-out of {fraction}")
    return (x[:n - hold], y[:n - hold]), (x[n - hold:], y[n - hold:])


def to_torch(split):
    x, y = split
    return torch.from_numpy(np.array(x, np.uint8)), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Batches: normalisation, random crop from the zero-padded image, flips (CIFAR only), cutout.

def crop_flip(x, dy, dx, flip, pad):
    """Each image i of x (B, C, H, W; raw scale) shifted by (dy[i], dx[i]) inside its zero padding,
    mirrored first where flip[i]: out[y, x'] = padded[y + dy, (flip ? W-1-x' : x') + dx]."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h)[None] + pad + dy[:, None]
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + pad + dx[:, None]
    return xp[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x, cy, cx, length):
    """DeVries & Taylor's cutout on normalised images: zero rows [cy - L//2, cy + L//2) x the same
    columns around cx, clipped at the border."""
    h, w = x.shape[2:]
    r, c = torch.arange(h)[None], torch.arange(w)[None]
    in_r = (r >= (cy[:, None] - length // 2)) & (r < (cy[:, None] + length // 2))
    in_c = (c >= (cx[:, None] - length // 2)) & (c < (cx[:, None] + length // 2))
    return x * ~(in_r[:, :, None] & in_c[:, None, :])[:, None]


class Batcher:
    def __init__(self, kind):
        _, _, mean, std, self.hflip = DATASETS[kind]
        self.mean, self.std = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]

    def batch(self, x_u8, idx, aug="none", cutout_length=0, gen=None):
        x = x_u8[idx].float() / 255.0
        b, _, h, w = x.shape
        if aug != "none":
            dy, dx = (torch.randint(-CROP_PADDING, CROP_PADDING + 1, (b,), generator=gen) for _ in range(2))
            flip = (torch.rand(b, generator=gen) < 0.5) & self.hflip
            x = crop_flip(x, dy, dx, flip, CROP_PADDING)
        x = (x - self.mean) / self.std
        if aug == "crop_flip_cutout":
            x = cutout(x, torch.randint(0, h, (b,), generator=gen), torch.randint(0, w, (b,), generator=gen), cutout_length)
        return x.contiguous()


# ---------------------------------------------------------------------------------------------
# The space and the network.

def arch_string(cfg):
    ops = [cfg[f"edge_{t}_{s}"] for t, s in EDGES]
    return f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"


def suggest(trial):
    """One configuration of autoagent's vision space, as Optuna parameters."""
    cfg = {f"edge_{t}_{s}": trial.suggest_categorical(f"edge_{t}_{s}", OPS) for t, s in EDGES}
    cfg["width"] = trial.suggest_categorical("width", WIDTHS)
    cfg["depth"] = trial.suggest_int("depth", *DEPTHS)
    cfg["lr"] = trial.suggest_float("lr", *LR, log=True)
    cfg["weight_decay"] = trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True)
    cfg["batch"] = trial.suggest_categorical("batch", BATCHES)
    cfg["augment"] = trial.suggest_categorical("augment", AUGMENTS)
    if cfg["augment"] == "crop_flip_cutout":
        cfg["cutout_length"] = trial.suggest_int("cutout_length", *CUTOUT)
    cfg["label_smoothing"] = trial.suggest_float("label_smoothing", *SMOOTHING)
    return cfg


def build_model(cfg, kind, seed):
    torch.manual_seed(seed)
    return NB201Net(arch_string(cfg), c=cfg["width"], n=cfg["depth"], in_channels=DATASETS[kind][0])


def param_formula(arch_ops, c, n, in_channels, classes=10):
    """autoagent's Nb201Config::param_count: conv/linear weights, linear bias, BN affine."""
    rcb = lambda ci, co, k: ci * co * k * k + 2 * co  # noqa: E731
    p = in_channels * c * 9 + 2 * c
    for stage, ch in enumerate([c, 2 * c, 4 * c]):
        if stage:
            p += rcb(ch // 2, ch, 3) + rcb(ch, ch, 3) + ch // 2 * ch
        p += n * sum({"nor_conv_1x1": rcb(ch, ch, 1), "nor_conv_3x3": rcb(ch, ch, 3)}.get(op, 0) for op in arch_ops)
    return p + 2 * 4 * c + 4 * c * classes + classes


# ---------------------------------------------------------------------------------------------
# Training: autoagent's train loop (SGD, Nesterov momentum 0.9, cosine per step to 0).

class Trainer:
    def __init__(self, model, cfg, batcher, n_train, epochs, seed):
        self.model, self.cfg, self.batcher = model, cfg, batcher
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=MOMENTUM, nesterov=True,
                                   weight_decay=cfg["weight_decay"])
        self.total = math.ceil(n_train / cfg["batch"]) * epochs
        self.step, self.gen = 0, torch.Generator().manual_seed(seed)

    def lr_at(self, step):
        return 0.5 * self.cfg["lr"] * (1.0 + math.cos(math.pi * step / max(self.total, 1)))

    def epoch(self, x, y, deadline=None):
        """One pass over (x, y) in a fresh random order; OutOfTime once `deadline` passes."""
        self.model.train()
        order = torch.randperm(len(y), generator=self.gen)
        for idx in order.split(self.cfg["batch"]):
            if deadline is not None and time.monotonic() >= deadline:
                raise OutOfTime()
            xb = self.batcher.batch(x, idx, self.cfg["augment"], self.cfg.get("cutout_length", 0), self.gen)
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            loss = F.cross_entropy(self.model(xb), y[idx], label_smoothing=self.cfg["label_smoothing"])
            if not torch.isfinite(loss):
                raise Diverged(f"loss {loss.item()} at step {self.step}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1


def evaluate(model, batcher, x, y):
    """Top-1 accuracy (%) with BatchNorm in inference mode, in batches of 500."""
    model.eval()
    right = 0
    with torch.no_grad():
        for idx in torch.arange(len(y)).split(EVAL_BATCH):
            right += (model(batcher.batch(x, idx)).argmax(1) == y[idx]).sum().item()
    return 100.0 * right / max(len(y), 1)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The search.

class Record:
    """What one trial did: its last epoch's validation accuracy and weights, and its speed."""

    def __init__(self, number, cfg):
        self.number, self.cfg, self.state = number, cfg, "running"
        self.epochs, self.acc, self.weights = 0, None, None
        self.train_s, self.eval_s, self.n_train, self.n_valid = 0.0, 0.0, 0, 0

    def seconds_per_train_image(self):
        return self.train_s / max(self.epochs * self.n_train, 1)

    def seconds_per_eval_image(self):
        return self.eval_s / max(self.epochs * self.n_valid, 1)


class Search:
    def __init__(self, args, data, batcher):
        self.args, self.data, self.batcher = args, data, batcher
        self.records, self.kept = [], {}  # kept: "complete"/"pruned" -> best Record with its weights
        self.test_reserve, self.ended = 0.0, _T0

    def search_end(self):
        """The search deadline; with --final-fraction 0 it leaves room for the test evaluation."""
        a = self.args
        return _T0 + a.budget_seconds * (1.0 - a.final_fraction) - (self.test_reserve if a.final_fraction == 0 else 0.0)

    def objective(self, trial):
        rec = Record(trial.number, suggest(trial))
        self.records.append(rec)
        try:
            return self.run_trial(trial, rec)
        finally:
            self.keep(rec)

    def run_trial(self, trial, rec):
        (xt, yt), (xv, yv) = self.data["train"], self.data["valid"]
        rec.n_train, rec.n_valid = len(yt), len(yv)
        seed = self.args.seed * 100003 + trial.number
        model = build_model(rec.cfg, self.args.dataset, seed)
        trainer = Trainer(model, rec.cfg, self.batcher, len(yt), self.args.max_epochs, seed)
        for epoch in range(1, self.args.max_epochs + 1):
            t0 = time.monotonic()
            try:
                trainer.epoch(xt, yt, self.search_end())
            except OutOfTime:
                rec.state = "cut"
                raise optuna.TrialPruned(f"search deadline inside epoch {epoch}")
            except Diverged:
                rec.state = "failed"
                raise
            t1 = time.monotonic()
            acc = evaluate(model, self.batcher, xv, yv)
            self.measure(rec, epoch, acc, model, t1 - t0, time.monotonic() - t1)
            trial.report(acc, epoch)
            if epoch < self.args.max_epochs and trial.should_prune():
                rec.state = "pruned"
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        rec.state = "complete"
        return rec.acc

    def measure(self, rec, epoch, acc, model, train_s, eval_s):
        rec.epochs, rec.train_s, rec.eval_s = epoch, rec.train_s + train_s, rec.eval_s + eval_s
        rec.acc, rec.weights = acc, snapshot(model)  # autoagent's trials keep the last epoch
        n_test = len(self.data["test"][1])
        self.test_reserve = max(self.test_reserve, rec.seconds_per_eval_image() * n_test)

    def keep(self, rec):
        """Keep the best trial of each kind (complete; pruned or cut) with its last epoch's weights."""
        kind = "complete" if rec.state == "complete" else "pruned"
        best = self.kept.get(kind)
        if rec.acc is not None and rec.state != "failed" and (best is None or rec.acc > best.acc):
            self.kept[kind], rec = rec, best
        if rec is not None:
            rec.weights = None  # only the kept trials' weights stay in memory

    def best(self):
        return self.kept.get("complete") or self.kept.get("pruned")

    def run(self):
        sampler = optuna.samplers.TPESampler(seed=self.args.seed)
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.args.max_epochs, reduction_factor=3)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        stop_at_deadline = lambda s, t: s.stop() if time.monotonic() >= self.search_end() else None  # noqa: E731
        study.optimize(self.objective, timeout=max(self.search_end() - time.monotonic(), 0.0),
                       callbacks=[stop_at_deadline], catch=(Diverged,))
        self.ended = time.monotonic()
        return study


# ---------------------------------------------------------------------------------------------
# After the search: retrain the best configuration on train + validation, or measure its own model.

MARGIN = 1.1  # the retraining plans with the best trial's speed, 10 % slower (a shared machine varies)


def final_plan(args, best, n_full, n_test):
    """(epochs, training deadline): the retraining epochs that fit in what is left of the budget
    after the test evaluation, at the best trial's measured seconds per image (x MARGIN)."""
    end = _T0 + args.budget_seconds
    test_s = best.seconds_per_eval_image() * n_test * MARGIN
    per_epoch = best.seconds_per_train_image() * n_full * MARGIN
    room = end - time.monotonic() - test_s
    epochs = max(0, min(args.max_epochs, int(room // per_epoch))) if per_epoch > 0 else 0
    return epochs, end - test_s


def retrain(args, best, data, batcher, epochs, deadline):
    """The best configuration trained afresh on train + valid for `epochs` (cosine over them);
    stopped at `deadline` if the machine turns out slower than planned. (model, epochs done)."""
    (xt, yt), (xv, yv) = data["train"], data["valid"]
    x, y = torch.cat([xt, xv]), torch.cat([yt, yv])
    model = build_model(best.cfg, args.dataset, args.seed)
    trainer = Trainer(model, best.cfg, batcher, len(y), epochs, args.seed)
    try:
        for _ in range(epochs):
            trainer.epoch(x, y, deadline)
    except OutOfTime:
        pass
    return model, round(trainer.step / math.ceil(len(y) / best.cfg["batch"]), 3)


def final_phase(args, search, data, batcher):
    """What the final phase did: planned and trained epochs, the test accuracy, a note."""
    best = search.best()
    out = {"final_epochs": 0, "final_epochs_trained": 0, "final_test_accuracy": None, "test_seconds": None}
    if best is None:
        return dict(out, final_note="no trial finished an epoch")
    xs, ys = data["test"]
    n_full = len(data["train"][1]) + len(data["valid"][1])
    epochs, deadline = final_plan(args, best, n_full, len(ys)) if args.final_fraction > 0 else (0, None)
    if epochs > 0:
        try:
            model, done = retrain(args, best, data, batcher, epochs, deadline)
        except Diverged:
            return dict(out, final_epochs=epochs, final_note="the retraining diverged")
        note = "retrained on train+valid" + ("" if done == epochs else ", stopped at the budget")
        return dict(out, final_epochs=epochs, final_epochs_trained=done, final_note=note, **measure_test(model, batcher, xs, ys))
    model = build_model(best.cfg, args.dataset, args.seed)
    model.load_state_dict(best.weights)
    why = "no retraining (--final-fraction 0)" if args.final_fraction == 0 else "not one retraining epoch fits"
    return dict(out, final_note=why + f": the best trial's own model (epoch {best.epochs})", **measure_test(model, batcher, xs, ys))


def measure_test(model, batcher, xs, ys):
    t0 = time.monotonic()
    acc = evaluate(model, batcher, xs, ys)
    return {"final_test_accuracy": acc, "test_seconds": round(time.monotonic() - t0, 2)}


# ---------------------------------------------------------------------------------------------
# Output.

def summary(args, search, final):
    recs, best = search.records, search.best()
    states = [r.state for r in recs]
    wall = time.monotonic() - _T0
    out = {"tool": "optuna", "optuna_version": optuna.__version__, "torch_version": torch.__version__,
           "seed": args.seed, "budget_seconds": args.budget_seconds, "wall_seconds": round(wall, 2),
           "overrun_seconds": round(max(0.0, wall - args.budget_seconds), 2), "trials": len(recs),
           "trials_complete": states.count("complete"), "trials_pruned": states.count("pruned") + states.count("cut"),
           "epochs_trained": sum(r.epochs for r in recs),
           "best_valid_accuracy": best.acc if best else None,
           "best_config": dict(best.cfg, cell=arch_string(best.cfg)) if best else None,
           "final_epochs": final["final_epochs"], "final_test_accuracy": final["final_test_accuracy"]}
    out.update({"dataset": args.dataset, "train_images": len(search.data["train"][1]),
                "valid_images": len(search.data["valid"][1]), "test_images": len(search.data["test"][1]),
                "max_epochs": args.max_epochs, "final_fraction": args.final_fraction, "threads": args.threads,
                "trials_cut_by_deadline": states.count("cut"), "trials_failed": states.count("failed"),
                "best_trial": best.number if best else None, "best_trial_state": best.state if best else None,
                "best_trial_epochs": best.epochs if best else None, "search_seconds": round(search.ended - _T0, 2),
                "final_epochs_trained": final["final_epochs_trained"], "test_seconds": final["test_seconds"],
                "final_note": final["final_note"]})
    return out


def print_summary(o):
    print(f"optuna {o['optuna_version']} (TPE + Hyperband), torch {o['torch_version']}, {o['threads']} threads, "
          f"{o['dataset']}: {o['train_images']} train / {o['valid_images']} valid / {o['test_images']} test images")
    print(f"budget {o['budget_seconds']} s, wall {o['wall_seconds']} s, overrun {o['overrun_seconds']} s")
    print(f"trials {o['trials']}: {o['trials_complete']} complete, {o['trials_pruned']} pruned "
          f"({o['trials_cut_by_deadline']} cut by the deadline), {o['trials_failed']} failed; "
          f"{o['epochs_trained']} epochs trained")
    if o["best_config"] is None:
        print("no trial finished an epoch: nothing to report")
        return
    c = o["best_config"]
    print(f"best trial {o['best_trial']} ({o['best_trial_state']}, {o['best_trial_epochs']} epochs): "
          f"validation {o['best_valid_accuracy']:.2f} %")
    print(f"  cell {c['cell']} width {c['width']} depth {c['depth']} lr {c['lr']:.4g} wd {c['weight_decay']:.3g} "
          f"batch {c['batch']} augment {c['augment']}{' ' + str(c['cutout_length']) if 'cutout_length' in c else ''} "
          f"label smoothing {c['label_smoothing']:.3f}")
    acc = "n/a" if o["final_test_accuracy"] is None else f"{o['final_test_accuracy']:.2f} %"
    print(f"final (after a {o['search_seconds']} s search): {o['final_epochs']} epochs planned, "
          f"{o['final_epochs_trained']} trained, {o['final_note']}; test accuracy {acc}")


# ---------------------------------------------------------------------------------------------
# --check: a self check that needs no data.

def random_cfg(rng, width=None, depth=None):
    cfg = {f"edge_{t}_{s}": str(rng.choice(OPS)) for t, s in EDGES}
    return dict(cfg, width=width or int(rng.choice(WIDTHS)), depth=depth or int(rng.integers(1, 6)))


def check_params(rng, fails):
    for k in range(12):
        cfg, kind = random_cfg(rng), ["fashion-mnist", "cifar10"][k % 2]
        ops = [cfg[f"edge_{t}_{s}"] for t, s in EDGES]
        got, want = count_params(build_model(cfg, kind, 0)), param_formula(ops, cfg["width"], cfg["depth"], DATASETS[kind][0])
        if got != want:
            fails.append(f"params of {arch_string(cfg)} C={cfg['width']} N={cfg['depth']} {kind}: {got} vs formula {want}")
    csv = next((c for c in CSV_CANDIDATES if os.path.exists(c)), None)
    rows = load_csv(csv) if csv else {}
    for k in range(6):
        cfg = random_cfg(rng, 16, 5)
        got, ref = count_params(build_model(cfg, "cifar10", 0)), count_params(NB201Net(arch_string(cfg)))
        row = next((r for r in rows.values() if r["arch_str"] == arch_string(cfg)), None)
        if got != ref or (row and abs(got / 1e6 - float(row["params_M"])) > 5e-7):
            fails.append(f"C=16 N=5 params of {arch_string(cfg)}: {got} vs nb201_torch {ref}, csv {row and row['params_M']}")
    print(f"check: parameter counts of 18 configs ({'with' if rows else 'without'} nb201.csv)")


def check_extremes(fails):
    conv = {f"edge_{t}_{s}": "nor_conv_3x3" for t, s in EDGES}
    for kind, (ch, side, *_rest) in DATASETS.items():
        for width in (WIDTHS[0], WIDTHS[-1]):
            for depth in DEPTHS:
                cfg = dict(conv, width=width, depth=depth, lr=0.1, weight_decay=5e-4, batch=4, augment="crop_flip_cutout",
                           cutout_length=8, label_smoothing=0.1)
                model, b = build_model(cfg, kind, 0), Batcher(kind)
                x, y = torch.randint(0, 256, (4, ch, side, side), dtype=torch.uint8), torch.arange(4)
                t = Trainer(model, cfg, b, 4, 1, 0)
                t.epoch(x, y)
                grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
                if model(b.batch(x, torch.arange(4))).shape != (4, 10) or not grads_ok:
                    fails.append(f"{kind} C={width} N={depth}: bad output shape or non-finite gradients")
    print("check: one training batch at widths 8/64 x depths 1/5 on both datasets' shapes")


def check_batches(fails):
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    zero, no = torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.bool)
    if not torch.equal(crop_flip(x, zero, zero, no, 4), x):
        fails.append("crop_flip at offset 0 is not the identity")
    shifted = crop_flip(x, zero, torch.tensor([1, -5]), no, 4)
    if not (torch.equal(shifted[0, 0, :, :4], x[0, 0, :, 1:]) and shifted[0, 0, :, 4].eq(0).all() and shifted[1].eq(0).all()):
        fails.append("crop_flip does not shift inside the zero padding")
    if not torch.equal(crop_flip(x, zero, zero, ~no, 4), x.flip(3)):
        fails.append("crop_flip does not mirror")
    cut = cutout(torch.ones(1, 1, 6, 6), torch.tensor([0]), torch.tensor([5]), 4)
    if cut.sum().item() != 36 - 2 * 3:
        fails.append(f"cutout at a corner zeroes {36 - cut.sum().item()} pixels, not 6")
    (tx, _), (vx, vy) = hold_out(np.arange(50), np.arange(50), 0.1)
    if len(tx) != 45 or list(vy) != list(range(45, 50)):
        fails.append("the hold-out is not the last 10 %")
    print("check: crop, flip, cutout and the hold-out")


def check_space(seed, fails):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    def objective(trial):
        cfg = suggest(trial)
        return float(count_params(build_model(cfg, "cifar10", 0)) > 0 and
                     ("cutout_length" in cfg) == (cfg["augment"] == "crop_flip_cutout"))
    study.optimize(objective, n_trials=5)
    if any(t.value != 1.0 for t in study.trials):
        fails.append("a sampled configuration is malformed")
    print("check: 5 configurations sampled by Optuna build")


def run_check(args):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fails, rng = [], np.random.default_rng(args.seed)
    check_params(rng, fails)
    check_batches(fails)
    check_space(args.seed, fails)
    check_extremes(fails)
    for f in fails:
        print("FAIL " + f)
    print(f"check: {'ok' if not fails else str(len(fails)) + ' failures'}")
    return 0 if not fails else 1


# ---------------------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Fail(message)


def parse_args(argv):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), help="fashion-mnist or cifar10")
    p.add_argument("--data", metavar="DIR", help="folder with the official files (IDX, gzipped or not; CIFAR-10 binary)")
    p.add_argument("--budget-seconds", type=float, metavar="S", help="wall clock for everything, from interpreter start")
    p.add_argument("--final-fraction", type=float, default=0.25, metavar="F", help="share of the budget kept for the retraining [0.25]")
    p.add_argument("--max-epochs", type=int, default=27, metavar="E", help="epochs of a full trial and Hyperband's max resource [27]")
    p.add_argument("--valid-fraction", type=float, default=0.1, metavar="V", help="the last share of the training split held out [0.1]")
    p.add_argument("--limit-train", type=int, metavar="N", help="use only the first N training images")
    p.add_argument("--threads", type=int, default=2, metavar="T", help="torch intra- and inter-op threads [2]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--check", action="store_true", help="self check (no data); exit 1 on a failure")
    a = p.parse_args(argv)
    if not a.check:
        validate(a)
    return a


def validate(a):
    if a.dataset is None or a.data is None or a.budget_seconds is None:
        raise Fail("--dataset, --data and --budget-seconds are required (or --check)")
    if not (a.budget_seconds > 0 and math.isfinite(a.budget_seconds)):
        raise Fail(f"--budget-seconds must be a positive number, got {a.budget_seconds}")
    if not 0 <= a.final_fraction < 1:
        raise Fail(f"--final-fraction must be in [0, 1), got {a.final_fraction}")
    if not 0 < a.valid_fraction < 1:
        raise Fail(f"--valid-fraction must be in (0, 1), got {a.valid_fraction}")
    if a.max_epochs < 1 or a.threads < 1 or (a.limit_train is not None and a.limit_train < 20):
        raise Fail("--max-epochs and --threads must be at least 1, --limit-train at least 20")
    if not os.path.isdir(a.data):
        raise Fail(f"--data {a.data} is not a folder")


def load_data(args):
    raw = load_dataset(args.dataset, args.data)
    x, y = raw["train"]
    if args.limit_train is not None:
        x, y = x[:args.limit_train], y[:args.limit_train]
    train, valid = hold_out(x, y, args.valid_fraction)
    return {"train": to_torch(train), "valid": to_torch(valid), "test": to_torch(raw["test"])}


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    if args.check:
        return run_check(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING if args.json else optuna.logging.INFO)
    data, batcher = load_data(args), Batcher(args.dataset)
    search = Search(args, data, batcher)
    search.run()
    out = summary(args, search, final_phase(args, search, data, batcher))
    if args.json:
        print(json.dumps(out))
    else:
        print_summary(out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (Fail, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
