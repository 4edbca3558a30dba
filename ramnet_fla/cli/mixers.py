"""`ramnet-fla mixers`: every token mixer the installed plugins register, and plugins that failed."""

from __future__ import annotations

import argparse
import json

from ramnet_fla.plugin import get_plugin_manager


def run(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    found = manager.mixers()
    if args.json:
        print(json.dumps({
            'mixers': [{'name': info.name, 'plugin': info.plugin, 'description': info.description,
                        'source': manager.sources.get(info.plugin, '')} for info in found.values()],
            'failed_plugins': manager.failures,
        }, indent=2))
        return 0
    rows = [('MIXER', 'PLUGIN', 'DESCRIPTION')] + [(i.name, i.plugin, i.description) for i in found.values()]
    widths = [max(len(row[c]) for row in rows) for c in range(2)]
    for name, plugin, description in rows:
        print(f"{name:<{widths[0]}}  {plugin:<{widths[1]}}  {description}")
    for name, message in manager.failures.items():
        print(f"\nplugin {name!r} {message}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser('mixers', help='list the token mixers of all installed plugins')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    parser.set_defaults(func=run)
