"""Keeping the node's uploaded packages tidy, off the request path (the publisher loop
calls these between jobs):

- **Unused packages.** A package is recorded with the versions it published
  (``package_version``, each with its MLflow model). When none of them is live any more
  (retired, or its capability deleted), :func:`unused_packages` finds it and
  :func:`forget_package` removes its row and its unpacked code; its environment goes
  with the last package that uses it.
- **Abandoned jobs.** A publish job whose node stopped mid-way (see
  :func:`~yunnao.registry.packages.jobs.abandoned`) is ended: as succeeded when its
  package was recorded (the node stopped after the commit), else as failed, after
  :func:`undo_mlflow` removed what it logged to MLflow (the registry write is one
  transaction with the package's record, so it left nothing there).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..db import row_write
from ..models import LoggedVersion, ModelStore, model_name
from ..publishing import DEFAULT_ALIASES, STEPS
from ..tables import CapabilityRow, Package, PackageVersion, VersionRow, utcnow

log = logging.getLogger("yunnao.packages")

PACKAGE = Package.__table__  # type: ignore[attr-defined]
PACKAGE_VERSION = PackageVersion.__table__  # type: ignore[attr-defined]
CAPABILITY = CapabilityRow.__table__  # type: ignore[attr-defined]
VERSION = VersionRow.__table__  # type: ignore[attr-defined]

LIVE = ("draft", "published", "deprecated")  # a version in any of these still runs


# ------------------------------------------------------------ unused packages


def unused_packages(engine: sa.Engine) -> list[Any]:
    """Packages (``id``, ``environment``) none of whose published versions is live: each
    version retired or its capability deleted (a version of the same number published
    later by another package has another model, so it does not count). A package with
    no recorded versions (recorded before they were) is left alone. A read."""
    pv = PACKAGE_VERSION.alias("pv")
    live = (
        sa.select(sa.literal(1))
        .select_from(
            pv.join(
                CAPABILITY,
                sa.and_(
                    CAPABILITY.c.namespace == pv.c.namespace,
                    CAPABILITY.c.name == pv.c.name,
                    CAPABILITY.c.deleted_at.is_(None),
                ),
            ).join(
                VERSION,
                sa.and_(
                    VERSION.c.capability_id == CAPABILITY.c.id,
                    VERSION.c.version == pv.c.version,
                ),
            )
        )
        .where(
            pv.c.package_id == PACKAGE.c.id,
            VERSION.c.status.in_(LIVE),
            sa.or_(pv.c.model_uri.is_(None), VERSION.c.model_uri == pv.c.model_uri),
        )
    )
    recorded = sa.select(sa.literal(1)).where(PACKAGE_VERSION.c.package_id == PACKAGE.c.id)
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(PACKAGE.c.id, PACKAGE.c.environment).where(
                    recorded.exists(), ~live.exists()
                )
            ).all()
        )


def forget_package(engine: sa.Engine, root: Path, package_id: str) -> str | None:
    """Remove an unused package: its rows, then its unpacked code under
    ``root/code/<id>``. The key of its environment when no other package uses it
    (the caller removes that), else None."""
    with row_write(engine) as conn:
        row = conn.execute(
            sa.select(PACKAGE.c.environment).where(PACKAGE.c.id == package_id)
        ).first()
        if row is None:
            return None
        conn.execute(sa.delete(PACKAGE_VERSION).where(PACKAGE_VERSION.c.package_id == package_id))
        conn.execute(sa.delete(PACKAGE).where(PACKAGE.c.id == package_id))
        env = row.environment
        shared = env is not None and (
            conn.execute(
                sa.select(PACKAGE.c.id).where(PACKAGE.c.environment == env).limit(1)
            ).first()
            is not None
        )
    shutil.rmtree(root / "code" / package_id, ignore_errors=True)
    return None if shared or env is None else env


def environments_in_use(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {
            r.environment
            for r in conn.execute(sa.select(PACKAGE.c.environment).distinct())
            if r.environment
        }


def record_package(
    session: Any, job: Any, wheel: Any, checked: Any, env_key: str, published: list[Any]
) -> None:
    """Record the package and the versions it published, in the registry's transaction
    (``session``: the one :meth:`~yunnao.registry.store.RegistryStore.publish_many`
    opened). ``published``: (namespace, name, version) of each capability."""
    session.execute(
        sa.insert(PACKAGE).values(
            id=checked.sha256,
            namespace=job.namespace,
            distribution=wheel.name,
            version=wheel.version,
            filename=job.filename,
            size=checked.size,
            environment=env_key,
            uploaded_by=job.caller,
            created_at=utcnow(),
            job_id=job.id,
        )
    )
    for namespace, name, version in published:
        model_uri = session.execute(
            sa.select(VERSION.c.model_uri)
            .select_from(VERSION.join(CAPABILITY, VERSION.c.capability_id == CAPABILITY.c.id))
            .where(
                CAPABILITY.c.namespace == namespace,
                CAPABILITY.c.name == name,
                VERSION.c.version == version,
            )
        ).scalar_one()
        session.execute(
            sa.insert(PACKAGE_VERSION).values(
                package_id=checked.sha256,
                namespace=namespace,
                name=name,
                version=version,
                model_uri=model_uri,
            )
        )


# ------------------------------------------------------------ abandoned jobs


def recorded_result(engine: sa.Engine, job: Any) -> list[dict[str, Any]] | None:
    """What the job published, when its package was recorded (by this job); else None."""
    with engine.connect() as conn:
        package = conn.execute(
            sa.select(PACKAGE.c.id).where(
                PACKAGE.c.id == job.package_id, PACKAGE.c.job_id == job.id
            )
        ).first()
        if package is None:
            return None
        rows = conn.execute(
            sa.select(PACKAGE_VERSION).where(PACKAGE_VERSION.c.package_id == package.id)
        ).all()
    return [
        {
            "capability": f"{r.namespace}/{r.name}@{r.version}",
            "model_uri": r.model_uri,
            "aliases": list(DEFAULT_ALIASES),
        }
        for r in rows
    ]


def package_known(engine: sa.Engine, package_id: str | None) -> bool:
    with engine.connect() as conn:
        found = conn.execute(sa.select(PACKAGE.c.id).where(PACKAGE.c.id == package_id)).first()
    return found is not None


def logged_by(job: Any) -> list[tuple[str, str]]:
    """(name, version) of each capability the job began to log to MLflow, from its log
    (the publisher's step ``logging the model to MLflow: NAME VERSION``)."""
    prefix = f"{STEPS[1]}: "
    out = []
    for line in job.log or []:
        message = str(line.get("message", ""))
        if line.get("step") == "publishing" and message.startswith(prefix):
            name, _, version = message[len(prefix) :].partition(" ")
            if name and version:
                out.append((name, version))
    return out


def undo_mlflow(
    models: ModelStore, engine: sa.Engine, namespace: str, logged: list[tuple[str, str]]
) -> int:
    """Remove what a stopped job logged to MLflow: each run tagged with the job's
    namespace, a capability and version it logged, and the model versions made from
    it, unless a registry version uses one of those models. How many runs went."""
    if not logged:
        return 0
    client = models.client
    experiment = models.experiment_id()
    removed = 0
    for name, version in logged:
        registered = model_name(namespace, name)
        runs = client.search_runs(
            [experiment],
            filter_string=(
                f"tags.`yunnao.namespace` = '{namespace}' and "
                f"tags.`yunnao.capability` = '{name}' and tags.`yunnao.version` = '{version}'"
            ),
        )
        try:
            versions = list(client.search_model_versions(f"name = '{registered}'"))
        except Exception:
            versions = []
        for run in runs:
            run_id = run.info.run_id
            made = [mv for mv in versions if mv.run_id == run_id]
            if any(_referenced(engine, f"models:/{mv.name}/{mv.version}") for mv in made):
                continue
            for mv in made:
                models.undo(LoggedVersion(mv.name, str(mv.version), run_id, mv.source))
            if not made:
                models._drop_run(run_id)  # a run whose model version was never made
            removed += 1
            log.info("removed %s %s's MLflow run %s of a stopped job", registered, version, run_id)
    return removed


def _referenced(engine: sa.Engine, model_uri: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(VERSION.c.id).where(VERSION.c.model_uri == model_uri).limit(1)
        ).first()
    return found is not None
