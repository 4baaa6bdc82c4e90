"""A victim served over HTTP (``stealkit serve``), usable in any config as

    victim: {name: http, params: {url: http://127.0.0.1:8000, api_key_env: STEALKIT_API_KEY,
                                  judge_key_env: STEALKIT_JUDGE_KEY}}

The thief's oracle is an ``HttpOracle`` on the thief's key; judges (evaluation, what a defence
costs honest users) get one on the judge's key, so evaluation is never billed to the thief. The
judge's key should be the owner's trusted key (``stealkit keys create --trusted``), whose answers
bypass the server's defences: agreement is then measured against the real victim, as in-process.
Keys are read from environment variables, never from the config, so results never hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stealkit.defenses.perturbation import DefendedOracle, Defense, NoDefense
from stealkit.errors import ConfigError, StealkitError
from stealkit.oracle.base import Oracle
from stealkit.oracle.http import HttpOracle, ReducedOracle, default_cache
from stealkit.oracle.ledger import Ledger
from stealkit.oracle.probs import can_reduce
from stealkit.oracle.response import OutputKind
from stealkit.victims.base import Victim


class _Remote(nn.Module):
    """Stands where a local victim's model would: a served victim has none to hand out."""

    def forward(self, x: Tensor) -> Tensor:
        raise StealkitError("a served victim has no local model; reach it through its oracles")


def _key(env: str, what: str) -> str:
    token = os.environ.get(env)
    if not token:
        raise ConfigError(
            f"victim.params.{what}: the environment variable {env} is not set; export the API "
            f"key there (`stealkit keys create` makes one)"
        )
    return token


class HttpVictim(Victim):
    """A served victim: its oracles are HTTP oracles on the thief's and the judge's keys."""

    def __init__(
        self,
        *,
        url: str,
        thief_key: str,
        judge_key: str | None,
        cache: Path | None,
        batch: int,
        timeout: float,
    ) -> None:
        self.url, self._thief_key, self._judge_key = url, thief_key, judge_key
        self._cache, self._batch, self._timeout = cache, batch, timeout
        probe = self._http(thief_key, Ledger(), "thief")
        info = probe.info
        probe.close()
        super().__init__(
            name=f"http:{info['victim']}",
            model=_Remote(),
            spec=probe.input_spec,
            kind=info["kind"],
            classes=info.get("classes"),
            meta={
                "url": url,
                "served_victim": info["victim"],
                "served_output": info["output"],
                "served_defenses": info["defenses"],
                "price_per_1k": info["price_per_1k"],
            },
        )
        self.served = OutputKind(info["output"])
        self.output_dim = int(probe.output_dim)

    def _http(self, key: str, ledger: Ledger, client: str) -> HttpOracle:
        return HttpOracle(
            self.url,
            api_key=key,
            ledger=ledger,
            cache=self._cache,
            batch=self._batch,
            timeout=self._timeout,
            client=client,
        )

    def _key_for(self, client: str) -> str:
        if client == "thief":
            return self._thief_key
        if self._judge_key is None:
            raise ConfigError(
                "victim.params.judge_key_env: judging a served victim needs a key of its own (the "
                "owner's trusted key), so evaluation is never billed to the thief's key"
            )
        return self._judge_key

    def oracle(
        self,
        *,
        output: OutputKind | str,
        ledger: Ledger,
        k: int = 1,
        defense: Defense | None = None,
        device: torch.device | str = "cpu",
        client: str = "thief",
    ) -> Oracle:
        out = OutputKind(output)
        if defense is not None and isinstance(defense, NoDefense):
            defense = None
        want = defense.needs if defense is not None and defense.needs is not None else out
        if not can_reduce(self.served, want):
            raise ConfigError(
                f"victim.output: the served victim answers {self.served.value}, which cannot "
                f"become {want.value}"
            )
        oracle: Oracle = self._http(self._key_for(client), ledger, client)
        if want is not self.served and not (defense is not None and defense.accepts(self.served)):
            oracle = ReducedOracle(oracle, want, k)
        return DefendedOracle(oracle, defense) if defense is not None else oracle

    def evaluator(self, *, output: OutputKind | str, device: torch.device | str = "cpu") -> Oracle:
        out = OutputKind(output)
        oracle: Oracle = self._http(self._key_for("judge"), Ledger(), "judge")
        if out is not self.served and can_reduce(self.served, out):
            oracle = ReducedOracle(oracle, out)
        return oracle  # else judges read labels (or one-hot probabilities) from what it gives

    def __repr__(self) -> str:
        return f"HttpVictim(url={self.url!r}, kind={self.kind}, served={self.served.value})"


def load_http(
    *,
    url: str,
    api_key_env: str = "STEALKIT_API_KEY",
    judge_key_env: str | None = None,
    cache: str | None = str(default_cache()),
    batch: int = 64,
    timeout: float = 30.0,
) -> Victim:
    """The victim served at ``url``; keys come from the named environment variables. ``cache``
    (an SQLite file, or None) keeps every answer bought, so a run that is repeated or resumed
    buys nothing twice."""
    return HttpVictim(
        url=url,
        thief_key=_key(api_key_env, "api_key_env"),
        judge_key=_key(judge_key_env, "judge_key_env") if judge_key_env else None,
        cache=Path(cache).expanduser() if cache else None,
        batch=batch,
        timeout=timeout,
    )


def describe_http(**params: Any) -> Any:
    from stealkit.victims.registry import VictimInfo

    if not params.get("judge_key_env"):
        raise ConfigError(
            "victim.params.judge_key_env: an experiment judges the stolen model against the served "
            "victim on a key of its own, never the thief's; name the environment variable holding "
            "it (best a trusted key: `stealkit keys create --trusted`)"
        )
    v = load_http(**params)
    assert isinstance(v, HttpVictim)
    outputs = frozenset(k for k in OutputKind if can_reduce(v.served, k))
    return VictimInfo(v.kind, v.spec, v.output_dim, outputs=outputs)
