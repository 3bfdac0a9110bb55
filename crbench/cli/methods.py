"""`crbench methods`: list the registered cloud-removal methods and where they come from.

Listing reads installed metadata only (no plugin is imported); ``--verbose`` imports each
method to show whether it trains and what it needs, reporting a broken plugin on its own row.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list registered methods with their source package",
                       description="List the methods registered in entry-point group "
                                   "'crbench.methods' (built-in and third-party).")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="show only these methods (default: all)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="import each method to show whether it trains and what it needs")
    p.set_defaults(func=run)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _details(name: str, errors: list[str]) -> list[str]:
    from ..errors import CrbenchError
    from ..registry import get_method_class, is_trainable

    try:
        cls = get_method_class(name)
    except CrbenchError as exc:
        errors.append(f"error: {exc}")
        return ["?", "import failed (see below)"]
    needs = ",".join(sorted(n.value for n in getattr(cls, "needs", ()))) or "-"
    return ["yes" if is_trainable(cls) else "no", needs]


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..registry import conflicts, list_methods, method_names

    infos = list_methods()
    if args.names:
        known = method_names()
        for name in args.names:
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
                hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                raise UsageError(f"NAME: unknown method {name!r}{hint}; registered: "
                                 f"{', '.join(known)}")
        infos = [i for i in infos if i.name in args.names]
    if not infos:
        print("no methods registered in entry-point group 'crbench.methods'")
        return 0
    header = ["name", "source", "entry point"]
    rows = [[i.name, i.source, i.value] for i in infos]
    errors: list[str] = []
    if args.verbose:
        header += ["trains", "needs"]
        rows = [r + _details(i.name, errors) for r, i in zip(rows, infos, strict=True)]
    print(_table(header, rows))
    for line in errors:
        print(line)
    for name, claims in sorted(conflicts().items()):
        who = ", ".join(c.source for c in claims)
        print(f"warning: method {name!r} is registered by several distributions ({who}); "
              f"it cannot be used until one is removed")
    return 0
