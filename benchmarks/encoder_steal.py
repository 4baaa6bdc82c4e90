"""Encoder stealing re-measured: Cont-Steal (Sha et al., CVPR 2023), the SSL-extraction losses
(Dziedzic et al., ICML 2022), StolenEncoder (Liu et al., CCS 2022) and stealing the classifier.

    python -m benchmarks.encoder_steal [--only SECTION ...] [--budget N]

Sections (each finished run is stored in docs/results/encoder_stealing.json at once, so a cut-off
benchmark resumes where it stopped; the Markdown is rebuilt from that file):

- ``victims``: SimCLR, MoCo v2, BYOL and SimSiam encoders pre-trained here on Fashion-MNIST train
  (labels unused), and a supervised encoder; pre-training time on this machine and linear-probe
  accuracy (from each checkpoint's meta).
- ``losses``: against the SimCLR victim at ``--budget`` queries (default 10k), Cont-Steal against
  MSE, cosine, InfoNCE, soft nearest neighbour, Wasserstein and StolenEncoder, and Cont-Steal
  without its D_self negatives; pools in distribution (Fashion-MNIST train) and out of it
  (20,000 crops of scikit-image's natural photos).
- ``classifier``: the same budget spent stealing the downstream classifier (victim encoder + its
  linear head) from its labels and from its posteriors (Knockoff, random transfer set).
- ``defences``: Cont-Steal and MSE (in-distribution pool) against embedding noise, top-k and
  rounding at several strengths; protection (stolen agreement) against utility (the victim's own
  downstream accuracy under the defence).
- ``efficientnet``: the real EfficientNet-Lite0 (ImageNet, 96 px) as the victim, Fashion-MNIST as
  the downstream task (the labelled data there is offline), pools Fashion-MNIST train and the
  natural-photo crops, a small ResNet on 3x-downsampled inputs as the surrogate.

Judging (never queried through the thief's ledger): a linear head on frozen features, the same
protocol for the victim and each stolen encoder (``EncoderJudge``): trained on 5,000 labelled
Fashion-MNIST train images, tested on 5,000 Fashion-MNIST test images. ``agreement``: stolen
encoder + its head against victim encoder + its head.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from stealkit.experiments.encoders import EncoderJudge, encoder_oracle, surrogate_encoder
from torch import Tensor, nn

from benchmarks.common import RESULTS, machine
from stealkit.attacks import ContSteal, EncoderStealing, KnockoffNets, StolenEncoder, TrainRecipe
from stealkit.data import load_dataset, to_spec
from stealkit.data.pool import QueryPool
from stealkit.defenses import build_defense
from stealkit.metrics import evaluate_stolen
from stealkit.models import build_model
from stealkit.models.encoder import SurrogateEncoder, embed
from stealkit.oracle import Ledger, LocalOracle
from stealkit.train.loop import default_device
from stealkit.victims.base import Victim
from stealkit.victims.registry import load_victim

JSON = RESULTS / "encoder_stealing.json"
SECTIONS = ("victims", "losses", "classifier", "defences", "efficientnet")
BUDGET = 10_000
SURROGATE = "cnn3"
# Pre-training of the self-supervised victims: sized so that each takes well under 20 minutes on
# 2 CPU cores (the measured time is in the results).
SSL: dict[str, Any] = {
    "dataset": "fashion-mnist",
    "arch": "cnn3",
    "epochs": 10,
    "max_images": 20_000,
}
METHODS = ("simclr", "moco", "byol", "simsiam")
PROBE = {"train": 5_000, "test": 5_000, "epochs": 30}
# Out of distribution: random crops of scikit-image's natural photos (full MNIST and CIFAR are not
# available offline), turned grey and 28x28 by the victim's input spec.
POOLS = {"in": ("fashion-mnist", "train"), "out": ("skimage-crops", "train")}
ATTACKS: dict[str, Callable[[], Any]] = {
    "contsteal": lambda: ContSteal(),
    "contsteal-no-self": lambda: ContSteal(self_negatives=False),
    "mse": lambda: EncoderStealing(loss="mse"),
    "cosine": lambda: EncoderStealing(loss="cosine"),
    "infonce": lambda: EncoderStealing(loss="infonce"),
    "soft-nn": lambda: EncoderStealing(loss="soft-nn"),
    "wasserstein": lambda: EncoderStealing(loss="wasserstein"),
    "stolenencoder": lambda: StolenEncoder(),
}
DEFENCES: dict[str, tuple[str, dict[str, Any]]] = {
    "noise 0.1": ("embedding_noise", {"sigma": 0.1, "relative": True}),
    "noise 0.3": ("embedding_noise", {"sigma": 0.3, "relative": True}),
    "noise 1.0": ("embedding_noise", {"sigma": 1.0, "relative": True}),
    "top-16": ("embedding_topk", {"k": 16}),
    "top-64": ("embedding_topk", {"k": 64}),
    "round 0": ("embedding_rounding", {"decimals": 0}),
    "round 1": ("embedding_rounding", {"decimals": 1}),
}
CLASSIFIER_RECIPE = TrainRecipe(epochs=30, min_steps=600, batch_size=128, lr=1e-3, augment=False)
EFFNET = {"image_size": 96, "probe_train": 5_000, "probe_test": 2_000, "budget": 20_000}


def load() -> dict[str, Any]:
    return json.loads(JSON.read_text()) if JSON.exists() else {"runs": {}}


def save(res: dict[str, Any]) -> None:
    """Write ``res``, keeping runs another invocation stored meanwhile (sections may run in
    parallel processes)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    res["runs"] = {**load()["runs"], **res["runs"]}
    res["machine"] = machine()
    JSON.write_text(json.dumps(res, indent=2))
    (RESULTS / "encoder_stealing.md").write_text(markdown(res))


def ssl_victim(method: str) -> Victim:
    return load_victim("ssl", method=method, **SSL)


def fashion_judge(
    victim: Victim,
    device: torch.device,
    n_train: int = PROBE["train"],
    n_test: int = PROBE["test"],
) -> EncoderJudge:
    """Linear probes on Fashion-MNIST (seeded subsets), in the victim's input spec."""
    train = load_dataset("fashion-mnist", "train").limit(n_train, seed=1)
    test = load_dataset("fashion-mnist", "test").limit(n_test, seed=1)
    assert train.y is not None and test.y is not None
    return EncoderJudge(
        victim,
        to_spec(train.images(), victim.spec),
        train.y,
        to_spec(test.images(), victim.spec),
        test.y,
        epochs=PROBE["epochs"],
        device=device,
    )


def steal_encoder(
    attack: Any,
    victim: Victim,
    pool: QueryPool,
    judge: EncoderJudge,
    budget: int,
    device: torch.device,
    *,
    defence: tuple[str, dict[str, Any]] | None = None,
    surrogate: SurrogateEncoder | None = None,
) -> dict[str, Any]:
    ledger = Ledger(budget=budget)
    d = build_defense(defence[0], **defence[1]) if defence else None
    oracle = encoder_oracle(victim, d, ledger, device)
    sur = surrogate or surrogate_encoder(SURROGATE, victim, oracle.output_dim)
    t0 = time.perf_counter()
    result = attack.run(oracle, pool=pool, surrogate=sur, budget=budget, seed=0, device=device)
    seconds = time.perf_counter() - t0
    return {
        **judge.evaluate(result.surrogate),
        "queries": ledger.spent,
        "seconds": round(seconds, 1),
        "attack": repr(attack),
    }


def section_victims(res: dict[str, Any], device: torch.device) -> None:
    for method in METHODS:
        key = f"victims/{method}"
        if key in res["runs"]:
            continue
        t0 = time.perf_counter()
        v = ssl_victim(method)
        res["runs"][key] = {
            "train_seconds": v.meta.get("train_seconds"),
            "probe_accuracy": v.meta.get("probe_accuracy"),
            "feature_dim": v.meta.get("feature_dim"),
            "train_size": v.meta.get("train_size"),
            "epochs": v.meta.get("epochs"),
            "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
        }
        print(key, res["runs"][key], flush=True)
        save(res)
    key = "victims/supervised"
    if key not in res["runs"]:
        v = load_victim("supervised-encoder", dataset="fashion-mnist", arch="cnn3", epochs=5)
        judge = fashion_judge(v, device)
        res["runs"][key] = {
            "train_seconds": v.meta.get("train_seconds"),
            "probe_accuracy": judge.victim_probe.accuracy,
            "feature_dim": v.meta.get("feature_dim"),
            "epochs": v.meta.get("epochs"),
        }
        print(key, res["runs"][key], flush=True)
        save(res)


def section_losses(
    res: dict[str, Any], device: torch.device, budget: int, attacks: list[str], pools: list[str]
) -> None:
    victim = ssl_victim("simclr")
    judge = fashion_judge(victim, device)
    for pool_name in pools:
        ds, split = POOLS[pool_name]
        pool = QueryPool(load_dataset(ds, split), victim.spec)
        key = f"losses/{pool_name}/untrained/0"
        if key not in res["runs"]:  # the floor: a surrogate that bought nothing
            torch.manual_seed(0)
            sur = surrogate_encoder(SURROGATE, victim, int(victim.meta["feature_dim"]))
            res["runs"][key] = {**judge.evaluate(sur), "queries": 0, "seconds": 0.0}
            print(key, _short(res["runs"][key]), flush=True)
            save(res)
        for name in attacks:
            make = ATTACKS[name]
            key = f"losses/{pool_name}/{name}/{budget}"
            if key in res["runs"]:
                continue
            res["runs"][key] = steal_encoder(make(), victim, pool, judge, budget, device)
            print(key, _short(res["runs"][key]), flush=True)
            save(res)


def section_classifier(res: dict[str, Any], device: torch.device, budget: int) -> None:
    """Steal victim encoder + its linear head as a classifier, from labels and from posteriors."""
    victim = ssl_victim("simclr")
    judge = fashion_judge(victim, device)
    clf = nn.Sequential(victim.model, judge.victim_probe.head).eval()
    x_eval, y_eval = judge.test_x, judge.test_y
    victim_pred = judge.victim_probe.predictions
    for pool_name, (ds, split) in POOLS.items():
        pool = QueryPool(load_dataset(ds, split), victim.spec)
        for output in ("probabilities", "label"):
            key = f"classifier/{pool_name}/{output}/{budget}"
            if key in res["runs"]:
                continue
            ledger = Ledger(budget=budget)
            oracle = LocalOracle(clf, victim.spec, output=output, ledger=ledger, device=device)
            sur = build_model(
                SURROGATE, in_channels=1, num_classes=judge.num_classes, image_size=28
            )
            attack = KnockoffNets(strategy="random", online_steps=0, recipe=CLASSIFIER_RECIPE)
            t0 = time.perf_counter()
            result = attack.run(
                oracle, pool=pool, surrogate=sur, budget=budget, seed=0, device=device
            )
            m = evaluate_stolen(
                result.surrogate,
                x_eval,
                y_eval,
                victim_pred,
                judge.victim_probe.accuracy,
                device=device,
            )
            res["runs"][key] = {
                **m,
                "victim_accuracy": judge.victim_probe.accuracy,
                "queries": ledger.spent,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(key, _short(res["runs"][key]), flush=True)
            save(res)


def section_defences(
    res: dict[str, Any], device: torch.device, budget: int, attacks: list[str]
) -> None:
    victim = ssl_victim("simclr")
    judge = fashion_judge(victim, device)
    pool = QueryPool(load_dataset(*POOLS["in"]), victim.spec)
    for name, (type_, params) in DEFENCES.items():
        ukey = f"utility/{name}"
        if ukey not in res["runs"]:
            res["runs"][ukey] = judge.defense_utility(name, build_defense(type_, **params))
            save(res)
        for attack in attacks:
            key = f"defences/{name}/{attack}/{budget}"
            if key in res["runs"]:
                continue
            r = steal_encoder(
                ATTACKS[attack](), victim, pool, judge, budget, device, defence=(type_, params)
            )
            res["runs"][key] = r
            print(key, _short(r), flush=True)
            save(res)


class Downsampled(nn.Module):
    """A backbone that sees its input average-pooled by ``factor``: a CPU-sized surrogate for a
    victim that takes large images. ``features`` is the pooled backbone's embedding."""

    def __init__(self, net: nn.Module, factor: int) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def features(self, x: Tensor) -> Tensor:
        return embed(self.net, F.avg_pool2d(x, self.factor))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def section_efficientnet(
    res: dict[str, Any],
    device: torch.device,
    attacks: list[str] | None = None,
    only_pools: list[str] | None = None,
) -> None:
    size, budget = EFFNET["image_size"], EFFNET["budget"]
    victim = load_victim("efficientnet-lite0", image_size=size)
    t0 = time.perf_counter()
    judge = fashion_judge(victim, device, EFFNET["probe_train"], EFFNET["probe_test"])
    res["runs"]["efficientnet/victim"] = {
        "probe_accuracy": judge.victim_probe.accuracy,
        "image_size": size,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    save(res)
    factor = size // 32
    pools = {name: QueryPool(load_dataset(*POOLS[name]), victim.spec) for name in POOLS}
    for pool_name, name in (
        ("in", "mse"),
        ("out", "mse"),
        ("in", "contsteal"),
        ("out", "contsteal"),
    ):
        key = f"efficientnet/{pool_name}/{name}/{budget}"
        if (
            key in res["runs"]
            or name not in (attacks or [name])
            or pool_name not in (only_pools or [pool_name])
        ):
            continue
        net = build_model("resnet8", in_channels=3, num_classes=10, image_size=size // factor)
        sur = SurrogateEncoder(
            Downsampled(net, factor), victim.spec.shape, victim.meta["output_dim"]
        )
        r = steal_encoder(
            ATTACKS[name](), victim, pools[pool_name], judge, budget, device, surrogate=sur
        )
        res["runs"][key] = r
        print(key, _short(r), flush=True)
        save(res)


def _defence_run(runs: dict[str, Any], name: str, attack: str) -> dict[str, Any]:
    """The stored run of ``attack`` against defence ``name``, at whatever ``--budget`` it ran."""
    prefix = f"defences/{name}/{attack}/"
    return next((r for k, r in runs.items() if k.startswith(prefix)), {})


def _short(r: dict[str, Any]) -> str:
    keys = ("accuracy", "agreement", "relative_accuracy", "queries", "seconds")
    return ", ".join(
        f"{k} {r[k]:.3f}" if isinstance(r.get(k), float) else f"{k} {r.get(k)}" for k in keys
    )


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("—" if v is None else str(v))


def markdown(res: dict[str, Any]) -> str:
    runs = res["runs"]
    out = [
        "# Encoder stealing",
        "",
        "Written by `python -m benchmarks.encoder_steal`; raw numbers in "
        "`encoder_stealing.json`. Machine: " + json.dumps(res.get("machine", {})) + ".",
        "",
    ]
    vic = {k.split("/")[1]: v for k, v in runs.items() if k.startswith("victims/")}
    if vic:
        out += [
            "## Victims (Fashion-MNIST, cnn3 backbone)",
            "",
            f"Self-supervised pre-training: {SSL}. Linear probe: 10k train images, full test split "
            "(supervised: the benchmark's probe, 5k/5k).",
            "",
            "| encoder | pre-training (s) | linear-probe accuracy | embedding size |",
            "|---|---:|---:|---:|",
        ]
        for m, v in vic.items():
            out.append(
                f"| {m} | {_f(v.get('train_seconds'))} | {_f(v.get('probe_accuracy'))} | "
                f"{v.get('feature_dim')} |"
            )
        out.append("")
    table_keys = [k for k in runs if k.startswith(("losses/", "classifier/"))]
    if table_keys:
        out += [
            "## Steal the encoder or the classifier (SimCLR victim)",
            "",
            "Downstream task: Fashion-MNIST (linear probe). `classifier/...`: the victim encoder "
            "+ its linear head served as a classifier and stolen with Knockoff (random).",
            "",
            "| run | pool | queries | accuracy | agreement | accuracy / victim's | cosine | seconds |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for k in sorted(table_keys):
            r = runs[k]
            _, pool, name, _b = k.split("/")
            label = name if k.startswith("losses/") else f"classifier from {name}"
            if name == "untrained":
                label = "untrained surrogate (no queries: the floor)"
            out.append(
                f"| {label} | {pool} | {r.get('queries')} | {_f(r.get('accuracy'))} | "
                f"{_f(r.get('agreement'))} | {_f(r.get('relative_accuracy'))} | "
                f"{_f(r.get('embedding_cosine'))} | {_f(r.get('seconds'))} |"
            )
        out.append("")
    util = {k.split("/", 1)[1]: v for k, v in runs.items() if k.startswith("utility/")}
    if util:
        out += [
            "## Embedding defences (in-distribution pool)",
            "",
            "Utility: the victim's own downstream accuracy when honest users train and test "
            "their linear head on defended embeddings. Protection: the stolen encoder's "
            "agreement (lower protects more).",
            "",
            "| defence | victim accuracy | relative L2 change | Cont-Steal agreement | "
            "MSE agreement |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, u in util.items():
            cs, ms = (_defence_run(runs, name, attack) for attack in ("contsteal", "mse"))
            out.append(
                f"| {name} | {_f(u.get('victim_accuracy'))} | "
                f"{_f(u.get('mean_relative_l2_change'))} | {_f(cs.get('agreement'))} | "
                f"{_f(ms.get('agreement'))} |"
            )
        out.append("")
    eff = {k: v for k, v in runs.items() if k.startswith("efficientnet/")}
    if eff:
        vic_acc = eff.get("efficientnet/victim", {}).get("probe_accuracy")
        out += [
            "## EfficientNet-Lite0 (real, ImageNet) as the victim",
            "",
            f"Input {EFFNET['image_size']} px; downstream Fashion-MNIST ({EFFNET['probe_train']} "
            f"probe-train, {EFFNET['probe_test']} test images); victim linear-probe accuracy "
            f"{_f(vic_acc)}. Surrogate: resnet8 on 3x-downsampled inputs.",
            "",
            "| attack | pool | queries | accuracy | accuracy / victim's | agreement | seconds |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for k, r in eff.items():
            if k == "efficientnet/victim":
                continue
            _, pool, name, _b = k.split("/")
            out.append(
                f"| {name} | {pool} | {r.get('queries')} | {_f(r.get('accuracy'))} | "
                f"{_f(r.get('relative_accuracy'))} | {_f(r.get('agreement'))} | "
                f"{_f(r.get('seconds'))} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--budget", type=int, default=BUDGET, help="queries per encoder attack")
    ap.add_argument(
        "--attacks", nargs="*", choices=list(ATTACKS), help="losses, defences: only these attacks"
    )
    ap.add_argument(
        "--pools", nargs="*", choices=list(POOLS), help="losses, efficientnet: only these pools"
    )
    args = ap.parse_args()
    device = default_device()
    res = load()
    for section in args.only or SECTIONS:
        t0 = time.perf_counter()
        if section == "victims":
            section_victims(res, device)
        elif section == "losses":
            section_losses(
                res, device, args.budget, args.attacks or list(ATTACKS), args.pools or list(POOLS)
            )
        elif section == "classifier":
            section_classifier(res, device, args.budget)
        elif section == "defences":
            section_defences(res, device, args.budget, args.attacks or ["contsteal", "mse"])
        else:
            section_efficientnet(res, device, args.attacks, args.pools)
        res.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t0, 1)
        save(res)
    print(f"wrote {JSON} and encoder_stealing.md")


if __name__ == "__main__":
    main()
