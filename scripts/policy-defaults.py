#!/usr/bin/env python3
"""Prints src/policy/defaults.rs: OpenStack's default policy rules as Rust data.

The rules (name, check string, scope types, documented operations) are read from
the released OpenStack packages through each service's own `list_rules()`, so the
data is exactly what oslo.policy registers as defaults there. Only the new
defaults are taken (`check_str`); deprecated check strings and descriptions are
left out, because yunhe enforces new defaults with scope checking on.

Services and their constants in the output:
    IDENTITY  keystone.common.policies.list_rules()
    COMPUTE   nova.policies.list_rules()
    IMAGE     glance.policies.list_rules()
    NETWORK   neutron.conf.policies.list_rules()   (needs neutron-lib as well)
    VOLUME    cinder.policies.list_rules()

How to run (needs oslo.policy and oslo.log importable, e.g. in a venv):

    python3 -m venv /tmp/policyvenv
    /tmp/policyvenv/bin/pip install oslo.policy==6.0.1 oslo.log oslo.config oslo.utils
    # either from unpacked packages (DIR/keystone/keystone/..., DIR/nova/nova/...,
    # DIR/neutron_lib/neutron_lib/... or DIR/neutron_lib/... for neutron-lib):
    /tmp/policyvenv/bin/python scripts/policy-defaults.py --ref /tmp/ref > src/policy/defaults.rs
    # or let the script `pip download --no-deps` the pinned wheels into a temp dir:
    /tmp/policyvenv/bin/python scripts/policy-defaults.py --download > src/policy/defaults.rs

The output is passed through `rustfmt --edition 2024` when rustfmt is on PATH, so
that `cargo fmt` leaves the committed file alone.

Last run with: keystone 30.0.0, nova 34.0.0, glance 33.0.0, neutron 29.0.0
(neutron-lib 5.0.1), cinder 29.0.0, oslo.policy 6.0.1, Python 3.11.
"""

import argparse
import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile

# Wheels fetched by --download; change these to regenerate for other releases.
PINNED_WHEELS = {
    "keystone": "keystone==30.0.0",
    "nova": "nova==34.0.0",
    "glance": "glance==33.0.0",
    "neutron": "neutron==29.0.0",
    "neutron_lib": "neutron-lib==5.0.1",
    "cinder": "cinder==29.0.0",
}

# (Rust constant, distribution directory, top-level package, module with list_rules, required)
SERVICES = [
    ("IDENTITY", "keystone", "keystone", "keystone.common.policies", True),
    ("COMPUTE", "nova", "nova", "nova.policies", True),
    ("IMAGE", "glance", "glance", "glance.policies", True),
    ("NETWORK", "neutron", "neutron", "neutron.conf.policies", False),
    ("VOLUME", "cinder", "cinder", "cinder.policies", False),
]


def warn(message):
    print(f"policy-defaults: {message}", file=sys.stderr)


def download_wheels(into):
    """Fetches the pinned wheels and unpacks each into INTO/<name>/."""
    for name, requirement in PINNED_WHEELS.items():
        wheel_dir = os.path.join(into, "wheels", name)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary", ":all:", "--dest", wheel_dir, requirement],
            check=True,
        )
        for wheel in glob.glob(os.path.join(wheel_dir, "*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(os.path.join(into, name))


def find_package_dir(ref, dist_dir, package):
    """The directory of PACKAGE (the one holding its __init__.py) under REF."""
    for candidate in (os.path.join(ref, dist_dir, package), os.path.join(ref, package)):
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


def find_version(ref, dist_dir, package):
    """The version from the package's *.dist-info directory name, or 'unknown'."""
    for base in (os.path.join(ref, dist_dir), ref):
        for info in sorted(glob.glob(os.path.join(base, f"{package}-*.dist-info"))):
            return os.path.basename(info)[len(package) + 1:-len(".dist-info")]
    return "unknown"


def register_bare_package(package, directory):
    """Makes PACKAGE importable from DIRECTORY without running its __init__.py.

    The top-level __init__ of neutron selects an oslo.service backend, cinder's
    imports eventlet and neutron-lib's opens its DB layer; the policy modules
    need none of that, so the top-level package is an empty module whose
    __path__ points at the unpacked sources. Subpackages import normally.
    """
    module = types.ModuleType(package)
    module.__path__ = [directory]
    module.__file__ = os.path.join(directory, "__init__.py")
    sys.modules[package] = module


def rust_string(text):
    """TEXT as a Rust string literal."""
    out = ['"']
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def rule_data(rule):
    """(name, check, scope_types, operations) of one oslo.policy RuleDefault."""
    scope_types = list(getattr(rule, "scope_types", None) or [])
    operations = []
    for operation in getattr(rule, "operations", None) or []:
        # A few keystone operations give a list of methods for one path
        # (e.g. ['HEAD', 'GET']); each becomes its own (method, path) pair.
        methods = operation["method"]
        if isinstance(methods, str):
            methods = [methods]
        operations.extend((method, operation["path"]) for method in methods)
    return rule.name, rule.check_str, scope_types, operations


def unique_rules(service, rules):
    """RULES with duplicate names removed, keeping the last definition of each."""
    last_index = {}
    for index, (name, *_rest) in enumerate(rules):
        if name in last_index:
            warn(f"{service}: rule {name!r} is defined more than once; keeping the last")
        last_index[name] = index
    return [rule for index, rule in enumerate(rules) if last_index[rule[0]] == index]


def render_rule(rule):
    name, check, scope_types, operations = rule
    scopes = ", ".join(rust_string(scope) for scope in scope_types)
    ops = ", ".join(f"({rust_string(method)}, {rust_string(path)})" for method, path in operations)
    return (
        "    DefaultRule {\n"
        f"        name: {rust_string(name)},\n"
        f"        check: {rust_string(check)},\n"
        f"        scope_types: &[{scopes}],\n"
        f"        operations: &[{ops}],\n"
        "    },\n"
    )


def format_with_rustfmt(source):
    rustfmt = shutil.which("rustfmt")
    if rustfmt is None:
        warn("rustfmt not found; printing unformatted output")
        return source
    result = subprocess.run(
        [rustfmt, "--edition", "2024", "--emit", "stdout"],
        input=source, capture_output=True, text=True,
    )
    if result.returncode != 0:
        warn(f"rustfmt failed, printing unformatted output:\n{result.stderr}")
        return source
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ref", help="directory with the unpacked packages")
    source.add_argument("--download", action="store_true",
                        help="pip download the pinned wheels into a temp dir")
    parser.add_argument("--no-rustfmt", action="store_true",
                        help="print the output without running rustfmt on it")
    args = parser.parse_args()

    temp_dir = None
    if args.download:
        temp_dir = tempfile.mkdtemp(prefix="policy-defaults-")
        download_wheels(temp_dir)
        ref = temp_dir
    else:
        ref = args.ref

    try:
        neutron_lib_dir = find_package_dir(ref, "neutron_lib", "neutron_lib")
        if neutron_lib_dir is not None:
            register_bare_package("neutron_lib", neutron_lib_dir)

        versions = []
        sections = []
        for const, dist_dir, package, module_name, required in SERVICES:
            package_dir = find_package_dir(ref, dist_dir, package)
            if package_dir is None:
                if required:
                    sys.exit(f"policy-defaults: {package} not found under {ref}")
                warn(f"{package} not found under {ref}; {const} left out")
                continue
            register_bare_package(package, package_dir)
            try:
                module = importlib.import_module(module_name)
                rules = [rule_data(rule) for rule in module.list_rules()]
            except Exception as error:  # a failed optional service is skipped, not fatal
                if required:
                    raise
                warn(f"{module_name} did not import ({error!r}); {const} left out")
                continue
            rules = unique_rules(package, rules)
            version = find_version(ref, dist_dir, package)
            if package == "neutron" and neutron_lib_dir is not None:
                lib_version = find_version(ref, "neutron_lib", "neutron_lib")
                version = f"{version} (neutron-lib {lib_version})"
            versions.append(f"{package} {version}")
            warn(f"{const}: {len(rules)} rules from {module_name}")
            body = "".join(render_rule(rule) for rule in rules)
            sections.append(f"pub const {const}: &[DefaultRule] = &[\n{body}];\n")
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)

    output = (
        f"//! Generated by scripts/policy-defaults.py from {', '.join(versions)}. Do not edit.\n"
        "\n"
        "use super::DefaultRule;\n"
        "\n"
        + "\n".join(sections)
    )
    if not args.no_rustfmt:
        output = format_with_rustfmt(output)
    sys.stdout.write(output)


if __name__ == "__main__":
    main()
