#!/usr/bin/env bash
# The Debian cloud image benchmark (issue 13; docs/lab.md, "The Debian cloud image"): in one lab,
# the debian recipe's qcow2 boots to cloud-init's "Cloud-init v. ... finished" line on the serial
# console
#   - under yunhe: `openstack server create` (config drive, user data) until the line shows in
#     the console log: the API, the root disk's copy, disk boot and the guest's whole boot;
#   - under QEMU q35 + OVMF (Debian's qemu-system-x86 and ovmf, accel=kvm in the lab): QEMU's
#     start until the line shows in its serial log, with a config drive made here (the same
#     user data); OVMF boots the image through its ESP's systemd-boot and the same BLS entry;
# alternated ROUNDS times (default 1), then the medians and their ratio (the goal: yunhe <= 0.5x).
#
#   tests/lab/bench-debian.sh [ROUNDS]
#
# Not a timed test and not in scripts/test: about 8-15 minutes a boot on a busy 2-core machine.
# Env: YUNHE_BIN, OUT, YUNHE_VENV, LAB_KEEP=DIR, LAB_SERVE_CPUS (here empty unless set).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SUITE=lab-bench-debian
OUT=${OUT:-$root/out}
rounds=${1:-1}
export LAB_MEM=${LAB_MEM:-6144} LAB_WAIT=${LAB_WAIT:-$((rounds * 2 * 1900 + 600))}
# unpinned unless asked (client.sh pins serve to lab CPU 1): the QEMU baseline gets both lab CPUs
LAB_SERVE_CPUS=${LAB_SERVE_CPUS-}
# shellcheck source=tests/lab/client.sh
. "$here/client.sh"
LIMIT=1800
FINISHED='Cloud-init v\. [^ ]+ finished at'

if [ ! -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || ! command -v genisoimage >/dev/null; then
    (RECIPE=bench-debian; . "$root/image-recipes/lib.sh"; need_pkgs ovmf genisoimage) || { fail "install ovmf, genisoimage"; finish; }
fi
[ -f "$OUT/debian/manifest.json" ] || "$root/image-recipes/build" debian "$OUT/debian" >"$out" 2>&1 \
    || { fail "image-recipes/build debian"; finish; }

# QEMU, its libraries, OVMF, the image and a config drive, through the lab's /out share
b=$share/bench
mkdir -p "$b/qemu/lib" "$b/qemu/share"
cp /usr/bin/qemu-system-x86_64 "$b/qemu/"
ldd /usr/bin/qemu-system-x86_64 | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u |
    while read -r lib; do cp -L "$lib" "$b/qemu/lib/"; done
for f in /usr/share/qemu/kvmvapic.bin /usr/share/qemu/linuxboot_dma.bin; do cp -L "$f" "$b/qemu/share/"; done
cp /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd "$b/"
ln "$OUT/debian/debian-12.qcow2" "$b/debian-12.qcow2" 2>/dev/null || cp "$OUT/debian/debian-12.qcow2" "$b/"
cat >"$work/user-data" <<'EOF'
#cloud-config
runcmd:
  - [ sh, -c, 'echo "yunhe-ud: host=$(hostname)" >/dev/ttyS0' ]
EOF
mkdir -p "$work/cd/openstack/latest"
cat >"$work/cd/openstack/latest/meta_data.json" <<'JSON'
{"uuid": "5d1f0f55-7a4c-4d8e-9a51-0d3c0e6b1f20", "name": "qemu-ovmf", "hostname": "qemu-ovmf",
 "launch_index": 0, "availability_zone": "nova", "project_id": "p", "devices": []}
JSON
cp "$work/user-data" "$work/cd/openstack/latest/user_data"
genisoimage -quiet -V config-2 -r -J -o "$b/config.iso" "$work/cd" 2>"$out" || { fail "genisoimage"; finish; }

lab_start --disk-allocation-ratio 8 --min-free-space 64M
lab_login
upload_recipe_image debian
check "flavor create deb.1g (1 GiB, 1 vCPU, 3 GiB disk)" openstack flavor create --ram 1024 --vcpus 1 --disk 3 deb.1g -f json
# the lab's copies (tmpfs), outside the timings
if labsh 600 'cp -a /out/bench/qemu /tmp/qemu && cp /out/bench/debian-12.qcow2 /tmp/deb-base.qcow2 && cp /out/bench/config.iso /out/bench/OVMF_CODE_4M.fd /tmp/ && echo copied' >"$out" 2>&1; then
    pass "QEMU, OVMF and the image copied into the lab"
else fail "QEMU, OVMF and the image copied into the lab"; finish; fi

# qemu_round: in the lab, QEMU q35 + OVMF on a fresh copy of the image; prints the seconds from
# QEMU's start to cloud-init's finished line on its serial port.
qemu_round='
cp /tmp/deb-base.qcow2 /tmp/deb.qcow2 && cp /out/bench/OVMF_VARS_4M.fd /tmp/vars.fd && rm -f /tmp/q.log
Q=/tmp/qemu
s=$(cut -d" " -f1 /proc/uptime)
"$Q/lib/ld-linux-x86-64.so.2" --library-path "$Q/lib" "$Q/qemu-system-x86_64" -L "$Q/share" \
    -M q35,accel=kvm,smm=off -cpu host -m 1024 -smp 1 -nodefaults -no-user-config -display none -vga none \
    -drive if=pflash,format=raw,readonly=on,file=/tmp/OVMF_CODE_4M.fd -drive if=pflash,format=raw,file=/tmp/vars.fd \
    -drive file=/tmp/deb.qcow2,if=virtio,format=qcow2 -drive file=/tmp/config.iso,if=virtio,format=raw,readonly=on \
    -serial file:/tmp/q.log </dev/null >/tmp/qemu.out 2>&1 &
qp=$!
ok=0
while kill -0 $qp 2>/dev/null; do
    if grep -Eq "Cloud-init v\. [^ ]+ finished at" /tmp/q.log 2>/dev/null; then ok=1; break; fi
    e=$(cut -d" " -f1 /proc/uptime)
    [ $(awk -v a="$s" -v b="$e" "BEGIN{print int(b-a)}") -ge '"$LIMIT"' ] && break
    sleep 1
done
e=$(cut -d" " -f1 /proc/uptime)
kill -9 $qp 2>/dev/null; wait $qp 2>/dev/null
rm -f /tmp/deb.qcow2
if [ $ok = 1 ]; then awk -v a="$s" -v b="$e" "BEGIN{printf \"%.1f\n\", b-a}"; else echo "no finished line; serial tail:"; tail -n 15 /tmp/q.log; tail -n 5 /tmp/qemu.out; exit 1; fi
'
: >"$work/yunhe.times"; : >"$work/qemu.times"
for r in $(seq "$rounds"); do
    lab_alive
    t0=$(now)
    if openstack server create --image "$img_name" --flavor deb.1g --nic none --config-drive true \
        --user-data "$work/user-data" "bench$r" -f json >"$out" 2>&1; then
        id=$(json 'd["id"]' 2>/dev/null)
        if "$py" "$here/nova.py" console "$id" "$FINISHED" 1 "$LIMIT" >"$out" 2>&1; then
            y=$(dt "$t0" "$(now)"); echo "$y" >>"$work/yunhe.times"
            pass "round $r: yunhe: server create -> cloud-init finished in $y s"
        else fail "round $r: yunhe: cloud-init finished within $LIMIT s"; fi
        step "server delete bench$r" "$id" GONE 60 openstack server delete "$id"
    else fail "round $r: server create"; fi
    lab_alive
    if q=$(labsh $((LIMIT + 120)) "$qemu_round" 2>&1); then
        echo "$q" >>"$work/qemu.times"
        pass "round $r: QEMU q35 + OVMF: start -> cloud-init finished in $q s"
    else echo "$q" >"$out"; fail "round $r: QEMU q35 + OVMF: cloud-init finished within $LIMIT s"; fi
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
ym=$(median <"$work/yunhe.times"); qm=$(median <"$work/qemu.times")
echo "# yunhe: $(tr '\n' ' ' <"$work/yunhe.times")s; QEMU + OVMF: $(tr '\n' ' ' <"$work/qemu.times")s"
if [ -n "$ym" ] && [ -n "$qm" ]; then
    echo "# medians: yunhe $ym s, QEMU q35 + OVMF $qm s, ratio $(awk -v a="$ym" -v b="$qm" 'BEGIN{printf "%.2f", a/b}') (goal <= 0.5)"
fi
finish
