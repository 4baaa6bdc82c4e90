"""Turn an ExperimentConfig into runs, results.json and a report."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stealkit import __version__
from stealkit.attacks import build_attack, is_data_free, steals_encoders
from stealkit.data import load_dataset, to_spec
from stealkit.data.pool import QueryPool
from stealkit.defenses import DefendedOracle, Defense, build_defense
from stealkit.experiments.config import ExperimentConfig
from stealkit.experiments.encoders import EncoderJudge, encoder_oracle, surrogate_encoder
from stealkit.metrics import ConvergenceCurve, accuracy, evaluate_stolen, transfer_table
from stealkit.models import build_model
from stealkit.oracle import Ledger, LocalOracle, Oracle, OutputKind
from stealkit.train.loop import default_device, fit
from stealkit.victims.base import Victim

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    attack: str
    defense: str
    budget: int
    seed: int


def expand_grid(cfg: ExperimentConfig) -> list[RunSpec]:
    """Every (attack, defence, budget, seed) of every grid block, without repeats, in order."""
    seen: dict[RunSpec, None] = {}
    for g in cfg.grid:
        for a, d, b, s in itertools.product(g.attacks, g.defenses, g.budgets, g.seeds):
            seen.setdefault(RunSpec(a, d, b, s), None)
    return list(seen)


def resolve_device(name: str) -> torch.device:
    return default_device() if name == "auto" else torch.device(name)


def make_oracle(
    victim: Victim,
    cfg: ExperimentConfig,
    defense: Defense | None,
    ledger: Ledger,
    device: torch.device,
) -> Oracle:
    """The victim's API as the attacker sees it: its output kind, then the defence, one ledger."""
    if defense is None:
        return LocalOracle(
            victim.model,
            victim.spec,
            output=cfg.victim.output,
            k=cfg.victim.k,
            ledger=ledger,
            device=device,
            name=victim.name,
        )
    inner_kind = (
        OutputKind.LOGITS if defense.needs is OutputKind.LOGITS else OutputKind.PROBABILITIES
    )
    inner = LocalOracle(
        victim.model, victim.spec, output=inner_kind, ledger=ledger, device=device, name=victim.name
    )
    return DefendedOracle(inner, defense)


def _defense(cfg: ExperimentConfig, name: str) -> Defense | None:
    t, p = cfg.defense_spec(name)
    return None if t == "none" else build_defense(t, **p)


def defense_utility(
    victim: Victim,
    cfg: ExperimentConfig,
    name: str,
    x: Tensor,
    y: Tensor | None,
    clean: Tensor,
    device: torch.device,
) -> dict[str, Any]:
    """What a defence costs honest users: the victim's accuracy through it on the evaluation set,
    how often top-1 survives, and the mean L1 change of the answers."""
    d = _defense(cfg, name)
    oracle = make_oracle(victim, cfg, d, Ledger(), device)
    resp = oracle.query(x)
    labels = resp.labels()
    clean_labels = clean.argmax(1)
    out: dict[str, Any] = {"name": name, "repr": repr(d) if d else "NoDefense()"}
    out["victim_accuracy"] = accuracy(labels, y) if y is not None else None
    out["top1_kept"] = accuracy(labels, clean_labels)
    out["mean_l1_change"] = float((resp.probs() - clean).abs().sum(1).mean())
    return out


class Experiment:
    """Runs a config's grid, writing results after every run so that nothing is lost."""

    def __init__(
        self, cfg: ExperimentConfig, out_dir: Path, *, progress: bool | None = None
    ) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = resolve_device(cfg.device)
        self.transfer_set: tuple[Tensor, Tensor] | None = None  # set by run() when configured
        self.judge: EncoderJudge | None = None  # set by run() for encoder victims

    def run(self) -> dict[str, Any]:
        from stealkit.victims.registry import load_victim

        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        vparams = dict(cfg.victim.params)
        if cfg.victim.name == "trained" and cfg.data_dir is not None:
            vparams.setdefault("data_dir", cfg.data_dir)
        victim = load_victim(cfg.victim.name, **vparams)
        ev = load_dataset(
            cfg.eval.dataset, cfg.eval.split, data_dir=cfg.data_dir, **cfg.eval.params
        ).limit(cfg.eval.limit)
        pool_ds = (
            load_dataset(
                cfg.pool.dataset, cfg.pool.split, data_dir=cfg.data_dir, **cfg.pool.params
            ).limit(cfg.pool.limit)
            if cfg.pool is not None
            else None
        )
        pool = QueryPool(pool_ds, victim.spec) if pool_ds is not None else None
        x_eval = to_spec(ev.images(), victim.spec)
        runs = expand_grid(cfg)
        defenses = list(dict.fromkeys(r.defense for r in runs))  # in order of first use
        if cfg.victim.output == "embedding":
            self.judge = self._encoder_judge(victim, x_eval, ev.y)
            clean: Oracle = encoder_oracle(victim, None, Ledger(), self.device)
            victim_pred = self.judge.victim_probe.predictions
            victim_acc: float | None = self.judge.victim_probe.accuracy
            utility = [self.judge.defense_utility(d, _defense(cfg, d)) for d in defenses]
        else:
            clean = make_oracle(victim, cfg, None, Ledger(), self.device)
            clean_probs = (
                LocalOracle(victim.model, victim.spec, output="probabilities", device=self.device)
                .query(x_eval)
                .probs()
            )
            victim_pred = clean_probs.argmax(1)
            victim_acc = accuracy(victim_pred, ev.y) if ev.y is not None else None
            utility = [
                defense_utility(victim, cfg, d, x_eval, ev.y, clean_probs, self.device)
                for d in defenses
            ]
        results: dict[str, Any] = {
            "name": cfg.name,
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "stealkit_version": __version__,
            "victim": {
                "name": victim.name,
                "repr": repr(victim),
                "test_accuracy": victim_acc,
                "eval_set": ev.name,
                "eval_size": len(ev),
                "pool": pool_ds.name if pool_ds is not None else None,
                "pool_size": len(pool_ds) if pool_ds is not None else 0,
                "oracle": repr(clean),
                "output": cfg.victim.output,
            },
            "device": str(self.device),
            "defenses": utility,
            "runs": [],
            "config": cfg.model_dump(mode="json"),
        }
        log.info(
            "victim %s: accuracy %.4f on %s; %d runs",
            victim.name,
            victim_acc or float("nan"),
            ev.name,
            len(runs),
        )
        if cfg.transfer is not None:
            self.transfer_set = self._transfer_set(x_eval, ev.y, victim_pred)
            if cfg.transfer.baseline is not None:
                results["transfer_baseline"] = self._baseline(victim)
        self._save(results)
        bar = _bar(len(runs), self.progress)
        for i, spec in enumerate(runs, 1):
            rec = self._one(spec, victim, pool, x_eval, ev.y, victim_pred, victim_acc)
            results["runs"].append(rec)
            self._save(results)
            m = rec.get("metrics") or {}
            msg = (
                f"[{i}/{len(runs)}] {spec.attack} | {spec.defense} | {spec.budget} q | seed {spec.seed}: "
                + (
                    f"agreement {m['agreement']:.4f}, accuracy {m['accuracy'] or float('nan'):.4f}"
                    if rec["status"] == "ok"
                    else f"FAILED: {rec['error']}"
                )
                + f" ({rec['wall_seconds']:.0f} s)"
            )
            bar.update(msg)
        bar.close()
        results["wall_seconds"] = time.time() - t0
        self._save(results)
        from stealkit.report import write_report

        write_report(results, self.out_dir / "report.html")
        return results

    def _one(
        self,
        spec: RunSpec,
        victim: Victim,
        pool: QueryPool | None,
        x_eval: Tensor,
        y_eval: Tensor | None,
        victim_pred: Tensor,
        victim_acc: float | None,
    ) -> dict[str, Any]:
        cfg = self.cfg
        a_type, a_params = cfg.attack_spec(spec.attack)
        rec: dict[str, Any] = {
            "attack": spec.attack,
            "defense": spec.defense,
            "budget": spec.budget,
            "seed": spec.seed,
            "surrogate": cfg.surrogate.arch,
            "status": "ok",
            "error": None,
        }
        ledger = Ledger(budget=spec.budget, price_per_1k=cfg.price_per_1k)
        t = time.time()
        try:
            defense = _defense(cfg, spec.defense)
            encoder = steals_encoders(a_type)
            oracle = (
                encoder_oracle(victim, defense, ledger, self.device)
                if encoder
                else make_oracle(victim, cfg, defense, ledger, self.device)
            )
            attack = build_attack(a_type, **a_params)
            c, h, w = victim.spec.shape
            with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
                torch.manual_seed(spec.seed)
                surrogate: torch.nn.Module = (
                    surrogate_encoder(cfg.surrogate.arch, victim, oracle.output_dim)
                    if encoder
                    else build_model(
                        cfg.surrogate.arch,
                        in_channels=c,
                        num_classes=oracle.num_classes,
                        image_size=h,
                    )
                )
            rec["attack_repr"], rec["defense_repr"] = (
                repr(attack),
                repr(defense) if defense else "NoDefense()",
            )
            common = {"surrogate": surrogate, "budget": spec.budget, "seed": spec.seed}
            if is_data_free(a_type):
                curve = None
                if cfg.curve_every is not None:
                    at = list(range(cfg.curve_every, spec.budget, cfg.curve_every))
                    curve = ConvergenceCurve(
                        x_eval, y_eval, victim_pred, at=at + [spec.budget], device=self.device
                    )
                result = attack.run(oracle, **common, device=self.device, monitor=curve)
                rec["curve"] = curve.points if curve is not None else None
            else:
                if pool is None:  # the config validator refuses this; kept for library callers
                    raise ValueError(
                        f"attack {spec.attack!r} needs a pool; add 'pool:' to the config"
                    )
                result = attack.run(oracle, pool, **common, device=self.device)
            rec["metrics"] = (
                self.judge.evaluate(result.surrogate)
                if self.judge is not None
                else evaluate_stolen(
                    result.surrogate, x_eval, y_eval, victim_pred, victim_acc, device=self.device
                )
            )
            rec["info"] = result.info
            if self.transfer_set is not None:
                rec["transfer"] = self._transfer(result.surrogate, victim, spec.seed)
        except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
            log.error("run %s failed:\n%s", spec, traceback.format_exc())
            rec["status"], rec["error"] = "failed", f"{type(e).__name__}: {e}"
        rec["ledger"] = ledger.state_dict()
        rec["wall_seconds"] = time.time() - t
        rec["config"] = {
            "victim": cfg.victim.model_dump(),
            "pool": cfg.pool.model_dump() if cfg.pool is not None else None,
            "eval": cfg.eval.model_dump(),
            "surrogate": cfg.surrogate.model_dump(),
            "probe": cfg.probe.model_dump() if cfg.probe is not None else None,
            "attack": {"name": spec.attack, "type": a_type, "params": a_params},
            "defense": {"name": spec.defense, "spec": list(cfg.defense_spec(spec.defense))},
            "budget": spec.budget,
            "seed": spec.seed,
            "price_per_1k": cfg.price_per_1k,
            "device": str(self.device),
        }
        return rec

    def _encoder_judge(self, victim: Victim, x_eval: Tensor, y_eval: Tensor | None) -> EncoderJudge:
        """The linear-probe judge of an encoder experiment: probe training set from ``probe:``,
        evaluation set from ``eval:`` (both need labels)."""
        p = self.cfg.probe
        assert p is not None  # the config validator requires it for encoder victims
        ds = load_dataset(p.dataset, p.split, data_dir=self.cfg.data_dir, **p.params).limit(p.limit)
        if ds.y is None or y_eval is None:
            raise ValueError(
                "linear probes need labels: pick labelled data sets for 'probe:' and 'eval:'"
            )
        return EncoderJudge(
            victim,
            to_spec(ds.images(), victim.spec),
            ds.y,
            x_eval,
            y_eval,
            epochs=p.epochs,
            device=self.device,
        )

    # --- transfer adversarial attacks ------------------------------------------------------------
    def _transfer_set(
        self, x_eval: Tensor, y_eval: Tensor | None, victim_pred: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Evaluation images the victim classifies correctly (all of them, labelled by the
        victim, when the evaluation set has no labels), at most ``transfer.limit``."""
        assert self.cfg.transfer is not None
        if y_eval is None:
            keep = torch.ones(len(x_eval), dtype=torch.bool)
            y = victim_pred
        else:
            keep, y = victim_pred == y_eval, y_eval
        idx = keep.nonzero().flatten()[: self.cfg.transfer.limit]
        return x_eval[idx], y[idx]

    def _transfer(self, source: torch.nn.Module, victim: Victim, seed: int) -> list[dict[str, Any]]:
        """FGSM/BIM/PGD crafted on ``source``, success measured on the victim. The evaluator's
        victim queries go through an oracle of their own, never the thief's ledger."""
        t = self.cfg.transfer
        assert t is not None and self.transfer_set is not None
        x, y = self.transfer_set
        judge = LocalOracle(victim.model, victim.spec, output="label", device=self.device)
        return transfer_table(
            source,
            lambda xa: judge.query(xa).labels(),
            x,
            y,
            num_classes=judge.num_classes,
            methods=t.methods,
            eps=t.eps,
            steps=t.steps,
            step_size=t.step_size if t.step_size is not None else 2.5 * t.eps / t.steps,
            targeted=t.targeted,
            seed=seed,
            device=self.device,
        )

    def _baseline(self, victim: Victim) -> dict[str, Any]:
        """Train the independent baseline (its own labelled data, no victim answers) and attack
        the victim from it, for the transfer comparison."""
        t = self.cfg.transfer
        assert t is not None and t.baseline is not None
        b = t.baseline
        ds = load_dataset(b.dataset, b.split, data_dir=self.cfg.data_dir, **b.params).limit(b.limit)
        if ds.y is None:
            raise ValueError(f"transfer.baseline.dataset {b.dataset!r} has no labels to train on")
        c, h, _ = victim.spec.shape
        judge = LocalOracle(victim.model, victim.spec, output="label", device=self.device)
        k = judge.num_classes
        if int(ds.y.max()) >= k:
            raise ValueError(
                f"transfer.baseline.dataset {b.dataset!r} has labels up to {int(ds.y.max())}, "
                f"but the victim has {k} classes; pick a data set with the victim's classes"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(b.arch, in_channels=c, num_classes=k, image_size=h)
        t0 = time.time()
        fit(
            model,
            to_spec(ds.images(), victim.spec),
            ds.y,
            loss_fn=torch.nn.functional.cross_entropy,
            epochs=b.epochs,
            seed=0,
            device=self.device,
        )
        x_eval, y_eval = self.transfer_set if self.transfer_set is not None else (None, None)
        assert x_eval is not None and y_eval is not None
        from stealkit.train.loop import predict

        acc = accuracy(predict(model, x_eval, device=self.device).argmax(1), y_eval)
        return {
            "dataset": ds.name,
            "size": len(ds),
            "arch": b.arch,
            "epochs": b.epochs,
            "accuracy_on_transfer_set": acc,
            "train_seconds": time.time() - t0,
            "transfer": self._transfer(model, victim, 0),
        }

    def _save(self, results: dict[str, Any]) -> None:
        path = self.out_dir / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, default=_json_default))
        tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


class _bar:
    """A tqdm bar on a TTY, plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._tqdm = None
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, unit="run", file=sys.stderr)

    def update(self, msg: str) -> None:
        if self._tqdm is not None:
            self._tqdm.write(msg)
            self._tqdm.update(1)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
