"""What a user would run instead of autoagent on a table: FLAML, AutoGluon, or a default
LightGBM, fitted on the training rows of a fixed split under the same time budget and core
count, predicting the test rows. `autoagent bench tabular` runs it once per peer and split and
computes every metric itself, one way for all tools, from the predictions this prints.

    python tabular_peers.py --peer flaml --csv credit_g.csv --split credit_g_seed0.json \
        --target target --problem binary --budget-seconds 60 --threads 1

prints one JSON object: the peer and its version, `classes` (the class labels as text, in the
order of each prediction row's probabilities; empty for a regression), `predictions` (one row
of probabilities a test row, or one value), `fit_seconds` and `predict_seconds`.

Protocol (as in shared/data/README.md): `pandas.read_csv` defaults (so `?` stays a category);
FLAML `AutoML().fit(time_budget=B, n_jobs=T, metric=roc_auc|log_loss|rmse)`; AutoGluon
`TabularPredictor(eval_metric=...).fit(time_limit=B, presets="medium_quality", num_cpus=T)`;
`defaults`: LightGBM with its default parameters behind median imputation and one-hot encoding.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd


def load(args):
    df = pd.read_csv(args.csv)
    with open(args.split) as f:
        split = json.load(f)
    train = df.iloc[split["train"]].reset_index(drop=True)
    test = df.iloc[split["test"]].reset_index(drop=True)
    y = train[args.target]
    return train.drop(columns=[args.target]), y, test.drop(columns=[args.target])


def flaml_fit(args, x, y, test):
    from flaml import AutoML
    import flaml

    metric = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}[args.problem]
    task = "regression" if args.problem == "regression" else "classification"
    automl = AutoML()
    started = time.perf_counter()
    automl.fit(x, y, task=task, time_budget=args.budget_seconds, n_jobs=args.threads, metric=metric, seed=args.seed, verbose=0)
    fit = time.perf_counter() - started
    started = time.perf_counter()
    if task == "regression":
        pred, classes = automl.predict(test).tolist(), []
    else:
        pred, classes = automl.predict_proba(test).tolist(), [str(c) for c in automl.classes_]
    return pred, classes, fit, time.perf_counter() - started, flaml.__version__


def autogluon_fit(args, x, y, test):
    from autogluon.tabular import TabularPredictor
    import autogluon.tabular

    metric = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}[args.problem]
    train = x.copy()
    train[args.target] = y
    with tempfile.TemporaryDirectory() as path:
        predictor = TabularPredictor(label=args.target, eval_metric=metric, problem_type=args.problem, path=path, verbosity=0)
        started = time.perf_counter()
        predictor.fit(train, time_limit=args.budget_seconds, presets="medium_quality", num_cpus=args.threads)
        fit = time.perf_counter() - started
        started = time.perf_counter()
        if args.problem == "regression":
            pred, classes = predictor.predict(test).tolist(), []
        else:
            proba = predictor.predict_proba(test)
            pred, classes = proba.values.tolist(), [str(c) for c in proba.columns]
        return pred, classes, fit, time.perf_counter() - started, autogluon.tabular.__version__


def defaults_fit(args, x, y, test):
    import lightgbm
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    categorical = [c for c in x.columns if x[c].dtype == object]
    numeric = [c for c in x.columns if c not in categorical]
    prep = ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), categorical),
        ]
    )
    params = dict(n_jobs=args.threads, random_state=args.seed, verbose=-1)
    model = lightgbm.LGBMRegressor(**params) if args.problem == "regression" else lightgbm.LGBMClassifier(**params)
    pipe = make_pipeline(prep, model)
    started = time.perf_counter()
    pipe.fit(x, y)
    fit = time.perf_counter() - started
    started = time.perf_counter()
    if args.problem == "regression":
        pred, classes = pipe.predict(test).tolist(), []
    else:
        pred, classes = pipe.predict_proba(test).tolist(), [str(c) for c in pipe.classes_]
    return pred, classes, fit, time.perf_counter() - started, lightgbm.__version__


PEERS = {"flaml": flaml_fit, "autogluon": autogluon_fit, "defaults": defaults_fit}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", choices=sorted(PEERS), required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--target", default="target")
    p.add_argument("--problem", choices=["binary", "multiclass", "regression"], required=True)
    p.add_argument("--budget-seconds", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    x, y, test = load(args)
    pred, classes, fit, predict, version = PEERS[args.peer](args, x, y, test)
    if args.problem == "regression":
        pred = [float(v) for v in np.asarray(pred).ravel()]
    json.dump(
        {
            "peer": args.peer,
            "version": version,
            "classes": classes,
            "predictions": pred,
            "fit_seconds": fit,
            "predict_seconds": predict,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
