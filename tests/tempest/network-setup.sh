#!/usr/bin/env bash
# Makes the external network tempest's router and floating IP tests use (`public`, with
# a subnet of floating addresses) and prints the tempest.conf setting naming it. Run by
# run.sh (YUNHE_TEMPEST_SETUP) with the server's OS_CLIENT_CONFIG_FILE / OS_CLOUD.
set -euo pipefail
net="$(openstack network create --external public -f value -c id)"
openstack subnet create --network public --subnet-range 172.24.4.0/24 public-subnet -f value -c id >/dev/null
cat <<CONF

# Written by tests/tempest/network-setup.sh.
[network]
public_network_id = $net
floating_network_name = public
CONF
