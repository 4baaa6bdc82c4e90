"""``stealkit serve`` under load, faults, fuzzing and a real attack, against the real MNIST CNN.

    python -m benchmarks.serve_load load        # 16 clients x 500 requests of 8: SQLite, PG, 4 PG workers
    python -m benchmarks.serve_load faults      # kill -9 the server 5 times under that load
    python -m benchmarks.serve_load fuzz        # schemathesis over the OpenAPI schema
    python -m benchmarks.serve_load throughput  # HttpOracle vs LocalOracle at batch 64
    python -m benchmarks.serve_load e2e         # Knockoff over HTTP vs in-process; kill, resume
    python -m benchmarks.serve_load docs        # docs/results/serve.md from the parts' JSON

Each part writes docs/results/serve/<part>.json; ``docs`` composes docs/results/serve.md. Servers
are real ``stealkit serve`` processes on loopback ports; PostgreSQL is a throw-away cluster from
scripts/postgres.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from benchmarks.common import RESULTS, ROOT, machine
from stealkit.oracle.wire import encode_npy

OUT = RESULTS / "serve"


def save(part: str, data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data["machine"] = machine()
    data["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (OUT / f"{part}.json").write_text(json.dumps(data, indent=2))
    print(json.dumps({k: v for k, v in data.items() if k != "machine"}, indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres() -> Iterator[str]:
    where = Path(tempfile.mkdtemp()) / "cluster"
    r = subprocess.run(
        ["bash", str(ROOT / "scripts/postgres.sh"), "start", str(where)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"no PostgreSQL: {r.stderr.strip()}")
    try:
        yield r.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "stop", str(where)])


def stealkit(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "stealkit", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def make_key(db: str, *flags: str) -> str:
    return stealkit("keys", "--db", db, "create", *flags)


def usage(db: str, token: str) -> dict[str, Any]:
    return dict(json.loads(stealkit("keys", "--db", db, "usage", token.split("_")[1])))


class Server:
    """A ``stealkit serve`` process group on a free port."""

    def __init__(
        self,
        db: str,
        *,
        workers: int = 1,
        defenses: tuple[str, ...] = (),
        threads: int = 1,
        victim: tuple[str, ...] = (),
    ) -> None:
        self.db, self.workers, self.defenses, self.threads = db, workers, defenses, threads
        self.victim = victim
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp()) / "serve.log"

    def start(self, timeout: float = 120) -> float:
        t = time.monotonic()
        cmd = [sys.executable, "-m", "stealkit", "serve", "--db", self.db, "--port", str(self.port)]
        cmd += ["--workers", str(self.workers), *self.victim]
        for d in self.defenses:
            cmd += ["--defense", d]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, env=env, start_new_session=True
            )
        while time.monotonic() - t < timeout:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - t
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"the server died: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise SystemExit("the server did not come up")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def images(n: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g).numpy()


class Client(threading.Thread):
    """Sends ``requests`` batches of ``batch`` with an Idempotency-Key each, retrying a batch
    with the same key after connection errors and 5xx (a killed server), as HttpOracle does;
    counts the inputs answered (200) once per logical request."""

    def __init__(self, url: str, token: str, requests: int, batch: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.requests, self.batch = url, token, requests, batch
        self.x = images(batch * 4, seed)
        self.answered = 0
        self.statuses: dict[int, int] = {}
        self.retries = 0
        self.replayed = 0
        self.gave_up = 0

    def run(self) -> None:
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        ) as http:
            for i in range(self.requests):
                rows = self.x[(i % 4) * self.batch : (i % 4 + 1) * self.batch]
                body = json.dumps({"npy": encode_npy(rows), "encoding": "npy"}).encode()
                key = uuid.uuid4().hex
                deadline = time.monotonic() + 180
                while True:
                    try:
                        r = http.post(
                            "/v1/query",
                            content=body,
                            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
                        )
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code < 500 and r.status_code != 429:
                        break
                    if r is not None and r.status_code == 429:
                        time.sleep(float(r.json().get("retry_after") or 0.05))
                        continue
                    if r is not None:
                        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    if time.monotonic() > deadline:
                        self.gave_up += 1
                        r = None
                        break
                    self.retries += 1
                    time.sleep(0.2)
                if r is None:
                    continue
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    self.answered += self.batch
                    if r.headers.get("Idempotent-Replayed") == "true":
                        self.replayed += 1


def hammer(url: str, token: str, clients: int, requests: int, batch: int) -> dict[str, Any]:
    cs = [Client(url, token, requests, batch, seed=i) for i in range(clients)]
    t = time.monotonic()
    for c in cs:
        c.start()
    for c in cs:
        c.join()
    wall = time.monotonic() - t
    statuses: dict[str, int] = {}
    for c in cs:
        for s, n in c.statuses.items():
            statuses[str(s)] = statuses.get(str(s), 0) + n
    return {
        "clients": clients,
        "requests_each": requests,
        "batch": batch,
        "wall_seconds": wall,
        "requests_per_second": clients * requests / wall,
        "answered_by_clients": sum(c.answered for c in cs),
        "statuses": statuses,
        "retries": sum(c.retries for c in cs),
        "replayed": sum(c.replayed for c in cs),
        "gave_up": sum(c.gave_up for c in cs),
    }


def ledger_counts(db: str, token: str) -> dict[str, int]:
    from stealkit.serve.ledger import SqlLedger

    ledger = SqlLedger(db)
    key_id = token.split("_")[1]
    row = ledger.get(key_id)
    logged, requests = ledger.billed(key_id)
    ledger.close()
    return {"charged": row.spent, "logged_in_requests": logged, "requests": requests}


def rate_check(url: str, db: str, rate: float, seconds: float) -> dict[str, Any]:
    """Eight clients on one rate-limited key for ``seconds``: what the ledger let through
    against what the token bucket allows (burst + rate x elapsed)."""
    token = make_key(db, "--rate", str(rate), "--burst", str(rate))
    stop = time.monotonic() + seconds
    answered = [0] * 8
    limited = [0] * 8

    def go(i: int) -> None:
        body = json.dumps({"npy": encode_npy(images(8, 100 + i)), "encoding": "npy"}).encode()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            while time.monotonic() < stop:
                r = http.post(
                    "/v1/query", content=body, headers={"Content-Type": "application/json"}
                )
                if r.status_code == 200:
                    answered[i] += 8
                elif r.status_code == 429:
                    limited[i] += 1
                    time.sleep(min(float(r.json().get("retry_after") or 0.01), 0.05))

    t = time.monotonic()
    ts = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    wall = time.monotonic() - t
    allowed = rate + rate * wall
    return {
        "rate": rate,
        "seconds": wall,
        "answered": sum(answered),
        "allowed_by_bucket": allowed,
        "answered_per_second": sum(answered) / wall,
        "refused_429": sum(limited),
        "held": sum(answered) <= allowed,
        "ledger": ledger_counts(db, token),
    }


def part_load(args: argparse.Namespace) -> None:
    results = []
    for label, workers in (("sqlite", 1), ("postgresql", 1), ("postgresql x4 processes", 4)):
        with contextmanager_for(label) as db:
            budget = args.budget
            token = make_key(db, "--budget", str(budget), "--price-per-1k", "1")
            server = Server(db, workers=workers)
            server.start()
            try:
                run = hammer(server.url, token, args.clients, args.requests, args.batch)
                run["rate_limit"] = rate_check(server.url, db, 400.0, 8.0)
            finally:
                server.stop()
            run.update(label=label, workers=workers, budget=budget, ledger=ledger_counts(db, token))
            run["over_spend"] = max(run["ledger"]["charged"] - budget, 0)
            run["agree"] = (
                run["answered_by_clients"]
                == run["ledger"]["charged"]
                == run["ledger"]["logged_in_requests"]
            )
            run["server_errors"] = sum(n for s, n in run["statuses"].items() if s.startswith("5"))
            results.append(run)
            print(json.dumps(run, indent=2))
    save("load", {"runs": results})


@contextmanager
def contextmanager_for(label: str) -> Iterator[str]:
    if label.startswith("postgres"):
        with postgres() as url:
            yield url
    else:
        d = tempfile.mkdtemp()
        yield f"sqlite:///{d}/ledger.sqlite"


def part_faults(args: argparse.Namespace) -> None:
    results = []
    for label in args.dbs:
        with contextmanager_for(label) as db:
            budget = args.clients * args.requests * args.batch * 3 // 4
            token = make_key(db, "--budget", str(budget))
            server = Server(db)
            server.start()
            cs = [
                Client(server.url, token, args.requests, args.batch, seed=i)
                for i in range(args.clients)
            ]
            t = time.monotonic()
            for c in cs:
                c.start()
            restarts = []
            for _ in range(args.kills):
                time.sleep(args.every)
                server.kill9()
                restarts.append(server.start())
            for c in cs:
                c.join()
            wall = time.monotonic() - t
            counts = ledger_counts(db, token)
            server.stop()
            answered = sum(c.answered for c in cs)
            run = {
                "label": label,
                "kills": args.kills,
                "restart_seconds": restarts,
                "wall_seconds": wall,
                "budget": budget,
                "answered_by_clients": answered,
                "ledger": counts,
                "unbilled_answers": max(answered - counts["charged"], 0),
                "billed_unanswered": max(counts["charged"] - answered, 0),
                "over_spend": max(counts["charged"] - budget, 0),
                "retries": sum(c.retries for c in cs),
                "replayed": sum(c.replayed for c in cs),
                "gave_up": sum(c.gave_up for c in cs),
                "statuses": {
                    s: sum(c.statuses.get(int(s), 0) for c in cs)
                    for s in sorted({str(k) for c in cs for k in c.statuses})
                },
            }
            results.append(run)
            print(json.dumps(run, indent=2))
    save(
        "faults",
        {
            "clients": args.clients,
            "requests_each": args.requests,
            "batch": args.batch,
            "runs": results,
        },
    )


FUZZ_VICTIMS = {
    # the real MNIST CNN behind reverse sigmoid: valid 1x28x28 batches are rarely generated
    "digit-recognizer + reverse sigmoid": ((), ("reverse-sigmoid",)),
    # a parameter-free 1x4x4 victim (16 classes), so generated batches are often valid and the
    # answering path (defence, charge, answer) is fuzzed too
    "1x4x4 flatten + top-2": (
        (
            "--victim",
            "python",
            "--victim-params",
            '{target: "torch.nn:Flatten", spec: {channels: 1, height: 4, width: 4}}',
        ),
        ("top2",),
    ),
}


def part_fuzz(args: argparse.Namespace) -> None:
    checks = (
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance,negative_data_rejection"
    )
    runs = []
    for label, (victim, defenses) in FUZZ_VICTIMS.items():
        d = tempfile.mkdtemp()
        db = f"sqlite:///{d}/ledger.sqlite"
        token = make_key(db)
        server = Server(db, defenses=defenses, victim=victim)
        server.start()
        try:
            st = subprocess.run(
                [
                    "st",
                    "run",
                    server.url + "/openapi.json",
                    "-H",
                    f"Authorization: Bearer {token}",
                    "--checks",
                    checks,
                    "-n",
                    str(args.examples),
                    "--seed",
                    str(args.seed),
                    "--no-color",
                ],
                capture_output=True,
                text=True,
            )
            alive = httpx.get(server.url + "/healthz").status_code == 200
        finally:
            server.stop()
        out = st.stdout.strip().splitlines()
        cases = next(
            (out[i + 1].strip() for i, ln in enumerate(out[:-1]) if ln.strip() == "Test cases:"), ""
        )
        failures = [ln.strip() for ln in out if "Failures:" in ln or ln.strip().startswith("❌ ST")]
        runs.append(
            {
                "victim": label,
                "exit_code": st.returncode,
                "test_cases": cases,
                "failures": failures,
                "server_alive_after": alive,
                "answered_by_server": usage(db, token),
                "output_tail": out[-22:],
            }
        )
        print(json.dumps(runs[-1], indent=2))
    save(
        "fuzz",
        {
            "schemathesis": subprocess.run(
                ["st", "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "checks": checks.split(","),
            "max_examples": args.examples,
            "seed": args.seed,
            "runs": runs,
        },
    )


def q(v: list[float], p: float) -> float:
    return sorted(v)[min(int(p * len(v)), len(v) - 1)]


def part_throughput(args: argparse.Namespace) -> None:
    from stealkit.data import load_dataset, to_spec
    from stealkit.oracle import Ledger, LocalOracle
    from stealkit.oracle.http import HttpOracle
    from stealkit.victims.registry import load_victim

    victim = load_victim("digit-recognizer")
    n = args.batches * args.batch
    x = to_spec(load_dataset("fashion-mnist", "test").images(slice(0, n)), victim.spec)
    out = []
    for threads in args.threads:  # the local victim and the server's get the same torch threads
        torch.set_num_threads(threads)
        d = tempfile.mkdtemp()
        db = f"sqlite:///{d}/ledger.sqlite"
        token = make_key(db)
        server = Server(db, threads=threads)
        server.start()
        try:
            for call in (args.batch, args.call):  # one request per call; calls of several
                local = LocalOracle(
                    victim.model, victim.spec, ledger=Ledger(), max_batch=args.batch
                )
                remote = HttpOracle(server.url, api_key=token, cache=None, batch=args.batch)
                calls = [x[i : i + call] for i in range(0, n, call)]
                for b in calls[:2]:  # warm both
                    local.query(b)
                    remote.query(b)
                remote.latencies.clear()
                local_lat, remote_lat = [], []
                for _ in range(args.rounds):  # alternate, so drift hits both alike
                    for b in calls:
                        t = time.perf_counter()
                        local.query(b)
                        local_lat.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        remote.query(b)
                        remote_lat.append(time.perf_counter() - t)
                diff = float(
                    (remote.query(calls[0]).values - local.query(calls[0]).values).abs().max()
                )
                lt, rt = sum(local_lat), sum(remote_lat)
                req = remote.latencies
                out.append(
                    {
                        "torch_threads": threads,
                        "request_batch": args.batch,
                        "inputs_per_call": call,
                        "requests_in_flight": 1 if call == args.batch else remote.concurrency,
                        "calls": len(remote_lat),
                        "local_inputs_per_second": len(local_lat) * call / lt,
                        "http_inputs_per_second": len(remote_lat) * call / rt,
                        "ratio": (len(remote_lat) * call / rt) / (len(local_lat) * call / lt),
                        "local_call_p50_ms": 1000 * statistics.median(local_lat),
                        "local_call_p99_ms": 1000 * q(local_lat, 0.99),
                        "http_call_p50_ms": 1000 * statistics.median(remote_lat),
                        "http_call_p99_ms": 1000 * q(remote_lat, 0.99),
                        "http_request_p50_ms": 1000 * statistics.median(req),
                        "http_request_p99_ms": 1000 * q(req, 0.99),
                        "max_abs_difference": diff,
                    }
                )
                remote.close()
        finally:
            server.stop()
    save("throughput", {"runs": out})


def part_e2e(args: argparse.Namespace) -> None:
    import yaml

    d = Path(tempfile.mkdtemp())
    db = f"sqlite:///{d}/ledger.sqlite"
    budget = 5000
    thief = make_key(db, "--budget", str(budget), "--price-per-1k", "1", "--name", "thief")
    judge = make_key(db, "--trusted", "--name", "judge")
    server = Server(db, defenses=("reverse-sigmoid",))
    server.start()
    env = {**os.environ, "STEALKIT_API_KEY": thief, "STEALKIT_JUDGE_KEY": judge}
    remote_cfg = yaml.safe_load((ROOT / "configs/remote.yaml").read_text())
    remote_cfg["victim"]["params"]["url"] = server.url
    remote_cfg["victim"]["params"]["cache"] = str(d / "answers.sqlite")
    (d / "remote.yaml").write_text(yaml.safe_dump(remote_cfg))
    run = [sys.executable, "-m", "stealkit", "run", "--no-progress", "--out", str(d / "runs")]
    try:
        # 1. killed mid-way (kill -9 once the server has answered some of its queries)
        first = subprocess.Popen(run + [str(d / "remote.yaml")], env=env, stderr=subprocess.PIPE)
        bought_before_kill = 0
        while first.poll() is None:
            bought_before_kill = usage(db, thief)["inputs_answered"]
            if bought_before_kill >= args.kill_at:
                first.kill()
                break
            time.sleep(0.2)
        first.wait()
        bought_before_kill = usage(db, thief)["inputs_answered"]
        # 2. the same command again: only the rest is bought
        t = time.monotonic()
        second = subprocess.run(
            run + [str(d / "remote.yaml")], env=env, capture_output=True, text=True
        )
        remote_seconds = time.monotonic() - t
        after = usage(db, thief)
        judge_usage = usage(db, judge)
    finally:
        server.stop()
    t = time.monotonic()
    local = subprocess.run(
        run + [str(ROOT / "configs/remote-local.yaml")], capture_output=True, text=True
    )
    local_seconds = time.monotonic() - t
    rr = json.loads((d / "runs/remote/results.json").read_text())["runs"][0]
    lr = json.loads((d / "runs/remote-local/results.json").read_text())["runs"][0]
    save(
        "e2e",
        {
            "budget": budget,
            "killed_after_inputs_bought": bought_before_kill,
            "rerun_exit": second.returncode,
            "rerun_stderr_tail": second.stderr.strip().splitlines()[-3:],
            "rerun_bought_from_server": rr["oracle"].get("bought"),
            "rerun_cache_hits": rr["oracle"].get("cache_hits"),
            "rerun_replayed": rr["oracle"].get("replayed"),
            "server_charged_thief_total": after["inputs_answered"],
            "thief_money": after["money_spent"],
            "judge_inputs_answered": judge_usage["inputs_answered"],
            "remote": {"metrics": rr["metrics"], "seconds": remote_seconds, "status": rr["status"]},
            "local": {
                "metrics": lr["metrics"],
                "seconds": local_seconds,
                "status": lr["status"],
                "exit": local.returncode,
            },
            "agreement_gap": abs(rr["metrics"]["agreement"] - lr["metrics"]["agreement"]),
        },
    )


def part_docs(_: argparse.Namespace) -> None:
    from benchmarks.serve_docs import write

    print(write(OUT, RESULTS / "serve.md"))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="part", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--clients", type=int, default=16)
    lo.add_argument("--requests", type=int, default=500)
    lo.add_argument("--batch", type=int, default=8)
    lo.add_argument("--budget", type=int, default=40_000)
    lo.set_defaults(func=part_load)
    fa = sub.add_parser("faults")
    fa.add_argument("--clients", type=int, default=16)
    fa.add_argument("--requests", type=int, default=150)
    fa.add_argument("--batch", type=int, default=8)
    fa.add_argument("--kills", type=int, default=5)
    fa.add_argument("--every", type=float, default=4.0, help="seconds between kills")
    fa.add_argument("--dbs", nargs="+", default=["sqlite", "postgresql"])
    fa.set_defaults(func=part_faults)
    fz = sub.add_parser("fuzz")
    fz.add_argument("--examples", type=int, default=400, help="schemathesis -n per operation")
    fz.add_argument("--seed", type=int, default=1)
    fz.set_defaults(func=part_fuzz)
    th = sub.add_parser("throughput")
    th.add_argument("--batch", type=int, default=64)
    th.add_argument("--batches", type=int, default=48)
    th.add_argument("--call", type=int, default=1024, help="inputs per query() call, pipelined")
    th.add_argument("--rounds", type=int, default=5)
    th.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    th.set_defaults(func=part_throughput)
    e2 = sub.add_parser("e2e")
    e2.add_argument("--kill-at", type=int, default=1500, help="kill the run after this many bought")
    e2.set_defaults(func=part_e2e)
    do = sub.add_parser("docs")
    do.set_defaults(func=part_docs)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
