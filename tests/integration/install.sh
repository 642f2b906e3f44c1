#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `meson install` into a fresh prefix (a DESTDIR): the binaries, the
# manual pages generated from docs/ (readable with man), the bash
# completion (it completes commands, a daemon command's verbs and a
# command's options), and the sample cowpoold.conf, which cowpoold accepts
# with every key uncommented.
. "$(dirname "$0")/../lib.sh"
requires man meson
SRC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${CP_BUILD_ROOT:?CP_BUILD_ROOT must point to the build directory}"
cp_init
. "$SRC_ROOT/tests/integration/daemon-lib.sh"

DEST=$TMP/dest
meson install -C "$CP_BUILD_ROOT" --destdir "$DEST" --no-rebuild \
	>install.log 2>&1 || { cat install.log; fail "meson install"; cp_finish; }
found() { find "$DEST" -path "*$1" -type f | head -1; }
BIN=$(found /bin/cowpool)
SBIN=$(found /sbin/cowpoold)
MAN1=$(found /man1/cowpool.1)
MAN8=$(found /man8/cowpoold.8)
COMP=$(found /bash-completion/completions/cowpool)
SAMPLE=$(found /cowpool/cowpoold.conf.sample)
for f in BIN SBIN MAN1 MAN8 COMP SAMPLE; do
	[ -n "${!f}" ] && ok || fail "meson install put no $f under $DEST"
done
[ -x "$BIN" ] && "$BIN" --version | grep -q "^cowpool version" && ok ||
	fail "installed cowpool does not run"

# the pages: man renders them, with the sections and words of the docs
for page in "$MAN1" "$MAN8"; do
	[ -n "$page" ] || continue
	MANWIDTH=100 man -l -P cat "$page" >page.txt 2>page.err ||
		fail "man -l $page: $(cat page.err)"
	for s in NAME SYNOPSIS DESCRIPTION; do
		grep -q "^$s" page.txt && ok || fail "$page has no $s section"
	done
done
grep -q "^COWPOOL CREATE" <(MANWIDTH=100 man -l -P cat "$MAN1" 2>/dev/null) &&
	ok || fail "cowpool(1) lacks the create section of docs/cowpool.md"
# every section heading of the doc is in the page
while read -r h; do
	grep -qiF "$h" <(MANWIDTH=300 man -l -P cat "$MAN1" 2>/dev/null) ||
		fail "cowpool(1) lacks '$h'"
done < <(sed -n 's/^## //p' "$SRC_ROOT/docs/cowpool.md" | sed 's/`//g')
ok

# completion, run against the installed binary
complete_words()
{
	bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1));
		_cowpool; echo "${COMPREPLY[*]}"' _ "$COMP" "$@"
}
expect_has() { [[ " $2 " == *" $3 "* ]] && ok || fail "$1: '$3' not in '$2'"; }
expect_has "commands" "$(complete_words "$BIN" con)" convert
expect_has "daemon verbs" "$(complete_words "$BIN" volume ex)" export
expect_has "options" "$(complete_words "$BIN" convert --targ)" --target-is-zero
expect_has "verb options" "$(complete_words "$BIN" volume export --)" --rw
[[ " $(complete_words "$BIN" volume export --) " != *" --prealloc "* ]] && ok ||
	fail "volume export offers volume create's options"
expect_has "formats" "$(complete_words "$BIN" info -f q)" qcow2

# the sample: every key uncommented, with this machine's values
mkdir -p root run
sed -e 's/^#\([a-z_]* = \)/\1/' \
	-e "s|^run_dir = .*|run_dir = $TMP/run|" \
	-e "s|^socket = .*|socket = $TMP/run/api.sock|" \
	-e "s|^nbd_socket = .*|nbd_socket = $TMP/run/nbd.sock|" \
	-e "s|^file_root = .*|file_root = $TMP/root|" \
	-e "/^lvm_device = /d" -e "/^lvm_system_dir = /d" \
	-e "s|^socket_group = .*|socket_group = root|" \
	-e "s|^allowed_uids = .*|allowed_uids = nobody|" \
	-e "s|^allowed_gids = .*|allowed_gids = root|" \
	-e "s|^disk_group = .*|disk_group = root|" \
	-e "s|^sanlock = .*|sanlock = no|" \
	-e "s|^log_file = .*|log_file = $TMP/cowpoold.log|" \
	"$SAMPLE" >sample.conf
# the sample, the page's key table and cowpoold agree on the keys
sed -n 's/^#\{0,1\}\([a-z_]*\) = .*/\1/p' "$SAMPLE" | sort -u >keys.sample
sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' "$SRC_ROOT/docs/cowpoold.md" | sort -u >keys.doc
diff keys.doc keys.sample >keys.diff && ok ||
	fail "docs/cowpoold.md and the sample list other keys: $(cat keys.diff)"
grep -c '^[a-z_]* = ' sample.conf >nkeys
[ "$(cat nkeys)" -ge 20 ] && ok || fail "only $(cat nkeys) keys in the sample"
if dl_start daemon.err -c "$TMP/sample.conf"; then
	ok
	dl_stop
else
	fail "cowpoold refused the sample configuration: $(tail -3 daemon.err) $(tail -3 cowpoold.log 2>/dev/null)"
fi
cp_finish
