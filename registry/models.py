"""Capabilities as MLflow registered models: log, register, alias, tag, load and undo.

A capability version becomes a model version of the registered model named after its
address, ``namespace.name`` (``sd.qd.traffic.flow-forecast``), tagged with its
namespace, node and classification. The embedded default is MLflow on SQLite with
artifacts in a local directory under the node's data dir; production points
``tracking_uri`` at an MLflow tracking server (which keeps artifacts in S3 and proxies
them, so publishers need no S3 credentials).

Every step that creates something returns how to undo it, so a publish that fails
later removes what it made (:mod:`~yunnao.registry.publishing`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import ModelStoreError, Unavailable, YunnaoError

log = logging.getLogger("yunnao.models")


def _pyfunc() -> Any:
    """``mlflow.pyfunc``, imported without the warning MLflow gives about its own
    models' missing type hints (ours lack them on purpose: pyfunc.CapabilityModel)."""
    # MLflow forces its own filter ("once") around that warning, so it is recorded and
    # dropped rather than filtered.
    with warnings.catch_warnings(record=True):
        import mlflow.pyfunc

        from . import pyfunc  # noqa: F401
    return mlflow.pyfunc


EXPERIMENT = "yunnao-capabilities"
_MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}
MODEL_DIR = "model"
# The only model location a version may have: a numbered version of a model registered
# in the node's own MLflow (never a path, a URL, a run or an alias).
MODEL_URI = re.compile(
    r"^models:/(?P<name>[a-z0-9][a-z0-9._-]{0,434})/(?P<version>[1-9][0-9]{0,9})$"
)


@dataclass(frozen=True)
class LoggedVersion:
    """A capability version as MLflow holds it."""

    model_name: str
    version: str
    run_id: str
    source: str  # the model's artifact URI

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def model_name(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def _missing(exc: Exception) -> bool:
    """Is ``exc`` MLflow saying the registered model, version or alias does not exist?"""
    return "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower()


def own_model_version(namespace: str, name: str, model_uri: str) -> str | None:
    """The MLflow version number when ``model_uri`` is ``models:/{namespace}.{name}/N``,
    the only model a version of ``namespace/name`` may run; else None."""
    found = MODEL_URI.match(model_uri)
    if found is None or found["name"] != model_name(namespace, name):
        return None
    return found["version"]


def own_model_rule(namespace: str, name: str) -> str:
    """What a version of ``namespace/name`` may name as its model, in words."""
    return (
        f"must be models:/{model_name(namespace, name)}/<version>, a model version this "
        f"node logged for {namespace}/{name} in its own MLflow (publish the plugin with "
        "POST /v1/publish or `yunnao publish`); authors do not choose model locations"
    )


def code_path(cap: Capability) -> Path:
    """The top-level package (or single module file) holding the capability's code: for
    an uploaded package, where the node unpacked it (its code is never imported here)."""
    uploaded = getattr(cap, "code_root", None)
    if uploaded is not None:
        return Path(uploaded)
    top = cap.module.split(".")[0]
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if not file:
        raise ModelStoreError(f"cannot locate the code of module {top!r} to ship with the model")
    path = Path(file)
    return path.parent if path.name == "__init__.py" else path


def requirements(cap: Capability) -> list[str]:
    """Pinned requirements: the capability's own, plus the SDK it runs on."""
    reqs = list(cap.requirements)
    names = {r.split("=")[0].split("<")[0].split(">")[0].strip().lower() for r in reqs}
    for dist in ("yunnao", "pydantic"):
        if dist not in names:
            with contextlib.suppress(md.PackageNotFoundError):
                reqs.append(f"{dist}=={md.version(dist)}")
    return reqs


class ModelStore:
    """One MLflow tracking server and registry, through a client of its own (MLflow's
    global tracking URI is never set, so several stores can live in one process)."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        # MLflow's HTTP client retries a failing request for about four minutes by
        # default (for hosted backends that rate-limit). A publish should rather fail in
        # well under a minute, say why, and be retried by its author; operators can still
        # set these variables themselves.
        for var, value in _MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(var, value)
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self._client: Any = None
        self._experiment_id: str | None = None
        self._artifact_root: str | None = None  # None: the server's default

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (importing MLflow takes seconds)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        return self._client

    @classmethod
    def embedded(cls, data_dir: Path) -> ModelStore:
        """MLflow on SQLite with local artifacts, under ``data_dir/mlflow``."""
        root = (data_dir / "mlflow").resolve()
        root.mkdir(parents=True, exist_ok=True)
        store = cls(f"sqlite:///{root / 'mlflow.db'}")
        store._artifact_root = (root / "artifacts").as_uri()
        return store

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        EXPERIMENT, artifact_location=self._artifact_root
                    )
                except Exception:  # created concurrently by another process
                    exp = self.client.get_experiment_by_name(EXPERIMENT)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # ------------------------------------------------------------ publishing

    def log(self, cap: Capability, *, namespace: str, node: str) -> LoggedVersion:
        """Save ``cap`` as a pyfunc model, log it in a run and register it as a new version
        of ``namespace.name``. On failure nothing stays behind."""
        mlflow_pyfunc = _pyfunc()

        from .pyfunc import model_code
        from .signature import signature_of

        name = model_name(namespace, cap.name)
        tags = {
            "yunnao.namespace": namespace,
            "yunnao.node": node,
            "yunnao.capability": cap.name,
            "yunnao.version": cap.version,
            "yunnao.classification": cap.classification,
        }
        # The node's own mark on a model of an uploaded package (the package cannot
        # write MLmodel): runtimes that run code as the node's user refuse it
        # (yunnao.runtimes.adapters.loading), and the sandbox takes its environment.
        marker = getattr(cap, "uploaded", None)
        uploaded = {"uploaded": dict(marker)} if marker else {}
        run_id = None
        try:
            with tempfile.TemporaryDirectory(prefix="yunnao-model-") as tmp:
                local = Path(tmp) / MODEL_DIR
                code = Path(tmp) / "capability_model.py"
                code.write_text(model_code(cap.entry), encoding="utf-8")
                with warnings.catch_warnings():
                    # MLflow suggests an input example; the registry entry has examples.
                    warnings.simplefilter("ignore", UserWarning)
                    mlflow_pyfunc.save_model(
                        path=str(local),
                        python_model=str(code),
                        artifacts={k: str(v) for k, v in cap.artifacts.items()},
                        code_paths=[str(code_path(cap))],
                        pip_requirements=requirements(cap),
                        signature=signature_of(cap),
                        metadata={"yunnao": {"entry": cap.entry, **tags, **uploaded}},
                    )
                run = self.client.create_run(self.experiment_id(), tags=tags, run_name=name)
                run_id = run.info.run_id
                self.client.log_artifacts(run_id, str(local), MODEL_DIR)
                self.client.set_terminated(run_id)
            source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
            self._ensure_registered_model(name, cap, tags)
            mv = self.client.create_model_version(
                name, source, run_id=run_id, tags=tags, description=cap.summary
            )
        except YunnaoError:
            self._drop_run(run_id)
            raise
        except Exception as exc:
            self._drop_run(run_id)
            raise _mlflow_error("logging the model", exc) from exc
        logged = LoggedVersion(name, str(mv.version), run_id, source)
        try:
            self._await_ready(name, logged.version)
        except BaseException:
            self.undo(logged)  # the version exists but never became usable
            raise
        return logged

    def set_alias(self, logged: LoggedVersion, alias: str) -> None:
        try:
            self.client.set_registered_model_alias(logged.model_name, alias, logged.version)
        except Exception as exc:
            raise _mlflow_error(f"setting alias {alias!r}", exc) from exc

    def undo(self, logged: LoggedVersion) -> None:
        """Remove a logged version entirely: the model version, its run and artifacts."""
        try:
            self.client.delete_model_version(logged.model_name, logged.version)
        except Exception:
            log.exception("undo: could not delete %s", logged.model_uri)
        try:
            if not self.client.search_model_versions(f"name = '{logged.model_name}'"):
                self.client.delete_registered_model(logged.model_name)
        except Exception:
            log.exception("undo: could not delete registered model %s", logged.model_name)
        self._drop_run(logged.run_id)

    def _ensure_registered_model(self, name: str, cap: Capability, tags: dict[str, str]) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            model_tags = {k: v for k, v in tags.items() if k != "yunnao.version"}
            try:
                self.client.create_registered_model(name, tags=model_tags, description=cap.title)
            except MlflowException:
                self.client.get_registered_model(name)  # created concurrently: fine

    def _await_ready(self, name: str, version: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                mv = self.client.get_model_version(name, version)
            except Exception as exc:
                raise _mlflow_error("registering the model", exc) from exc
            if mv.status == "READY":
                return
            if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise ModelStoreError(f"MLflow did not register {name}/{version}: {mv.status}")
            time.sleep(0.2)

    def _drop_run(self, run_id: str | None) -> None:
        if run_id is None:
            return
        try:
            uri = self.client.get_run(run_id).info.artifact_uri
            self.client.delete_run(run_id)
            _delete_artifacts(uri, self.tracking_uri)
        except Exception:
            log.exception("undo: could not delete run %s", run_id)

    # ------------------------------------------------------------ loading

    def registered_source(self, namespace: str, name: str, version: str) -> str | None:
        """Where this node's MLflow keeps version ``version`` of ``namespace.name``'s
        model (its artifact URI), or None when there is no such ready version."""
        registered = model_name(namespace, name)
        try:
            mv = self.client.get_model_version(registered, version)
        except Exception as exc:
            if _missing(exc):
                return None
            raise _mlflow_error(f"reading {registered}/{version}", exc) from exc
        return str(mv.source) if mv.status == "READY" else None

    def alias_version(self, namespace: str, name: str, alias: str) -> str | None:
        """The ``models:/`` URI an MLflow alias of the capability points at, or None."""
        registered = model_name(namespace, name)
        try:
            mv = self.client.get_model_version_by_alias(registered, alias)
        except Exception as exc:
            if _missing(exc):
                return None
            raise _mlflow_error(f"resolving alias {alias!r} of {registered}", exc) from exc
        return f"models:/{registered}/{mv.version}"

    def download(self, model_uri: str) -> str:
        """Download a ``models:/name/N`` model's files; the local directory."""
        import mlflow.artifacts

        found = MODEL_URI.match(model_uri)
        if found is None:
            # Only numbered versions of this MLflow's own registered models are loaded:
            # never a path, a URL or a run an author named.
            raise ModelStoreError(f"{model_uri!r} is not a models:/<name>/<version> URI")
        name, version = found["name"], found["version"]
        try:
            source = self.client.get_model_version_download_uri(name, version)
            return mlflow.artifacts.download_artifacts(
                artifact_uri=source, tracking_uri=self.tracking_uri
            )
        except Exception as exc:
            raise _mlflow_error(f"downloading {model_uri}", exc) from exc

    def load(self, model_uri: str) -> Any:
        """Load a published capability as a pyfunc model from its ``models:/`` URI alone."""
        mlflow_pyfunc = _pyfunc()

        from . import pyfunc  # noqa: F401  (quiets MLflow's import-time warnings)

        local = self.download(model_uri)
        try:
            return mlflow_pyfunc.load_model(local)
        except Exception as exc:
            raise _mlflow_error(f"loading {model_uri}", exc) from exc


def _delete_artifacts(uri: str, tracking_uri: str) -> None:
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        shutil.rmtree(unquote(urlparse(uri).path), ignore_errors=True)
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(uri, tracking_uri=tracking_uri).delete_artifacts()


def _mlflow_error(action: str, exc: Exception) -> YunnaoError:
    text = str(exc).strip().splitlines()
    detail = f"MLflow failed while {action}: {type(exc).__name__}: {text[0] if text else ''}"
    if "Connection" in type(exc).__name__ or "connect" in detail.lower():
        return Unavailable(detail)
    return ModelStoreError(detail)
