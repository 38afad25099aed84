"""``ctpipe config schema|show``: the JSON Schema of ctpipe.yaml, and the effective configuration."""
from __future__ import annotations

import json
import os

from core.errors import EXIT_OK
from pipeline.cli.common import add_command, add_group, emit


def register(subparsers) -> None:
    actions = add_group(subparsers, "config", "the config file's JSON Schema and the effective configuration",
                        "config_command",
                        description="ctpipe.yaml (pipeline/config.py documents every key; examples/ctpipe.yaml is "
                                    "a complete example): print its JSON Schema, or the configuration a command "
                                    "would run with.")
    add_command(actions, "schema", "print the JSON Schema of ctpipe.yaml (for editors and CI)", run_schema,
                description="Print the JSON Schema (draft 2020-12) of ctpipe.yaml: every key with its type, "
                            "default and description; unknown keys are not allowed. Save it and point your editor "
                            "at it (e.g. a `# yaml-language-server: $schema=ctpipe.schema.json` first line), or "
                            "check files with `check-jsonschema --schemafile ctpipe.schema.json ctpipe.yaml`.",
                uses_storage=False)
    add_command(actions, "show", "print the effective configuration (defaults filled in, secrets redacted)",
                run_show,
                description="Print the configuration commands run with: --config FILE, else ./ctpipe.yaml, else "
                            "the built-in defaults, with every default filled in (YAML; JSON with --json). "
                            "Passwords inside URLs are shown as ***; Kafka secrets are names of environment "
                            "variables or mounted files, shown as names, never read.",
                uses_storage=False)


def run_schema(args, ctx) -> int:
    from pipeline.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def run_show(args, ctx) -> int:
    import yaml

    from pipeline.config import DEFAULT_CONFIG_FILE, redacted

    data = redacted(ctx.config)
    source = args.config or (DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else "built-in defaults")
    emit(args, data, [f"# effective ctpipe configuration from {source}", yaml.safe_dump(data, sort_keys=False).rstrip()])
    return EXIT_OK
