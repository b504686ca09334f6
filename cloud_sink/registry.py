"""The model registry: MLflow registered models ``sleepsafe-temporal`` and ``sleepsafe-eye-state``,
with aliases, not stages: ``@champion`` is what the fleet runs, ``@challenger`` a version that
passed the gate against it.  The shipped ONNX files are registered as the first champions.

Every version's files are artifacts of the MLflow run that made them, with the sha256 of the
ONNX file as a version tag: a file fetched back from the artifact store is checked against it
before anything loads it.  Alias moves are written to the sink's ``model_audit`` table (who,
when, from which version), since MLflow keeps no history of aliases.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import insert, select

from .config import SinkConfig
from .schema import model_audit
from .store import Store, now_utc

log = structlog.get_logger(__name__)

MODELS = {"temporal": "sleepsafe-temporal", "eye-state": "sleepsafe-eye-state"}
KIND_OF = {v: k for k, v in MODELS.items()}
ALIASES = ("champion", "challenger")
REF_RE = re.compile(r"^(?P<name>[a-z0-9-]+)(?:@(?P<alias>[a-z]+)|/(?P<version>[0-9]+))$")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED_FILES = {"temporal": "temporal.onnx", "eye-state": "eye_state.onnx"}


class UnknownModel(LookupError):
    """No such registered model, alias or version."""


class RegistryUnavailable(RuntimeError):
    """MLflow cannot be reached or refused the request (one line, naming the URI)."""


@dataclass(frozen=True, slots=True)
class Version:
    model: str  # the registered name
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    sha256: str | None
    file: str | None  # the ONNX file's name among the run's artifacts under model/


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mask_secrets(text: str) -> str:
    """``scheme://user:password@host`` with the credentials starred: MLflow's messages quote the
    URI they failed on, and they go to logs and HTTP answers."""
    return re.sub(r"//[^/@\s]*@", "//***@", text)


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` (NAME: sleepsafe-temporal, or just temporal)."""
    m = REF_RE.match(ref.strip())
    if not m:
        raise ValueError(f"model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION")
    name = m["name"]
    name = MODELS.get(name, name)
    if name not in KIND_OF:
        raise UnknownModel(f"unknown model {m['name']!r} (known: {', '.join(MODELS.values())})")
    return name, m["alias"], m["version"]


class Registry:
    def __init__(self, cfg: SinkConfig) -> None:
        # An MLflow server that is down must fail a request in seconds, not after MLflow's
        # default seven retries with backoff (minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(cfg.mlflow.timeout_s)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.uri = cfg.mlflow_uri()
        self.local = cfg.mlflow.tracking_uri is None
        self.root = cfg.state_dir / "mlflow"
        if self.local:
            self.root.mkdir(parents=True, exist_ok=True)
        self.cache = cfg.state_dir / "model-cache"
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._experiment: str | None = None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` with MLflow's errors sorted the same way for its local stores and a remote
        server (RestException): no such thing → UnknownModel (a missing alias is
        INVALID_PARAMETER_VALUE "... not found" on both), another refused request → ValueError,
        anything else → RegistryUnavailable, each one line with credentials masked."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            raise self._classify(what, err) from None
        except OSError as err:
            raise RegistryUnavailable(mask_secrets(f"MLflow at {self.safe_uri}: {what}: {err}")) from None

    def _classify(self, what: str, err: Any) -> Exception:
        message = mask_secrets(str(err.message or "").strip())
        first = (message.splitlines()[0] if message else type(err).__name__)[:300]
        low = message.lower()
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (
            err.error_code == "INVALID_PARAMETER_VALUE" and ("not found" in low or "does not exist" in low)
        ):
            return UnknownModel(f"{what}: {first}")
        if err.error_code == "INVALID_PARAMETER_VALUE":  # what was asked is wrong, not MLflow
            return ValueError(f"{what}: {first}")
        return RegistryUnavailable(f"MLflow at {self.safe_uri}: {what}: {first}")

    @property
    def safe_uri(self) -> str:
        return mask_secrets(self.uri)

    # ------------------------------------------------------------------ runs
    def experiment_id(self) -> str:
        if self._experiment is None:
            name = self.cfg.mlflow.experiment
            exp = self._call("get experiment", self.client.get_experiment_by_name, name)
            if exp is not None:
                self._experiment = str(exp.experiment_id)
            else:
                location = (self.root / "artifacts").as_uri() if self.local else None
                self._experiment = str(
                    self._call("create experiment", self.client.create_experiment, name, location)
                )
        return self._experiment

    def start_run(self, name: str, tags: dict[str, str]) -> str:
        run = self._call("create run", self.client.create_run, self.experiment_id(), tags=tags, run_name=name)
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if not isinstance(v, str) else v[:6000]) for k, v in params.items()]
        self._call("log params", self.client.log_batch, run_id, params=items)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if items:
            self._call("log metrics", self.client.log_batch, run_id, metrics=items)

    def log_dict(self, run_id: str, obj: Any, name: str) -> None:
        self._call("log artifact", self.client.log_dict, run_id, obj, name)

    def log_files(self, run_id: str, files: list[Path], artifact_path: str) -> None:
        for f in files:
            self._call("log artifact", self.client.log_artifact, run_id, str(f), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("end run", self.client.set_terminated, run_id, status)

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        found = self._call(
            "search runs",
            self.client.search_runs,
            [self.experiment_id()],
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
        return [
            {
                "run_id": r.info.run_id,
                "name": r.info.run_name,
                "status": r.info.status,
                "start_time": r.info.start_time,
                "end_time": r.info.end_time,
                "params": dict(r.data.params),
                "metrics": dict(r.data.metrics),
                "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
            }
            for r in found
        ]

    # ------------------------------------------------------------------ versions
    def register(self, kind: str, run_id: str, onnx_file: Path, tags: dict[str, str]) -> Version:
        """A new version of ``kind`` from the run's ``model/`` artifacts (already logged)."""
        name = MODELS[kind]
        try:
            self._call(f"model {name}", self.client.get_registered_model, name)
        except UnknownModel:
            self._call("create registered model", self.client.create_registered_model, name)
        run = self._call("get run", self.client.get_run, run_id)
        mv = self._call(
            "create model version",
            self.client.create_model_version,
            name,
            f"{run.info.artifact_uri}/model",
            run_id=run_id,
            tags={"sha256": sha256_file(onnx_file), "file": onnx_file.name, **tags},
        )
        return self._version(mv)

    def _version(self, mv: Any) -> Version:
        return Version(
            model=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            aliases=tuple(getattr(mv, "aliases", ()) or ()),
            sha256=mv.tags.get("sha256"),
            file=mv.tags.get("file"),
        )

    def resolve(self, ref: str) -> Version:
        name, alias, version = parse_ref(ref)
        if alias is not None:
            if alias not in ALIASES:
                raise UnknownModel(f"unknown alias @{alias} (known: {', '.join('@' + a for a in ALIASES)})")
            mv = self._call(f"{name}@{alias}", self.client.get_model_version_by_alias, name, alias)
        else:
            mv = self._call(f"{name}/{version}", self.client.get_model_version, name, version)
        return self._version(mv)

    def alias_version(self, kind: str, alias: str) -> Version | None:
        try:
            return self.resolve(f"{MODELS[kind]}@{alias}")
        except UnknownModel:
            return None

    def model_file(self, v: Version) -> Path:
        """The version's ONNX file on local disk (fetched once, then cached), checked against the
        sha256 it was registered with; RegistryUnavailable when it does not match."""
        if v.file is None or v.sha256 is None or v.run_id is None:
            raise RegistryUnavailable(f"{v.model}/{v.version}: registered without a file and its sha256")
        dest = self.cache / v.model / v.version
        path = dest / v.file
        if not (path.is_file() and sha256_file(path) == v.sha256):
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=dest) as tmp:
                from mlflow.artifacts import download_artifacts

                got = Path(
                    self._call(
                        f"download {v.model}/{v.version}",
                        download_artifacts,
                        run_id=v.run_id,
                        artifact_path=f"model/{v.file}",
                        dst_path=tmp,
                        tracking_uri=self.uri,
                    )
                )
                digest = sha256_file(got)
                if digest != v.sha256:
                    raise RegistryUnavailable(
                        f"{v.model}/{v.version}: {v.file} has sha256 {digest[:12]}…, registered "
                        f"{v.sha256[:12]}…; not used"
                    )
                shutil.move(str(got), path)
                card = got.with_suffix(".json")
                if card.is_file():
                    shutil.move(str(card), path.with_suffix(".json"))
        return path

    def ensure_shipped(self, shipped_dir: Path = SHIPPED_DIR, store: Store | None = None) -> list[Version]:
        """Register the ONNX files that ship with the project as the first champions (once: a
        model that already has a version is left as it is, and an MLflow that cannot answer
        stops here rather than passing for an empty registry).  ``@champion`` is set only
        where no version holds it, and the move is audited when a store is given."""
        made = []
        for kind, file in SHIPPED_FILES.items():
            name = MODELS[kind]
            try:
                existing = self._call(
                    f"versions of {name}", self.client.search_model_versions, f"name='{name}'", max_results=1
                )
            except UnknownModel:
                existing = []
            if existing:
                continue
            onnx_file = shipped_dir / file
            card_file = onnx_file.with_suffix(".json")
            card = json.loads(card_file.read_text()) if card_file.is_file() else {}
            run_id = self.start_run(
                f"shipped {kind} {card.get('version', '?')}",
                {"sleepsafe.source": "shipped", "sleepsafe.model": kind},
            )
            self.log_params(run_id, {"source": "shipped", "version": card.get("version", "unknown")})
            self.log_files(run_id, [p for p in (onnx_file, card_file) if p.is_file()], "model")
            self.end_run(run_id)
            v = self.register(
                kind, run_id, onnx_file, {"source": "shipped", "onnx_version": str(card.get("version"))}
            )
            if self.alias_version(kind, "champion") is None:
                self._call("set alias", self.client.set_registered_model_alias, name, "champion", v.version)
                if store is not None:
                    self._audit(store, name, "champion", "set", v.version, None, "sink", "the shipped model")
                log.info("registry_shipped_champion", model=name, version=v.version)
            made.append(v)
        return made

    def set_alias(self, store: Store, ref: str, alias: str, by: str, reason: str) -> dict[str, Any]:
        """Point ``alias`` at the version ``ref`` names; audited."""
        if alias not in ALIASES:
            raise UnknownModel(f"unknown alias @{alias} (known: {', '.join('@' + a for a in ALIASES)})")
        v = self.resolve(ref)
        before = self.alias_version(KIND_OF[v.model], alias)
        self._call("set alias", self.client.set_registered_model_alias, v.model, alias, v.version)
        self._audit(store, v.model, alias, "set", v.version, before.version if before else None, by, reason)
        return {
            "model": v.model,
            "alias": alias,
            "version": v.version,
            "previous": before.version if before else None,
        }

    def remove_alias(self, store: Store, model: str, alias: str, by: str, reason: str) -> dict[str, Any]:
        name, _, _ = parse_ref(f"{model}@{alias}")
        before = self.alias_version(KIND_OF[name], alias)
        if before is None:
            raise UnknownModel(f"{name} has no @{alias}")
        if alias == "champion":
            raise ValueError("the fleet runs @champion: promote another version instead of removing it")
        self._call("delete alias", self.client.delete_registered_model_alias, name, alias)
        self._audit(store, name, alias, "removed", None, before.version, by, reason)
        return {"model": name, "alias": alias, "version": None, "previous": before.version}

    @staticmethod
    def _audit(
        store: Store,
        model: str,
        alias: str,
        action: str,
        version: str | None,
        previous: str | None,
        by: str,
        reason: str,
    ) -> None:
        with store.engine.begin() as conn:
            conn.execute(
                insert(model_audit).values(
                    time=now_utc(),
                    model=model,
                    alias=alias,
                    action=action,
                    version=version,
                    previous=previous,
                    by=by[:64],
                    reason=reason[:2000],
                )
            )
        log.info(
            "registry_alias",
            model=model,
            alias=alias,
            action=action,
            version=version,
            previous=previous,
            by=by,
        )

    @staticmethod
    def audit(store: Store, model: str | None = None) -> list[dict[str, Any]]:
        q = select(model_audit).order_by(model_audit.c.id)
        if model:
            q = q.where(model_audit.c.model == model)
        with store.engine.connect() as conn:
            return [
                {
                    "time": r.time.isoformat() + "Z",
                    "model": r.model,
                    "alias": r.alias,
                    "action": r.action,
                    "version": r.version,
                    "previous": r.previous,
                    "by": r.by,
                    "reason": r.reason,
                }
                for r in conn.execute(q)
            ]

    def describe(self, store: Store | None = None) -> list[dict[str, Any]]:
        """Each registered model: versions (newest first) with aliases, metrics of their run and
        the gate's comparison (GET /models, `sleepsafe-sink models list`)."""
        out = []
        for kind, name in MODELS.items():
            versions = self._call(
                f"versions of {name}", self.client.search_model_versions, f"name='{name}'", max_results=200
            )
            aliases: dict[str, list[str]] = {}
            try:
                rm = self._call(f"model {name}", self.client.get_registered_model, name)
                for a, ver in (rm.aliases or {}).items():
                    aliases.setdefault(str(ver), []).append(a)
            except UnknownModel:  # a model with no version yet has no registered entry
                pass
            rows = []
            for mv in sorted(versions, key=lambda m: int(m.version), reverse=True):
                run = None
                if mv.run_id:
                    try:
                        run = self._call("get run", self.client.get_run, mv.run_id)
                    except UnknownModel:  # the run was deleted: the version is still listed
                        run = None
                rows.append(
                    {
                        "version": str(mv.version),
                        "aliases": sorted(aliases.get(str(mv.version), [])),
                        "run_id": mv.run_id,
                        "created": mv.creation_timestamp,
                        "tags": dict(mv.tags),
                        "metrics": dict(run.data.metrics) if run else {},
                        "gate": json.loads(run.data.tags["sleepsafe.gate"])
                        if run and "sleepsafe.gate" in run.data.tags
                        else None,
                    }
                )
            entry: dict[str, Any] = {"name": name, "kind": kind, "versions": rows, "input": INPUT_SPEC[kind]}
            if store is not None:
                entry["audit"] = self.audit(store, name)
            out.append(entry)
        return out


# What /predict takes for each model (and GET /models shows): the runtime's own input shapes.
INPUT_SPEC: dict[str, dict[str, Any]] = {
    "temporal": {
        "windows": "list of feature windows, each a list of frames of 7 features "
        "(edge_agent.perception.features.temporal_vector), run frame by frame with the state carried",
        "frame_width": 7,
        "max_frames": 3600,
    },
    "eye-state": {
        "crops": "list of eye inputs, each 2 x 24 x 48 floats in 0..1 (grey crop, opening mask), "
        "as edge_agent.perception.eyecrop.model_input makes them",
        "shape": [2, 24, 48],
    },
}
