#!/usr/bin/env python
"""facestream enrollment: add people to a gallery from photos, folders and videos; list, show, rename,
remove, export and import them.

    python enroll.py [--gallery NAME] [--redis-url URL] [--config FILE] [--set KEY=VALUE] [--model CARD] [--json]
                     COMMAND ...

    add --name NAME [--largest] FILES_OR_DIRS...   enrol one person (one atomic gallery write)
    add --tree ROOT [--largest]                     one person per sub-folder of ROOT (folder name = name;
                                                    one atomic write per person)
        [--video-every N] [--video-max-frames M]    videos (.mp4 .avi .mov .mkv): one frame in N, M at most
    list                                            every identity with its template count
    show NAME                                       one identity, with its template ids
    rename OLD NEW
    remove NAME                                     delete the identity and every template of it
    export FILE                                     the gallery as one portable JSON file
    import FILE                                     merge such a file into the gallery

Photos are judged by the quality gates (config section `quality`); every rejected input gets a line saying
why. Exit status: 0 on success; 1 when `add` accepted no input (nothing is written); 2 on an error (one line).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from pipeline.app.config import AppConfig, load_app_config
from pipeline.core.errors import ConfigError, FacestreamError, GalleryError
from pipeline.core.logs import configure_logging

log = logging.getLogger("enroll")

EXIT_NOTHING_ENROLLED = 1
EXIT_ERROR = 2


# -- output -------------------------------------------------------------------------------------------
class Output:
    """Human lines on stdout, or (with --json) one JSON object on stdout at the end."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        if not self.as_json:
            tqdm.write(text, file=sys.stdout)  # clears and redraws a progress bar on the terminal

    def result(self, payload: dict) -> None:
        if self.as_json:
            print(json.dumps(payload, ensure_ascii=False))


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, noun: str) -> str:
    many = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {noun if count == 1 else many}"


# -- set-up -------------------------------------------------------------------------------------------
def open_store(cfg: AppConfig, args: argparse.Namespace, fingerprint: str | None = None):
    """The gallery; with `fingerprint` (the embedder's), refused if it holds another model's templates."""
    from pipeline.app.services import redis_client
    from pipeline.gallery import GalleryStore

    client = redis_client(cfg, args.redis_url)
    # An existing gallery keeps the dtype and server index it was created with; these only apply to a new one.
    return GalleryStore.open(client, args.gallery, fingerprint=fingerprint, dtype_for_new=args.dtype,
                             server_index_for_new=cfg.gallery.server_index)


def make_enroller(cfg: AppConfig, args: argparse.Namespace):
    from pipeline.app.services import make_detector, make_embedder, quality_gates
    from pipeline.recognise.enrollment import Enroller

    detector, embedder = make_detector(cfg), make_embedder(cfg, args.model)
    return Enroller(detector, embedder, quality_gates(cfg), largest=args.largest,
                    video_every=args.video_every, video_max_frames=args.video_max_frames)


# -- add ----------------------------------------------------------------------------------------------
def plan_add(args: argparse.Namespace) -> dict[str, list[Path]]:
    """{identity name: its input files}, every name validated before any image is read."""
    from pipeline.gallery import validate_name
    from pipeline.recognise.enrollment import expand_inputs, tree_identities

    if args.tree is not None:
        if args.name or args.inputs:
            raise ConfigError("add --tree takes neither --name nor input files")
        return tree_identities(args.tree)
    if not args.name or not args.inputs:
        raise ConfigError("add needs --name NAME and at least one file or folder (or --tree ROOT)")
    return {validate_name(args.name): expand_inputs(args.inputs)}


def run_add(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    """Embed each identity's files and write it at once; a summary at the end."""
    from pipeline.recognise.enrollment import EnrollmentReport

    people_files = plan_add(args)
    enroller = make_enroller(cfg, args)
    store = open_store(cfg, args, enroller.embedder.fingerprint)
    outcomes, people = [], []
    total = sum(len(files) for files in people_files.values())
    with tqdm(total=total, unit="file", desc="enrolling", file=sys.stderr, disable=None, leave=False) as bar:
        for name, files in people_files.items():
            report = EnrollmentReport()
            for path in files:
                seen = len(report.outcomes)
                enroller.add_file(path, report)
                for outcome in report.outcomes[seen:]:
                    if not outcome.accepted:
                        detail = f" ({outcome.detail})" if outcome.detail else ""
                        out.line(f"rejected  {outcome.where}: {outcome.reason}{detail}")
                bar.update()
            outcomes.extend(report.outcomes)
            # Written as soon as its photos are embedded, in one atomic store write: a run that is killed keeps
            # every identity it finished, and the same command run again skips those (template ids are hashes).
            if report.template_ids:
                people.append(write_identity(store, enroller.embedder.fingerprint, name, report, out))
            elif len(people_files) > 1:
                out.line(f"skipped   {name}: no input accepted")
    return summarise_add(store, outcomes, people, out)


def write_identity(store, fingerprint: str, name: str, report, out: Output) -> dict:
    """One identity's accepted templates in one atomic store write; its line of the summary."""
    result = store.add(name, report.matrix(), report.template_ids, fingerprint)
    state = "new identity" if result.created else "existing identity"
    out.line(f"enrolled  {result.identity.name}: {plural(result.added, 'template')} added, "
             f"{plural(result.duplicates, 'duplicate')}, {result.identity.templates} in all ({state})")
    return {"name": result.identity.name, "id": result.identity.id, "created": result.created,
            "accepted": len(report.accepted), "added": result.added, "duplicates": result.duplicates,
            "templates": result.identity.templates}


def summarise_add(store, outcomes: list, people: list[dict], out: Output) -> int:
    """The totals of an add; the exit status."""
    accepted = sum(o.accepted for o in outcomes)
    by_reason: dict[str, int] = {}
    for o in outcomes:
        if not o.accepted:
            by_reason[o.reason] = by_reason.get(o.reason, 0) + 1
    added = sum(p["added"] for p in people)
    duplicates = sum(p["duplicates"] for p in people)
    rejected = len(outcomes) - accepted
    out.line(f"accepted   {accepted}")
    out.line(f"rejected   {rejected}")
    for reason, count in by_reason.items():
        out.line(f"  {reason}: {count}")
    out.line(f"duplicates {duplicates}")
    out.line(f"identities {len(people)} (gallery {store.gallery!r})")
    if not accepted:
        print(f"nothing enrolled: none of {plural(len(outcomes), 'input')} was accepted; the gallery is unchanged",
              file=sys.stderr)
    out.result({"command": "add", "gallery": store.gallery, "enrolled": bool(accepted), "accepted": accepted,
                "rejected": rejected, "rejected_by_reason": by_reason, "added": added, "duplicates": duplicates,
                "identities": people, "outcomes": [o.as_dict() for o in outcomes]})
    return 0 if accepted else EXIT_NOTHING_ENROLLED


# -- the other commands -------------------------------------------------------------------------------
def identity_dict(identity) -> dict:
    return {"name": identity.name, "id": identity.id, "created": identity.created,
            "templates": identity.templates, "metadata": identity.metadata}


def run_list(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    store = open_store(cfg, args)
    people = store.identities()
    width = max([len(p.name) for p in people] + [4])
    out.line(f"{'NAME':<{width}}  TEMPLATES  CREATED")
    for p in people:
        out.line(f"{p.name:<{width}}  {p.templates:>9}  {when(p.created)}")
    templates = sum(p.templates for p in people)
    out.line(f"{plural(len(people), 'identity')}, "
             f"{plural(templates, 'template')} in gallery {store.gallery!r} (model {store.fingerprint or 'none yet'})")
    out.result({"command": "list", "gallery": store.gallery, "fingerprint": store.fingerprint,
                "identities": [identity_dict(p) for p in people]})
    return 0


def run_show(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    store = open_store(cfg, args)
    identity = store.get(args.name)
    found = store.read_full(identity.id)
    if found is None:
        raise GalleryError(f"identity {args.name!r} was removed while being read")
    identity, template_ids, _ = found
    for label, value in (("name", identity.name), ("id", identity.id), ("created", when(identity.created)),
                         ("templates", identity.templates), ("metadata", json.dumps(identity.metadata)),
                         ("model", store.fingerprint), ("gallery", store.gallery)):
        out.line(f"{label + ':':<11}{value}")
    out.line("template ids:")
    for template_id in template_ids:
        out.line(f"  {template_id}")
    out.result({"command": "show", "gallery": store.gallery, "fingerprint": store.fingerprint,
                **identity_dict(identity), "template_ids": template_ids})
    return 0


def run_rename(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    store = open_store(cfg, args)
    identity = store.rename(args.old, args.new)
    out.line(f"renamed {args.old!r} to {identity.name!r} ({plural(identity.templates, 'template')})")
    out.result({"command": "rename", "gallery": store.gallery, "old": args.old, **identity_dict(identity)})
    return 0


def run_remove(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    store = open_store(cfg, args)
    removed = store.remove(args.name)
    out.line(f"removed {args.name!r} and {plural(removed, 'template')} from gallery {store.gallery!r}")
    out.result({"command": "remove", "gallery": store.gallery, "name": args.name, "templates_removed": removed})
    return 0


def run_export(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    from pipeline.gallery.portable import export_gallery

    store = open_store(cfg, args)
    count = export_gallery(store, args.file)
    out.line(f"exported {plural(count, 'identity')} of gallery "
             f"{store.gallery!r} to {args.file}")
    out.result({"command": "export", "gallery": store.gallery, "file": str(args.file), "identities": count})
    return 0


def run_import(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    from pipeline.gallery.portable import import_gallery

    store = open_store(cfg, args)
    result = import_gallery(store, args.file)
    out.line(f"imported {plural(result.identities, 'identity')} from "
             f"{args.file} into gallery {store.gallery!r}: {result.created} new, "
             f"{plural(result.added, 'template')} added, {plural(result.duplicates, 'duplicate')}")
    out.result({"command": "import", "gallery": store.gallery, "file": str(args.file),
                "identities": result.identities, "created": result.created, "added": result.added,
                "duplicates": result.duplicates})
    return 0


COMMANDS = {"add": run_add, "list": run_list, "show": run_show, "rename": run_rename, "remove": run_remove,
            "export": run_export, "import": run_import}


# -- command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from pipeline.recognise.embedder import DEFAULT_MODEL
    from pipeline.recognise.enrollment import VIDEO_EVERY, VIDEO_MAX_FRAMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", default="default", help="gallery name (default: default)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: redis.url, else the embedded server)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="embedder model card (JSON)")
    parser.add_argument("--dtype", choices=("float32", "int8"), default="float32",
                        help="template storage of a NEW gallery (an existing one keeps its own)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of text")
    parser.add_argument("--log-level", default="WARNING")
    # `--json` is accepted after the command too; SUPPRESS keeps the subcommand from resetting it.
    json_too = argparse.ArgumentParser(add_help=False)
    json_too.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = commands.add_parser("add", parents=[json_too], help="enrol a person from photos, folders, videos")
    add.add_argument("--name", help="identity name")
    add.add_argument("--tree", type=Path, help="one identity per sub-folder of this folder")
    add.add_argument("--largest", action="store_true", help="take the largest face of a photo with several")
    add.add_argument("--video-every", type=int, default=VIDEO_EVERY, help="sample one video frame in N")
    add.add_argument("--video-max-frames", type=int, default=VIDEO_MAX_FRAMES, help="sampled frames per video")
    add.add_argument("inputs", nargs="*", type=Path, metavar="FILES_OR_DIRS")
    commands.add_parser("list", parents=[json_too], help="list identities")
    commands.add_parser("show", parents=[json_too], help="show one identity").add_argument("name")
    rename = commands.add_parser("rename", parents=[json_too], help="rename an identity")
    rename.add_argument("old")
    rename.add_argument("new")
    commands.add_parser("remove", parents=[json_too], help="remove an identity and all its templates"
                        ).add_argument("name")
    commands.add_parser("export", parents=[json_too], help="write the gallery to a file"
                        ).add_argument("file", type=Path)
    commands.add_parser("import", parents=[json_too], help="merge a gallery file into the gallery"
                        ).add_argument("file", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        cfg = load_app_config(args.config, args.set)
        return COMMANDS[args.command](cfg, args, Output(args.json))
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; the gallery is unchanged unless a write had completed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
