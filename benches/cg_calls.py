#!/usr/bin/env python3
"""Calls to one function in callgrind output files (summed over all callers and files).
Usage: cg_calls.py FUNCTION FILE...   e.g. cg_calls.py malloc cg.out.1234"""
import re
import sys

want, files = sys.argv[1], sys.argv[2:]
total = 0
for path in files:
    names: dict = {}
    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    callee = names.get(m.group(1))
                else:
                    callee = line[4:].strip()
            elif line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls=") and callee == want:
                total += int(line[6:].split()[0])
print(total)
