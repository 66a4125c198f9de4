"""Uploading a repository layout to the Hugging Face Hub, resumably and only what changed.

Each file's sha256 is compared with the remote LFS sha256 (git blob sha1 for small files) and only
what differs is sent, in commits of bounded size, card and deletions last: publishing an unchanged
dataset makes no commit, and a run that failed half-way resumes where it stopped (the files of the
commits already made are found on the Hub and not sent again).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import HardnegError
from pipeline.publish.config import PublishConfig
from pipeline.publish.layout import DATA_DIR, Layout, RepoEntry

if TYPE_CHECKING:
    from pipeline.contract.manifest import Manifest

log = logging.getLogger(__name__)


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file stored as a regular (non-LFS) file."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _same_as_remote(entry: RepoEntry, remote: Any) -> bool:
    if remote is None or remote.size != entry.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == entry.sha256
    return remote.blob_id == git_blob_sha1(entry.local)


def plan_commits(entries: list[RepoEntry], max_bytes: int, max_files: int) -> list[list[RepoEntry]]:
    """Data files in bounded commits, in layout order; the card goes in the last one."""
    data = [e for e in entries if e.origin != "card"]
    batches: list[list[RepoEntry]] = []
    current: list[RepoEntry] = []
    size = 0
    for e in data:
        if current and (size + e.size > max_bytes or len(current) >= max_files):
            batches.append(current)
            current, size = [], 0
        current.append(e)
        size += e.size
    if current:
        batches.append(current)
    cards = [e for e in entries if e.origin == "card"]
    if cards:
        if batches:
            batches[-1].extend(cards)
        else:
            batches.append(cards)
    return batches


def upload_layout(layout: Layout, cfg: PublishConfig, manifest: Manifest, token: str | None = None) -> dict[str, Any]:
    """Send what the Hub does not have yet; delete data files the new layout no longer has."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise HardnegError("publishing needs huggingface_hub: pip install 'hardneg[publish]'") from None

    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, so a value set after import counts
    api = HfApi(endpoint=endpoint, token=token)
    repo, rev = cfg.repo_id, cfg.revision
    try:
        url = _prepare_repo(api, cfg)
        remote = _remote_files(api, repo, rev)
        wanted = {e.path for e in layout.entries}
        changed = [e for e in layout.entries if not _same_as_remote(e, remote.get(e.path))]
        stale = sorted(p for p in remote if p.startswith(f"{DATA_DIR}/") and p not in wanted)
        if not changed and not stale:
            log.info("%s%s already holds this dataset; nothing to upload", repo, f"@{rev}" if rev else "")
            return {"url": str(url), "uploaded": [], "deleted": [], "commits": [], "unchanged": True}
        commits = _commit(api, cfg, manifest, changed, stale)
    except HardnegError:
        raise
    except _hub_errors(HfHubHTTPError) as e:
        raise HardnegError(
            f"upload to {repo} failed: {e}. Commits already made are kept; rerun the same command to resume"
        ) from e
    log.info("published %d file(s) to %s in %d commit(s)", len(changed), url, len(commits))
    return {
        "url": str(url),
        "uploaded": [e.path for e in changed],
        "deleted": stale,
        "commits": commits,
        "unchanged": False,
    }


def _prepare_repo(api: Any, cfg: PublishConfig) -> Any:
    """Create the repository (and branch) when missing; refuse to make a public one private by surprise."""
    repo, rev = cfg.repo_id, cfg.revision
    url = api.create_repo(repo, repo_type="dataset", private=cfg.private, exist_ok=True)
    if cfg.private and not api.repo_info(repo, repo_type="dataset").private:
        raise HardnegError(f"{repo} already exists and is public; --private would not make it private."
                           " Change its visibility on the Hub or drop --private")
    if rev and rev != "main":
        api.create_branch(repo, repo_type="dataset", branch=rev, exist_ok=True)
    return url


def _remote_files(api: Any, repo: str, rev: str | None) -> dict[str, Any]:
    """``{path: file info}`` of the files on the branch (empty for a new branch or repository)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError

    try:
        return {
            f.path: f for f in api.list_repo_tree(repo, repo_type="dataset", revision=rev, recursive=True)
            if getattr(f, "blob_id", None) is not None
        }
    except (RevisionNotFoundError, RemoteEntryNotFoundError):
        return {}


def _commit(api: Any, cfg: PublishConfig, manifest: Manifest, changed: list[RepoEntry], stale: list[str]) -> list[str]:
    """The changed files in bounded commits, stale data files deleted in the last; returns the commit ids."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    batches = plan_commits(changed, cfg.max_commit_bytes, cfg.max_commit_files) or [[]]
    commits = []
    name = manifest.name or "dataset"
    for i, batch in enumerate(batches, 1):
        last = i == len(batches)
        ops: list[Any] = []
        for e in batch:
            op = CommitOperationAdd(path_in_repo=e.path, path_or_fileobj=str(e.local))
            try:  # we hashed it already; spare huggingface_hub a second read of a large file
                op.upload_info.sha256 = bytes.fromhex(e.sha256)
            except AttributeError:
                pass
            ops.append(op)
        if last:
            ops.extend(CommitOperationDelete(path_in_repo=p) for p in stale)
        part = f" (part {i}/{len(batches)})" if len(batches) > 1 else ""
        log.info("commit %d/%d: %d file(s), %.1f MB%s", i, len(batches), len(batch),
                 sum(e.size for e in batch) / 1e6, f", deleting {len(stale)} stale file(s)" if last and stale else "")
        info = api.create_commit(
            cfg.repo_id, ops, repo_type="dataset", revision=cfg.revision,
            commit_message=f"hardneg publish {name}{part}",
            commit_description=f"config hash {manifest.config_hash}, hardneg {manifest.hardneg_version}",
        )
        commits.append(info.oid)
    return commits


def _hub_errors(http_error: type[Exception]) -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [http_error, OSError, ValueError]
    for mod in ("httpx2", "httpx", "requests"):
        try:
            errors.append(__import__(mod).HTTPError if mod != "requests" else __import__(mod).RequestException)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
