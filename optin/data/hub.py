"""The Hugging Face hub, reached only through its cache: what the download rules fetch goes into the
cache (``HF_HOME``, e.g. a cluster's shared file system) and is read back from there, so the same
code serves a login node with internet and an offline compute node after the prefetch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class NotInCache(RuntimeError):
    """A repository that the hub cannot serve and the cache does not hold."""


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def snapshot(repo_id: str, revision: str, repo_type: str = "model", allow_patterns=None,
             ignore_patterns=None) -> tuple[Path, str]:
    """(snapshot directory in the cache, the commit ``revision`` resolved to). Online it downloads
    what is missing; offline (HF_HUB_OFFLINE=1, or no route to the hub) it serves the cached copy."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id=repo_id, revision=revision, repo_type=repo_type,
                                      allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
    except LocalEntryNotFoundError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        why = "HF_HUB_OFFLINE=1" if offline else f"the hub is unreachable ({type(err.__cause__ or err).__name__})"
        raise NotInCache(
            f"{repo_type} {repo_id}@{revision} is not in the Hugging Face cache {cache_dir()} and {why}; run the "
            "prefetch where the hub is reachable (make prefetch CONFIG=<your config>) with the same HF_HOME"
        ) from None
    # the cache keeps one directory per commit: its name is the resolved commit, online or offline
    return path, path.name


def materialize(snapshot_dir: Path, destination: Path) -> None:
    """The snapshot's files under ``destination``: hard links to the cache's blobs where both are on
    one file system (no second copy of the weights), copies otherwise."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in snapshot_dir.rglob("*") if p.is_file()):
        target = destination / path.relative_to(snapshot_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        blob = path.resolve()
        try:
            os.link(blob, target)
        except OSError:
            shutil.copyfile(blob, target)
