#!/usr/bin/env python3
"""Writes one layered synthetic DAG as a ripcord runbook, a Makefile, a build.ninja and a
Terraform configuration (terraform/main.tf: `terraform_data` resources with a `local-exec`
provisioner, which need no provider download).

N steps in layers of width W; each step after the first layer needs 1-2 steps of the layer
before it (seeded, so every run builds the same DAG). Each step runs `true`; with KIND `noop`
the runbook's steps are `assert.that: true` instead, which reach no process: what is left is
the executor's own cost (scheduling, rendering, journal).

usage: gen-dag.py N W OUT_DIR [SEED] [KIND] [CONCURRENCY]
"""
import os
import random
import sys


def main():
    n, width, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    kind = sys.argv[5] if len(sys.argv) > 5 else "true"
    concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    action = ("uses: assert.that, with: { that: true }" if kind == "noop"
              else "uses: shell.run, with: { argv: [\"true\"] }")
    os.makedirs(out, exist_ok=True)
    needs = []
    for i in range(n):
        layer = i // width
        if layer == 0:
            needs.append([])
            continue
        prev = range((layer - 1) * width, min(layer * width, n))
        needs.append(sorted(set(rng.sample(prev, min(len(prev), rng.randint(1, 2))))))

    with open(os.path.join(out, "dag.yaml"), "w") as f:
        f.write(f"version: 1\nname: dag-{n}\nconcurrency: {concurrency}\nsteps:\n")
        for i, deps in enumerate(needs):
            line = f"  - {{ id: s{i}, {action}"
            if deps:
                line += ", needs: [" + ", ".join(f"s{d}" for d in deps) + "]"
            f.write(line + f", sim: {{ duration: {1 + rng.randint(0, 9)}s }} }}\n")

    with open(os.path.join(out, "Makefile"), "w") as f:
        f.write(".PHONY: all " + " ".join(f"s{i}" for i in range(n)) + "\n")
        f.write("all: " + " ".join(f"s{i}" for i in range(n)) + "\n")
        for i, deps in enumerate(needs):
            f.write(f"s{i}: " + " ".join(f"s{d}" for d in deps) + "\n\t@true\n")

    # Outputs are never created, so ninja runs every edge on every invocation, as make does.
    with open(os.path.join(out, "build.ninja"), "w") as f:
        f.write("rule t\n  command = true\n")
        for i, deps in enumerate(needs):
            implicit = (" | " + " ".join(f"s{d}" for d in deps)) if deps else ""
            f.write(f"build s{i}: t{implicit}\n")
        f.write("build all: phony " + " ".join(f"s{i}" for i in range(n)) + "\ndefault all\n")

    os.makedirs(os.path.join(out, "terraform"), exist_ok=True)
    with open(os.path.join(out, "terraform", "main.tf"), "w") as f:
        for i, deps in enumerate(needs):
            f.write(f'resource "terraform_data" "s{i}" {{\n')
            if deps:
                f.write("  depends_on = [" + ", ".join(f"terraform_data.s{d}" for d in deps) + "]\n")
            f.write('  provisioner "local-exec" {\n    command = "true"\n  }\n}\n')


if __name__ == "__main__":
    main()
