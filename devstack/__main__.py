"""`python -m devstack up|down|status|env|install|corpus`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from devstack import DevstackError, config, corpus, env, install, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="A real LiveKit stack on 127.0.0.1 with sipp phones (docs/devstack.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="install Debian packages and build the LiveKit binaries")
    commands.add_parser("up", help="install if needed, start what is not running, write the env")
    down = commands.add_parser("down", help="stop what `up` started (by pid)")
    down.add_argument("parts", nargs="*", help="only these parts (default: all)")
    commands.add_parser("status", help="show each part's state")
    commands.add_parser("env", help="print the environment as shell exports")
    make_corpus = commands.add_parser(
        "corpus", help="write the labelled answering-machine corpus (clips + labels.csv)"
    )
    make_corpus.add_argument("directory", type=Path, help="folder to write it into")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install.install()
            install.say(f"installed: {', '.join(sorted(install.installed_versions()))}")
        elif args.command == "up":
            stack.up()
            for key, value in env().items():
                print(f"export {key}={value}")
        elif args.command == "down":
            stopped = stack.down(args.parts or None)
            install.say(f"stopped {', '.join(stopped)}" if stopped else "nothing to stop")
        elif args.command == "status":
            states = stack.status()
            for name, state in states.items():
                print(f"{name:15} {state}")
            if config.ENV_FILE.exists():
                print(f"{'env':15} {config.ENV_FILE}")
            return 0 if all(s.startswith("up") for s in states.values()) else 1
        elif args.command == "corpus":
            labels = corpus.generate(args.directory)
            counts = Counter(label.label for label in labels)
            install.say(
                f"{len(labels)} clips in {args.directory} ("
                + ", ".join(f"{counts[c]} {c}" for c in corpus.CLASSES)
                + f"); labels in {args.directory / corpus.LABELS_FILE}"
            )
        elif args.command == "env":
            for key, value in env().items():
                print(f"export {key}={value}")
    except DevstackError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
