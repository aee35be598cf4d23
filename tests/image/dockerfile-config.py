#!/usr/bin/env python3
"""Prints, one per line, the tests/node/mkimage.py arguments that give an image the
configuration the final stage of a Dockerfile declares: --entrypoint, --cmd, --user,
--expose and --label (with ${ARG} replaced by the stage's ARG defaults).

    tests/image/dockerfile-config.py Dockerfile
    tests/image/dockerfile-config.py --copies Dockerfile   # "SRC DEST" of each COPY --from

Understands the instructions the repository's Dockerfile uses; anything else in the final
stage that would change the image (ENV, WORKDIR, VOLUME, ...) is refused, so the image built
without Docker cannot silently differ. tests/node_tier.rs checks the result against
testkit's own parser (Dockerfile::final_config) on the built archive.
"""

import json
import re
import sys


def instructions(text):
    """Yields (KEYWORD, args) with continuation lines joined and comments dropped."""
    current = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        yield keyword.upper(), args.strip()
        current = ""


def label_pairs(args):
    """k="v" k2=v2 pairs of a LABEL."""
    pairs = []
    for m in re.finditer(r'\s*([^=\s]+)=("([^"]*)"|(\S*))', args):
        pairs.append((m.group(1), m.group(3) if m.group(3) is not None else m.group(4)))
    return pairs


def main():
    copies = sys.argv[1:2] == ["--copies"]
    path = sys.argv[2:] if copies else sys.argv[1:]
    if len(path) != 1:
        sys.exit("usage: dockerfile-config.py [--copies] DOCKERFILE")
    with open(path[0], encoding="utf-8") as f:
        stages = []
        for keyword, args in instructions(f.read()):
            if keyword == "FROM":
                stages.append([])
            elif stages:
                stages[-1].append((keyword, args))
    if not stages:
        sys.exit("dockerfile-config: no FROM")
    out, copied, arg_defaults = [], [], {}
    for keyword, args in stages[-1]:
        if keyword == "ARG":
            name, sep, default = args.partition("=")
            if sep:
                arg_defaults[name.strip()] = default.strip()
        elif keyword in ("ENTRYPOINT", "CMD"):
            value = json.loads(args)  # exec form only: a shell form needs a shell in the image
            out += [f"--{keyword.lower()}", json.dumps(value)]
        elif keyword == "USER":
            out += ["--user", args]
        elif keyword == "EXPOSE":
            for port in args.split():
                out += ["--expose", port if "/" in port else port + "/tcp"]
        elif keyword == "LABEL":
            for key, value in label_pairs(args):
                for name, default in arg_defaults.items():
                    value = value.replace("${" + name + "}", default)
                out += ["--label", f"{key}={value}"]
        elif keyword == "COPY":
            words = args.split()
            if len(words) != 3 or not words[0].startswith("--from="):
                sys.exit(f"dockerfile-config: only COPY --from=STAGE SRC DEST is reproduced: {args}")
            copied.append(f"{words[1]} {words[2]}")
        else:
            sys.exit(f"dockerfile-config: {keyword} in the final stage is not reproduced")
    if copies:
        print("\n".join(copied))
        return
    for arg in out:
        if "\n" in arg:
            sys.exit(f"dockerfile-config: newline in {arg!r}")
        print(arg)


if __name__ == "__main__":
    main()
