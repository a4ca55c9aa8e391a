# debian-genericcloud: the debian recipe's image laid out like Debian's official genericcloud
# image (GPT: 1 ext4 root with /boot/grub/grub.cfg, 14 BIOS boot, 15 ESP with shim and GRUB);
# see genericcloud_disk in ../debian/recipe.sh. Outputs debian-12-genericcloud.raw and .qcow2.
# shellcheck shell=bash
DEBIAN_LAYOUT=genericcloud
# shellcheck source=../debian/recipe.sh
source "$RECIPES_DIR/debian/recipe.sh"
