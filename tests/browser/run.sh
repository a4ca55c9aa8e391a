#!/usr/bin/env bash
# The dashboard in a real browser: Debian's chromium (headless) driven by Selenium through
# chromium-driver, against a freshly started `yunhe serve` (tests/openstack/start-server.sh).
#   tests/browser/run.sh
# Installs chromium, chromium-driver and fonts-noto-cjk with apt-get when missing (as scripts/install-deps
# does) and Selenium (tests/browser/requirements.txt) into the tests' venv
# (tests/openstack/venv.sh; YUNHE_BROWSER_VENV names another venv instead). Prepares, with
# the openstack CLI, the echo guest's images (as tests/openstack/compute-cli.sh), a member
# user and a server named with markup; then runs tests/browser/flows.py, which saves a
# screenshot per page under tests/browser/out/ and prints the first-visit weight and the
# time to an interactive instances page. Ends with `browser: N passed, M failed`.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${YUNHE_BROWSER_OUT:-$here/out}"
rm -rf "$out"
mkdir -p "$out"

# --- the browser ---------------------------------------------------------------------
missing=()
# fonts-noto-cjk: the 简体中文 screenshots show characters, not boxes.
for p in chromium chromium-driver fonts-noto-cjk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "browser: installing ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { echo "browser: apt-get install ${missing[*]} failed"; echo "browser: 0 passed, 1 failed"; exit 1; }
fi

# --- Selenium, in the tests' venv -------------------------------------------------------
venv="$("$repo/tests/openstack/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "browser: 0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
bvenv="${YUNHE_BROWSER_VENV:-$venv}"
[ -x "$bvenv/bin/python" ] || python3 -m venv "$bvenv"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$bvenv/.yunhe-browser.sha256" 2>/dev/null)" != "$want" ]; then
    "$bvenv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
        || { echo "pip install selenium failed"; echo "browser: 0 passed, 1 failed"; exit 1; }
    echo "$want" >"$bvenv/.yunhe-browser.sha256"
fi

# --- the server and what the flows need ---------------------------------------------------
. "$repo/tests/openstack/start-server.sh"
bin="${YUNHE_BIN:-$repo/target/release/yunhe}"
vmm_cleanup() {
    local tmp="$_yunhe_tmp"
    [ -n "$tmp" ] && yunhe_kill_vmms "$tmp"
    return 0
}
yunhe_on_exit vmm_cleanup
if ! yunhe_start_server; then echo "FAIL server start"; echo "browser: 0 passed, 1 failed"; exit 1; fi
work="$_yunhe_tmp/work"
mkdir -p "$work"
log="$out/setup.log"
setup() { echo "+ $*" >>"$log"; "$@" >>"$log" 2>&1 || { echo "FAIL setup: $*"; tail -n 20 "$log"; echo "browser: 0 passed, 1 failed"; exit 1; }; }
id_of() { "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

with_kvm=0
if { : <>/dev/kvm; } 2>/dev/null; then with_kvm=1; fi
setup "$bin" vm guest echo -o "$work/echo.elf"
truncate -s 1M "$work/disk.raw"
kernel_id="$(openstack image create --disk-format aki --container-format aki --file "$work/echo.elf" k -f json | id_of)"
[ -n "$kernel_id" ] || { echo "FAIL setup: kernel image"; echo "browser: 0 passed, 1 failed"; exit 1; }
setup openstack image create --disk-format raw --container-format bare --property "kernel_id=$kernel_id" --file "$work/disk.raw" img
# The external network the router and floating IP flows use.
setup openstack network create --external public
setup openstack subnet create --network public --subnet-range 203.0.113.0/24 public-sub
setup openstack project create demo
setup openstack user create --project demo --password s3cret-Member member1
setup openstack role add --project demo --user member1 member
# admin in demo too: the project switcher's flow moves between the two.
setup openstack role add --project demo --user admin admin
# An image of another project's for the admin's All Images page (no data: it stays queued).
setup openstack --os-project-name demo image create --disk-format raw --container-format bare --private demo-img
# 1,000 real servers for the instances page's number, in their own project "bulk": a
# flavor no host can take, so Nova's scheduler leaves them in ERROR without starting a VM.
setup openstack project create bulk
setup openstack role add --project bulk --user admin admin
setup openstack quota set --instances 1000 --cores 1000 --ram -1 bulk
setup openstack flavor create --private --project bulk --ram 67108864 --vcpus 1 --disk 1 no-host
bulk_kernel="$(openstack --os-project-name bulk image create --disk-format aki --container-format aki --file "$work/echo.elf" bulk-kernel -f json | id_of)"
setup openstack --os-project-name bulk image create --disk-format raw --container-format bare --property "kernel_id=$bulk_kernel" --file "$work/disk.raw" bulk-img
setup openstack --os-project-name bulk server create --image bulk-img --flavor no-host --nic none --min 1000 --max 1000 bulk
xss='<img src=x onerror=alert(1)>'
if [ "$with_kvm" = 1 ]; then
    setup openstack server create --image img --flavor m1.nano --nic none "$xss"
else
    # Without KVM the server goes to ERROR, which is enough to render its name.
    openstack server create --image img --flavor m1.nano --nic none "$xss" >>"$log" 2>&1 || true
fi

# Everything the dashboard serves, gzip-compressed as the server sends it.
total=0
for f in $(cd "$repo/web" && find . -type f | sed 's|^\./||'); do
    n="$(curl -s --compressed -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "$YUNHE_URL/ui/$f")"
    total=$((total + n))
done
echo "# all dashboard files, gzip: $((total / 1024)) KB ($(find "$repo/web" -type f | wc -l) files, $(( $(cat $(find "$repo/web" -type f) | wc -c) / 1024 )) KB uncompressed)"
headers="$(curl -s -D - -o /dev/null "$YUNHE_URL/")"
if grep -qi "^content-security-policy: default-src 'none'; script-src 'self'" <<<"$headers"; then csp=ok; else csp=missing; fi

YUNHE_URL="$YUNHE_URL" YUNHE_ADMIN_PASSWORD="$YUNHE_ADMIN_PASSWORD" MEMBER_USER=member1 MEMBER_PASSWORD=s3cret-Member \
    XSS_NAME="$xss" WITH_KVM="$with_kvm" OUT="$out" SE_OFFLINE=true \
    "$bvenv/bin/python" "$here/flows.py"
rc=$?
echo "# CSP header on /: $csp"
echo "# screenshots: $out"
[ "$csp" = ok ] || rc=1
exit $rc
