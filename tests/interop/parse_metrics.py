"""Parses a Prometheus text exposition (stdin) with the reference parser of the
official Python client and prints its families as JSON: name, type, help, samples.
A malformed exposition raises, and the test that runs this fails."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append(
        {
            "name": f.name,
            "type": f.type,
            "help": f.documentation,
            "samples": [[s.name, s.labels, s.value] for s in f.samples],
        }
    )
json.dump(families, sys.stdout)
