"""``hardneg publish``: flags and ``--config/--set`` mapped onto :class:`PublishConfig`."""

from __future__ import annotations

import argparse
import logging

from pipeline.core.config import add_config_args, config_from_args
from pipeline.publish.config import DEFAULT_LICENSE, PublishConfig
from pipeline.publish.publish import publish_dataset

log = logging.getLogger("hardneg")


def publish_config_from_args(args: argparse.Namespace) -> PublishConfig:
    flags = {
        "repo_id": args.repo_id, "license": args.license, "revision": args.revision, "report": args.report,
        "private": True if args.private else None, "with_images": True if args.with_images else None,
    }
    return config_from_args(PublishConfig, args, flags)


def _publish(args: argparse.Namespace) -> int:
    cfg = publish_config_from_args(args)
    result = publish_dataset(args.dataset, cfg, dry_run_dir=args.dry_run)
    if args.dry_run:
        log.info("dry run: %d files in %s", len(result["files"]), args.dry_run)
    elif result.get("unchanged"):
        log.info("%s is up to date", result["url"])
    else:
        log.info("uploaded %d file(s), deleted %d, %d commit(s): %s",
                 len(result["uploaded"]), len(result["deleted"]), len(result["commits"]), result["url"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish a negatives dataset to the Hugging Face Hub (with a dataset card)")
    p.add_argument("dataset", metavar="DATASET_DIR", help="folder written by `hardneg generate`")
    p.add_argument("--repo-id", help="Hub dataset repository, OWNER/NAME")
    p.add_argument("--dry-run", metavar="OUT_DIR", help="write the repository content here; upload nothing")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", metavar="BRANCH", help="branch to publish to (created when missing)")
    p.add_argument("--license", help=f"licence id of the published dataset (default {DEFAULT_LICENSE})")
    p.add_argument("--with-images", action="store_true", help="publish embedded image bytes (when the dataset has them)")
    p.add_argument("--report", help="quality report JSON to summarise (default: DATASET_DIR/report.json)")
    add_config_args(p, "publish")
    p.set_defaults(func=_publish)
