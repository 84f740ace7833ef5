#!/usr/bin/env python
"""facestream enrollment: add people to a gallery from photos, folders and videos; list, show, rename,
remove, export and import them.

    python enroll.py [--gallery NAME] [--redis-url URL] [--config FILE] [--set KEY=VALUE] [--model CARD] [--json]
                     COMMAND ...

    add --name NAME [--largest] FILES_OR_DIRS...   enrol one person (one atomic gallery write)
    add --tree ROOT [--largest]                     one person per sub-folder of ROOT (folder name = name;
                                                    one atomic write per person)
        [--video-every N] [--video-max-frames M]    videos (.mp4 .avi .mov .mkv): one frame in N, M at most;
        [--video-templates K]                       of their accepted frames the K most diverse become
                                                    templates (default 5; 0 keeps every accepted frame)
    list                                            every identity with its template count
    show NAME                                       one identity, with its template ids
    rename OLD NEW
    remove NAME                                     delete the identity and every template of it
    export FILE                                     the gallery as one portable JSON file
    import FILE                                     merge such a file into the gallery

    unknowns list                                   the unknown people (clusters of unnamed faces)
    unknowns show ID [--crops DIR]                  one cluster's sightings (DIR: their face crops as JPEGs)
    unknowns name ID "Person Name"                  enrol the cluster's best faces as that person (new or not)
    unknowns merge KEEP OTHER                       OTHER's faces join KEEP, whose id survives
    unknowns forget ID                              delete the cluster and every face it holds
    unknowns purge                                  delete sightings past unknowns.retention_days now
    search PHOTO                                    who is this, or which unknown person, and where/when seen
    reject EVENT_ID                                 the face behind that identity_confirmed event is not the
                                                    person it was named: a negative template of that person
    reject --face PHOTO --not NAME                  the same from a photo
    auto list | auto remove [NAME]                  self-enrolled templates (gallery.auto_enrol): count, remove
    migrate --model NEW_CARD [--into GALLERY] [--from-model OLD_CARD] [--dry-run]
                                                    re-embed every person from their stored aligned crops with
                                                    the new model into GALLERY (default <gallery>.<model_id>);
                                                    the source gallery is only read

    keys create --role admin|viewer                 a new API key for serve.py's console and API (shown once)
    keys list | keys revoke KEY_ID                  the keys (id, role, created, last used; never the secret)
    events                                          the event stream's consumer groups: lag, pending entries,
                                                    dead letters, and each consumer's pending and idle time
    cameras add NAME URL [--setting K=V ...] [--disabled] [--replace]
                                                    register a camera for run.py --worker (settings as in
                                                    cameras.<name>, checked now)
    cameras list                                    every camera, the worker reading it and its lease token,
                                                    and the live workers
    cameras remove|enable|disable NAME | cameras load FILE [--prune]

`remove NAME` forgets the person completely: templates, negative templates, sightings and their crops.

Photos are judged by the quality gates (config section `quality`); every rejected input gets a line saying
why. Exit status: 0 on success; 1 when `add` accepted no input (nothing is written) or `migrate` left people
needing new photos; 2 on an error (one line).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.app import site_commands
from pipeline.app.cli_output import Output, plural, when
from pipeline.app.config import AppConfig, load_app_config
from pipeline.core.errors import ConfigError, FacestreamError, GalleryError
from pipeline.core.logs import configure_logging

log = logging.getLogger("enroll")

EXIT_NOTHING_ENROLLED = 1
EXIT_NEED_NEW_PHOTOS = 1  # migrate: some people could not be re-embedded (the others were)
EXIT_ERROR = 2


# -- set-up -------------------------------------------------------------------------------------------
def open_store(cfg: AppConfig, args: argparse.Namespace, fingerprint: str | None = None):
    """The gallery; with `fingerprint` (the embedder's), refused if it holds another model's templates."""
    from pipeline.app.services import redis_client, write_safety
    from pipeline.gallery import GalleryStore

    client = redis_client(cfg, args.redis_url)
    # An existing gallery keeps the dtype and server index it was created with; these only apply to a new one.
    return GalleryStore.open(client, args.gallery, fingerprint=fingerprint, dtype_for_new=args.dtype,
                             server_index_for_new=cfg.gallery.server_index, **write_safety(cfg))


def make_enroller(cfg: AppConfig, args: argparse.Namespace):
    from pipeline.app.services import make_detector, make_embedder, quality_gates
    from pipeline.recognise.enrollment import Enroller

    detector, embedder = make_detector(cfg), make_embedder(cfg, args.model)
    return Enroller(detector, embedder, quality_gates(cfg), largest=args.largest,
                    video_every=args.video_every, video_max_frames=args.video_max_frames,
                    video_templates=args.video_templates)


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
    from pipeline.recognise.enrollment import SKIPS, EnrollmentReport

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
                        verb = "skipped " if outcome.reason in SKIPS else "rejected"  # a good frame, not kept
                        out.line(f"{verb}  {outcome.where}: {outcome.reason}{detail}")
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
    result = store.add(name, report.matrix(), report.template_ids, fingerprint, crops=report.crops())
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
    operator = make_operator(cfg, args)
    removed, sightings = operator.remove_person(args.name)
    out.line(f"removed {args.name!r}, {plural(removed, 'template')} and {plural(sightings, 'sighting')} "
             f"from gallery {args.gallery!r}")
    out.result({"command": "remove", "gallery": args.gallery, "name": args.name, "templates_removed": removed,
                "sightings_removed": sightings})
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


# -- unknown people, search, feedback ---------------------------------------------------------------------
def make_operator(cfg: AppConfig, args: argparse.Namespace):
    from pipeline.app.operator import Operator
    from pipeline.app.services import redis_client

    return Operator(cfg, redis_client(cfg, args.redis_url), args.gallery, args.model)


def run_unknowns(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    operator = make_operator(cfg, args)
    action = args.action
    if action == "list":
        clusters = operator.clusters()
        out.line(f"{'UNKNOWN ID':<18} {'SIGHTINGS':>9}  FIRST SEEN               LAST SEEN")
        for c in clusters:
            out.line(f"{c.id:<18} {c.sightings:>9}  {when(c.created)}  {when(c.last_seen)}")
        out.line(f"{plural(len(clusters), 'unknown person')} in gallery {args.gallery!r} "
                 f"(kept {cfg.unknowns.retention_days:g} days)")
        out.result({"command": "unknowns list", "gallery": args.gallery, "clusters": [c.as_dict() for c in clusters]})
    elif action == "show":
        cluster, sightings = operator.cluster(args.id)
        out.line(f"{cluster.id}: {plural(cluster.sightings, 'sighting')} on {', '.join(cluster.cameras) or '-'}, "
                 f"first {when(cluster.created)}, last {when(cluster.last_seen)}")
        for s in sightings:
            out.line(f"  {s.id}  {when(s.time)}  {s.camera:<12} {s.track:<14} quality {s.quality:.2f}")
        saved = save_crops(operator, sightings, args.crops) if args.crops else []
        if saved:
            out.line(f"{plural(len(saved), 'crop')} written to {args.crops}")
        out.result({"command": "unknowns show", "gallery": args.gallery, **cluster.as_dict(),
                    "sightings_list": [s.as_dict() for s in sightings], "crops": [str(p) for p in saved]})
    elif action == "name":
        named = operator.name(args.id, args.name)
        state = "new identity" if named.created else "existing identity"
        out.line(f"named {named.cluster_id} {named.name!r} ({state}): {plural(named.templates_added, 'template')} "
                 f"enrolled from its best faces, {plural(named.outliers, 'outlier')} left out, "
                 f"{plural(named.sightings_moved, 'sighting')} moved to the person")
        out.result({"command": "unknowns name", "gallery": args.gallery, **named.__dict__})
    elif action == "merge":
        merged = operator.merge(args.keep, args.other)
        out.line(f"merged {', '.join(merged)} into {args.keep}")
        out.result({"command": "unknowns merge", "gallery": args.gallery, "kept": args.keep, "merged": merged})
    elif action == "forget":
        removed = operator.forget(args.id)
        out.line(f"forgot {args.id}: {plural(removed, 'sighting')} and their crops deleted")
        out.result({"command": "unknowns forget", "gallery": args.gallery, "id": args.id, "sightings_removed": removed})
    else:
        purged = operator.purge()
        out.line(f"purged {plural(purged.sightings, 'sighting')} and {plural(purged.clusters, 'unknown person')} "
                 f"(older than {cfg.unknowns.retention_days:g} days, or beyond {cfg.unknowns.max_sightings})")
        out.result({"command": "unknowns purge", "gallery": args.gallery, "sightings_removed": purged.sightings,
                    "clusters_removed": purged.clusters})
    return 0


def save_crops(operator, sightings, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for s in sightings:
        found = operator.unknowns.sighting(s.id, crops=True)
        if found is not None and found.crop_jpeg:
            path = folder / f"{s.owner}_{s.id}.jpg"
            path.write_bytes(found.crop_jpeg)
            saved.append(path)
    return saved


def run_search(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    faces = make_operator(cfg, args).search(args.photo, args.limit)
    for i, face in enumerate(faces):
        if face.rejected:
            out.line(f"face {i} {face.box}: not searched ({face.rejected})")
            continue
        out.line(f"face {i} {face.box}: " + ("no enrolled or unknown person matches" if not face.found else
                                              f"{plural(len(face.found), 'match')}"))
        for f in face.found:
            out.line(f"  {f.kind:<8} {f.id:<24} similarity {f.similarity:.3f} (threshold {f.threshold:.3f})")
            for seen in f.sightings:
                out.line(f"    seen {when(seen.sighting.time)} on {seen.sighting.camera} "
                         f"({seen.sighting.track}), similarity {seen.similarity:.3f}")
    if not faces:
        out.line(f"{args.photo}: no face found")
    out.result({"command": "search", "gallery": args.gallery, "photo": str(args.photo),
                "faces": [f.as_dict() for f in faces]})
    return 0


def run_reject(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    operator = make_operator(cfg, args)
    if args.face is not None or args.not_name is not None:
        if args.event_id or args.face is None or args.not_name is None:
            raise ConfigError("reject takes EVENT_ID, or --face PHOTO with --not NAME")
        name, added = args.not_name, operator.reject_photo(args.face, args.not_name)
        source = str(args.face)
    elif args.event_id:
        (name, added), source = operator.reject_event(args.event_id), args.event_id
    else:
        raise ConfigError("reject needs EVENT_ID, or --face PHOTO --not NAME")
    out.line(f"{source}: is not {name!r}; {plural(added, 'negative template')} added "
             "(that face and faces closer to it than to the person are refused the name)")
    out.result({"command": "reject", "gallery": args.gallery, "name": name, "source": source, "added": added})
    return 0


def run_auto(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    from pipeline.gallery.identity import is_auto

    operator = make_operator(cfg, args)
    if args.action == "remove":
        removed = operator.remove_auto_templates(args.name)
        for name, count in removed.items():
            out.line(f"{name}: {plural(count, 'self-enrolled template')} removed")
        out.result({"command": "auto remove", "gallery": args.gallery, "removed": removed})
        return 0
    counts = {}
    for identity in operator.store.identities():
        found = operator.store.read_full(identity.id)
        counts[identity.name] = sum(is_auto(t) for t in found[1]) if found else 0
    for name, count in counts.items():
        out.line(f"{name}: {plural(count, 'self-enrolled template')}")
    out.result({"command": "auto list", "gallery": args.gallery, "auto_templates": counts})
    return 0


def run_keys(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    """API keys of the console (serve.py): stored hashed in Redis; a new key is printed once, never again."""
    from pipeline.app.console import api_keys

    keys = api_keys(cfg, args.redis_url)
    if args.action == "create":
        key_id, key = keys.create(args.role)
        if out.as_json:
            print(json.dumps({"key": key, "id": key_id, "role": args.role}))
        else:
            print(key)
            print(f"key {key_id} ({args.role}) created; it is shown only now: store it, or revoke it and create "
                  "another", file=sys.stderr)
    elif args.action == "list":
        records = keys.list()
        out.line(f"{'KEY ID':<14} {'ROLE':<7} {'CREATED':<24} LAST USED")
        for r in records:
            out.line(f"{r.id:<14} {r.role:<7} {when(r.created):<24} {when(r.last_used) if r.last_used else '-'}")
        out.line(plural(len(records), "key"))
        out.result({"command": "keys list", "keys": [r.as_dict() for r in records]})
    else:
        if not keys.revoke(args.key_id):
            raise ConfigError(f"no API key {args.key_id!r} (enroll.py keys list shows them)")
        out.line(f"revoked key {args.key_id}: its requests and browser sessions are refused from now on")
        out.result({"command": "keys revoke", "id": args.key_id, "revoked": True})
    return 0


def run_migrate(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    """Re-embed the gallery for the --model card into another gallery (pipeline/app/migration.py)."""
    from pipeline.app.migration import NEED_NEW_PHOTOS, open_migration
    from pipeline.app.services import make_embedder, redis_client, write_safety
    from pipeline.core.model_card import load_card
    from pipeline.recognise.embedder import DEFAULT_MODEL

    card = load_card(args.model)  # a bad card fails here, before Redis or the model is touched
    migration = open_migration(redis_client(cfg, args.redis_url), args.gallery, card,
                               lambda: make_embedder(cfg, args.model), into=args.into,
                               old_cards=[args.model.parent, DEFAULT_MODEL.parent], from_model=args.from_model,
                               dry_run=args.dry_run, **write_safety(cfg))
    people, into = [], migration.target.gallery
    with tqdm(migration.people(), unit="person", desc="migrating", file=sys.stderr, disable=None,
              leave=False) as bar:
        for identity in bar:
            people.append(migration.migrate(identity))
            out.line(people[-1].line(into, args.dry_run))
    report = migration.report(people)
    for line in report.lines():
        out.line(line)
    out.result(report.as_dict())
    return EXIT_NEED_NEW_PHOTOS if report.of(NEED_NEW_PHOTOS) else 0


COMMANDS = {"add": run_add, "list": run_list, "show": run_show, "rename": run_rename, "remove": run_remove,
            "export": run_export, "import": run_import, "unknowns": run_unknowns, "search": run_search,
            "reject": run_reject, "auto": run_auto, "keys": run_keys, "events": site_commands.run_events,
            "cameras": site_commands.run_cameras, "migrate": run_migrate}


# -- command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from pipeline.recognise.embedder import DEFAULT_MODEL
    from pipeline.recognise.enrollment import VIDEO_EVERY, VIDEO_MAX_FRAMES, VIDEO_TEMPLATES

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
    add.add_argument("--video-templates", type=int, default=VIDEO_TEMPLATES, metavar="K",
                     help="keep the K most diverse accepted frames of each video as templates "
                          f"(default {VIDEO_TEMPLATES}; 0 keeps every accepted frame)")
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
    add_unknowns_parser(commands, json_too)
    search = commands.add_parser("search", parents=[json_too], help="who is in this photo, and where seen")
    search.add_argument("photo", type=Path)
    search.add_argument("--limit", type=int, default=10, help="sightings listed per match")
    reject = commands.add_parser("reject", parents=[json_too], help="this face is not the person it was named")
    reject.add_argument("event_id", nargs="?", help="an identity_confirmed event id")
    reject.add_argument("--face", type=Path, help="a photo of the face instead of an event")
    reject.add_argument("--not", dest="not_name", metavar="NAME", help="the identity it is not (with --face)")
    auto = commands.add_parser("auto", parents=[json_too], help="self-enrolled templates")
    auto_actions = auto.add_subparsers(dest="action", required=True, metavar="ACTION")
    auto_actions.add_parser("list", parents=[json_too], help="self-enrolled templates per person")
    auto_actions.add_parser("remove", parents=[json_too], help="remove them (one person, or everyone)"
                            ).add_argument("name", nargs="?", default=None)
    add_keys_parser(commands, json_too)
    add_migrate_parser(commands, json_too)
    site_commands.add_events_parser(commands, json_too)
    site_commands.add_cameras_parser(commands, json_too)
    return parser


def add_migrate_parser(commands, json_too) -> None:
    migrate = commands.add_parser("migrate", parents=[json_too], help="re-embed the gallery for a new model")
    # Also accepted before the command, like every --model; SUPPRESS keeps the global one when not given here.
    migrate.add_argument("--model", type=Path, default=argparse.SUPPRESS, help="the new model's card (JSON)")
    migrate.add_argument("--into", default=None, help="target gallery (default: <gallery>.<new model_id>)")
    migrate.add_argument("--from-model", type=Path, default=None,
                         help="the gallery's model's card (default: found by fingerprint beside --model, in models/)")
    migrate.add_argument("--dry-run", action="store_true", help="check and report; write nothing")


def add_keys_parser(commands, json_too) -> None:
    keys = commands.add_parser("keys", parents=[json_too], help="API keys of the console: create, list, revoke")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("create", parents=[json_too], help="a new key, printed once"
                       ).add_argument("--role", choices=("admin", "viewer"), required=True)
    actions.add_parser("list", parents=[json_too], help="every key (never its secret)")
    actions.add_parser("revoke", parents=[json_too], help="refuse a key from now on").add_argument("key_id")


def add_unknowns_parser(commands, json_too) -> None:
    unknowns = commands.add_parser("unknowns", parents=[json_too], help="unknown people: list, show, name, ...")
    actions = unknowns.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[json_too], help="every unknown person")
    show = actions.add_parser("show", parents=[json_too], help="one unknown person's sightings")
    show.add_argument("id")
    show.add_argument("--crops", type=Path, default=None, help="write the face crops (JPEG) to this folder")
    name = actions.add_parser("name", parents=[json_too], help="enrol an unknown person under a name")
    name.add_argument("id")
    name.add_argument("name")
    merge = actions.add_parser("merge", parents=[json_too], help="two unknown ids are one person")
    merge.add_argument("keep")
    merge.add_argument("other")
    actions.add_parser("forget", parents=[json_too], help="delete an unknown person and every face of them"
                       ).add_argument("id")
    actions.add_parser("purge", parents=[json_too], help="delete sightings past their retention now")


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
