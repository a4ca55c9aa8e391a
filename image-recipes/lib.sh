# Shared helpers for image recipes. Sourced by image-recipes/build; not run on its own.
# shellcheck shell=bash

YUNHE_CACHE=${YUNHE_CACHE:-$HOME/.cache/yunhe}
RECIPES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[%s %s] %s\n' "${RECIPE:-build}" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${RECIPE:-build}" "$*" >&2; exit 1; }

apt_updated=0
# need_pkgs PKG...: install the Debian packages that are not installed yet.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); run as root or install them first"
    log "installing Debian packages: ${missing[*]}"
    if [ "$apt_updated" -eq 0 ] && ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=900 update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
        -o Dpkg::Use-Pty=0 \
        --no-install-recommends "${missing[@]}" >"$YUNHE_CACHE/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (see $YUNHE_CACHE/apt.log)"
}

# fetch_deb PKG: download PKG's .deb (candidate version) into the cache, print its path.
fetch_deb() {
    local pkg=$1 ver file dir="$YUNHE_CACHE/debs"
    mkdir -p "$dir"
    ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        apt-get -o DPkg::Lock::Timeout=900 update -qq || die "apt-get update failed"
        ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
    fi
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "package $pkg not found in the Debian archive"
    file=$(ls "$dir/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$file" ]; then
        log "downloading $pkg $ver"
        (cd "$dir" && apt-get -o APT::Sandbox::User=root download -qq "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
        file=$(ls "$dir/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
        [ -n "$file" ] || die "downloaded $pkg but cannot find its .deb in $dir"
    fi
    printf '%s\n' "$file"
}

# deb_version PKG: the candidate version of PKG in the archive.
deb_version() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }

# write_manifest OUTDIR META_JSON: META_JSON is a JSON object with the recipe's metadata and
# "images" (Glance images to create); the files list with sizes and sha256 is added here.
write_manifest() {
    local outdir=$1 meta=$2
    python3 - "$outdir" "$meta" <<'PY'
import hashlib, json, os, sys
outdir, meta = sys.argv[1], json.loads(sys.argv[2])
files = []
for root, _, names in os.walk(outdir):
    for n in sorted(names):
        p = os.path.join(root, n)
        rel = os.path.relpath(p, outdir)
        if rel == "manifest.json" or os.path.islink(p):
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        files.append({"name": rel, "size": os.path.getsize(p), "sha256": h.hexdigest()})
files.sort(key=lambda f: f["name"])
names = {f["name"] for f in files}
for img in meta.get("images", []):
    if img["file"] not in names:
        sys.exit(f"manifest: image {img['name']} refers to missing file {img['file']}")
meta["files"] = files
with open(os.path.join(outdir, "manifest.json.tmp"), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=False)
    f.write("\n")
os.replace(os.path.join(outdir, "manifest.json.tmp"), os.path.join(outdir, "manifest.json"))
PY
}
