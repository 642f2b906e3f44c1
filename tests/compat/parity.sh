#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-parity: image safety and qemu-img parity on edge cases, each
# against qemu-img / qemu-io 7.2 on the same files:
#   discard  discard on a compat=0.10 overlay never shows the backing file's
#            data again (QEMU makes it a no-op)
#   probe    files in the formats qemu-img probes (vmdk, vpc, qed, vdi,
#            vhdx, parallels, qcow, luks, bochs, cloop, dmg) are refused
#            without -f, named, and left unchanged; -f raw still opens them
#   json     json:{...} backing names qemu-img writes are followed; the ones
#            cowpool does not understand are refused, never opened as files
#   create   a refused create leaves no file behind (as qemu-img) and leaves
#            an existing file alone
#   measure  sizes whose L1 table qemu-img cannot represent are refused, at
#            the same boundaries; the others print qemu-img's numbers
#   resize   sizes that are not a multiple of 512: qcow2 refuses, raw takes
#            them; --preallocation=metadata gives the new clusters no disk
#            space and no data
#   zeroes   write -z makes zero clusters / subclusters (or unallocated ones
#            in compat=0.10 without a backing file) where qemu-io does, also
#            for requests that do not cover whole clusters: same allocation
#            (qemu-img map, offsets ignored) and content as qemu-io's
#   raw512   raw files whose size is not a multiple of 512: info, map,
#            measure, compare, convert and create give qemu-img's output
#   numbers  sizes and patterns in qemu-img's grammar (0x1000, 1.5M, 0x5a)
# Usage: parity.sh [GROUP...]; no argument runs them all.

PARITY_GROUPS=" discard probe json create measure resize zeroes raw512 numbers "
for g in "$@"; do
	if [[ $PARITY_GROUPS != *" $g "* ]]; then
		echo "usage: $0 [GROUP...]; groups:$PARITY_GROUPS" >&2
		exit 2
	fi
done
[ $# -eq 0 ] || PARITY_GROUPS=" $* "
want() { [[ $PARITY_GROUPS == *" $1 "* ]]; }

. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
cp_init

# ---- discard on compat=0.10 with a backing file --------------------------------
if want discard; then
	for cs in 512 64k 2M; do
		for base_fmt in raw qcow2; do
			rm -f base.img top.qcow2 ref.qcow2
			qemu-img create -q -f $base_fmt base.img 8M
			qemu-io -f $base_fmt -c 'write -q -P 0x11 0 8M' base.img
			for t in top.qcow2 ref.qcow2; do
				qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=$cs \
					-b base.img -F $base_fmt $t 8M
				qemu-io -c 'write -q -P 0x22 0 4M' $t
			done
			"$COWPOOL" io -c 'discard -q 0 8M' top.qcow2 ||
				fail "discard on v2 cs=$cs base=$base_fmt"
			qemu-io -c 'discard -q 0 8M' ref.qcow2
			qemu-img compare -q top.qcow2 ref.qcow2 && ok ||
				fail "v2 cs=$cs base=$base_fmt: discard changed what the guest reads"
			qemu-io -c 'read -q -P 0x22 0 4M' -c 'read -q -P 0x11 4M 4M' \
				top.qcow2 >io.out 2>&1 && ! grep -q fail io.out && ok ||
				fail "v2 cs=$cs base=$base_fmt: content after discard: $(cat io.out)"
			qemu-img check -q top.qcow2 && ok || fail "check after v2 discard"
		done
	done
	# without a backing file a v2 discard deallocates (reads as zeroes)
	qemu-img create -q -f qcow2 -o compat=0.10 solo.qcow2 4M
	qemu-io -c 'write -q -P 0x33 0 4M' solo.qcow2
	"$COWPOOL" io -c 'discard -q 0 4M' solo.qcow2 || fail "discard v2 solo"
	qemu-io -c 'read -q -P 0 0 4M' solo.qcow2 >io.out 2>&1 && ! grep -q fail io.out &&
		ok || fail "v2 without backing: discarded range is not zero"
fi

# ---- format probing ----------------------------------------------------------------
if want probe; then
	for f in vmdk vpc qed vdi vhdx parallels qcow; do
		qemu-img create -q -f $f img.$f 1M
	done
	# a LUKS header (magic, version 1): qemu-img cannot open it without a
	# key, so its probe is not asked below
	printf 'LUKS\272\276\0\1' >img.luks
	truncate -s 1M img.luks
	# bochs (growing redolog v2) and cloop headers, as their drivers probe them
	{ printf 'Bochs Virtual HD Image\0\0\0\0\0\0\0\0\0\0'
	  printf 'Redolog\0\0\0\0\0\0\0\0\0Growing\0\0\0\0\0\0\0\0\0'
	  printf '\0\0\2\0'; } >img.bochs
	truncate -s 1M img.bochs
	printf '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n' >img.cloop
	truncate -s 1M img.cloop
	truncate -s 1M img.dmg
	for f in vmdk vpc qed vdi vhdx parallels qcow luks bochs cloop dmg; do
		want_fmt=$f
		[ $f = cloop ] || [ $f = bochs ] || [ $f = dmg ] || [ $f = luks ] ||
			want_fmt=$(qemu-img info --output=json img.$f 2>/dev/null |
				   sed -n 's/.*"format": "\([a-z0-9]*\)".*/\1/p' | head -1)
		expect_eq "qemu-img probes img.$f" $f "$want_fmt"
		sum=$(md5sum <img.$f)
		run_capture w "$COWPOOL" io -c 'write -q -P 0x55 0 64k' img.$f
		[ "$RC" -ne 0 ] && ok || fail "write to a $f file without -f succeeded"
		grep -q "'$f'" w.err && ok || fail "$f: error does not name the format: $(cat w.err)"
		expect_eq "$f file unchanged by a refused write" "$sum" "$(md5sum <img.$f)"
		run_capture i "$COWPOOL" info img.$f
		[ "$RC" -ne 0 ] && grep -q "'$f'" i.err && ok || fail "info on a $f file: $(cat i.out i.err)"
	done
	# -f raw opens them as raw, as qemu-img does
	cp img.vpc raw.vpc
	"$COWPOOL" io -f raw -c 'write -q -P 0x55 0 512' raw.vpc && ok || fail "-f raw write"
	qemu-io -f raw -c 'read -q -P 0x55 0 512' raw.vpc | grep -q fail && fail "-f raw write lost" || ok
	# plain raw files still probe as raw and take writes
	qemu-img create -q -f raw plain.raw 1M
	"$COWPOOL" io -c 'write -q -P 0x55 0 512' plain.raw && ok || fail "write to plain raw"
fi

# ---- json: backing names -------------------------------------------------------------
if want json; then
	qemu-img create -q -f qcow2 jbase.qcow2 1M
	qemu-io -c 'write -q -P 0x44 0 64k' jbase.qcow2
	qemu-img create -q -f raw jbase.raw 1M
	qemu-io -f raw -c 'write -q -P 0x45 0 64k' jbase.raw
	n=0
	for j in '{"driver":"qcow2","file":{"driver":"file","filename":"jbase.qcow2"}}' \
		 '{"driver":"qcow2","file.driver":"file","file.filename":"jbase.qcow2"}' \
		 '{"driver":"raw","file":{"driver":"file","filename":"jbase.raw"}}'; do
		n=$((n + 1))
		pat=0x44
		[[ $j == *raw* ]] && pat=0x45
		bf=qcow2
		[[ $j == *raw* ]] && bf=raw
		qemu-img create -q -f qcow2 -b "json:$j" -F $bf jtop$n.qcow2 1M ||
			fail "qemu-img create over json:$j"
		qemu-io -r -c "read -q -P $pat 0 64k" jtop$n.qcow2 | grep -q fail &&
			fail "qemu-io reads json:$j wrongly"
		"$COWPOOL" io -r -c "read -q -P $pat 0 64k" jtop$n.qcow2 && ok ||
			fail "cowpool does not follow json:$j"
		diff <(qemu-img info jtop$n.qcow2) <("$COWPOOL" info jtop$n.qcow2) >d.out &&
			ok || fail "info of an overlay over json:$j: $(cat d.out)"
	done
	# shapes cowpool does not understand: refused with a clear error, and no
	# file named json:... is opened or created
	for j in '{"driver":"qcow2","file":{"driver":"nbd","host":"localhost"}}' \
		 '{"driver":"vmdk","file":{"driver":"file","filename":"jbase.qcow2"}}' \
		 '{"driver":"qcow2","file":{"driver":"file","filename":"jbase.qcow2","locking":"off"}}' \
		 '{"driver":"qcow2","file":"jbase.qcow2"}' '{"driver":"qcow2",' 'not json'; do
		rm -f jbad.qcow2
		qemu-img create -q -f qcow2 -u -b "json:$j" -F qcow2 jbad.qcow2 1M
		run_capture j "$COWPOOL" io -r -c 'read -q 0 512' jbad.qcow2
		[ "$RC" -ne 0 ] && grep -q "json" j.err && ok ||
			fail "json:$j not refused: $(cat j.out j.err)"
		run_capture j "$COWPOOL" info "json:$j"
		[ "$RC" -ne 0 ] && ok || fail "info json:$j not refused"
	done
fi

# ---- refused creates leave nothing behind -----------------------------------------
if want create; then
	echo keep >exist
	n=0
	while read -r args; do
		n=$((n + 1))
		rm -f q$n c$n
		# shellcheck disable=SC2086
		qemu-img create -q $args q$n 2>/dev/null && fail "qemu-img accepted: $args"
		[ -e q$n ] && fail "qemu-img left q$n for: $args"
		# shellcheck disable=SC2086
		"$COWPOOL" create -q $args c$n 2>/dev/null && fail "cowpool accepted: $args"
		[ -e c$n ] && fail "cowpool left a file behind for: $args" || ok
	done <<-'EOF'
	-f qcow2 -o cluster_size=512 100T
	-f qcow2 100000000000000000
	-f qcow2 -o cluster_size=1000 1M
	-f qcow2 -o bogus=1 1M
	-f qcow2 -o compat=0.10,lazy_refcounts=on 1M
	-f qcow2 -b missing.qcow2 -F qcow2 1M
	-o cluster_size=4k 1M
	-b exist -F raw
	EOF
	# without -f both make raw (qemu-img's default): same line, same file
	rm -f dq.img dc.img
	a=$(qemu-img create dq.img 1M | sed 's/dq.img/X/')
	b=$("$COWPOOL" create dc.img 1M | sed 's/dc.img/X/')
	expect_eq "create without -f: output" "$a" "$b"
	expect_eq "create without -f: format" "$(qemu-img info --output=json dq.img |
		grep '"format"')" "$(qemu-img info --output=json dc.img | grep '"format"')"
	"$COWPOOL" create -q -f qcow2 exist 100000000000000000 2>/dev/null &&
		fail "create of an unrepresentable size accepted"
	expect_eq "existing file left alone by a refused create" keep "$(cat exist)"
fi

# ---- numbers in qemu-img's grammar --------------------------------------------------
if want numbers; then
	for n in 0x1000 0X200 1.5M 1.5k 0.5k 1.k 1.0 1024.0 +5 " 1024" 1.5E 1.0000001k \
		 1.1 1.25B 1e3 1.5e3 .5M 0x 0x1.8 "5 " -1 1kib; do
		rm -f q.img c.img
		a=$(qemu-img create -f raw q.img "$n" 2>/dev/null | grep -o 'size=[0-9]*')
		b=$("$COWPOOL" create -f raw c.img "$n" 2>/dev/null | grep -o 'size=[0-9]*')
		expect_eq "create size '$n'" "$a" "$b"
	done
	qemu-img create -q -f raw n.raw 1M
	"$COWPOOL" bench -q -w -c 4 -s 4k --pattern=0x5a -f raw n.raw >/dev/null 2>&1 ||
		"$COWPOOL" bench -w -c 4 -s 4k --pattern=0x5a -f raw n.raw >/dev/null ||
		fail "bench --pattern=0x5a refused"
	qemu-io -f raw -c 'read -q -P 0x5a 0 16k' n.raw | grep -q fail &&
		fail "bench --pattern=0x5a did not write 0x5a" || ok
	"$COWPOOL" io -f raw -c 'write -q -P 0x5b 0x1000 1.5k' n.raw && ok || fail "io write 0x1000 1.5k"
	qemu-io -f raw -c 'read -q -P 0x5b 4096 1536' n.raw | grep -q fail &&
		fail "io write at 0x1000 of 1.5k landed elsewhere" || ok
	rm -f rc.qcow2
	"$COWPOOL" create -q -f qcow2 -o refcount_bits=0x10 rc.qcow2 1M && ok ||
		fail "refcount_bits=0x10 refused (qemu-img takes it)"
fi

# ---- measure: unrepresentable sizes ------------------------------------------------
if want measure; then
	while read -r args; do
		# shellcheck disable=SC2086
		qemu-img measure -O qcow2 $args >q.out 2>/dev/null
		q=$?
		# shellcheck disable=SC2086
		"$COWPOOL" measure -O qcow2 $args >c.out 2>/dev/null
		expect_eq "measure $args: exit status" $q $?
		[ $q -ne 0 ] || cmp -s q.out c.out && ok || fail "measure $args: output differs"
	done <<-'EOF'
	--size 128G -o cluster_size=512
	--size 137438953473 -o cluster_size=512
	--size 137438986240 -o cluster_size=512
	--size 100T -o cluster_size=512
	--size 64P
	--size 100000000000000000
	--size 2E -o cluster_size=2M
	--size 64T -o cluster_size=16k,extended_l2=on
	--size 65T -o cluster_size=16k,extended_l2=on
	EOF
fi

# ---- resize ----------------------------------------------------------------------------
if want resize; then
	for f in qcow2 raw; do
		for sz in 1000000 2000001 2096640 +100 -512; do
			rm -f q.$f c.$f
			qemu-img create -q -f $f q.$f 2M
			cp q.$f c.$f
			qemu-img resize -q --shrink -f $f q.$f -- $sz 2>/dev/null
			q=$?
			"$COWPOOL" resize -q --shrink -f $f c.$f $sz 2>/dev/null
			expect_eq "resize $f to $sz: exit status" $q $?
			qemu-img info -f $f --output=json q.$f >qi.json
			qemu-img info -f $f --output=json c.$f >ci.json
			a=$(json_member qi.json virtual-size)
			b=$(json_member ci.json virtual-size)
			expect_eq "resize $f to $sz: virtual size" "$a" "$b"
		done
	done
	for cs in 512 64k 2M; do
		for ex in off on; do
			[ $cs = 512 ] && [ $ex = on ] && continue
			rm -f q.qcow2 c.qcow2
			qemu-img create -q -f qcow2 -o cluster_size=$cs,extended_l2=$ex q.qcow2 1M
			cp q.qcow2 c.qcow2
			qemu-img resize -q --preallocation=metadata q.qcow2 +16M
			"$COWPOOL" resize -q --preallocation=metadata c.qcow2 +16M ||
				fail "resize --preallocation=metadata cs=$cs"
			qemu-img check -q c.qcow2 && ok || fail "check after metadata resize"
			qd=$(du -k q.qcow2 | cut -f1)
			cd_=$(du -k c.qcow2 | cut -f1)
			[ "$cd_" -le $((qd + 1024)) ] && ok ||
				fail "resize --preallocation=metadata cs=$cs extl2=$ex: ${cd_}k on disk, qemu-img ${qd}k"
			qemu-img compare -q q.qcow2 c.qcow2 && ok || fail "content after metadata resize"
		done
	done
fi

# ---- write -z ------------------------------------------------------------------------
# map_runs IMG: qemu-img map, offsets dropped, adjacent runs of equal flags
# merged (host contiguity is not what is compared)
map_runs()
{
	qemu-img map --output=json "$1" | tr -d ' ' | tr '}' '\n' |
		sed -n 's/.*"start":\([0-9]*\),"length":\([0-9]*\),"depth":\([0-9]*\),"present":\([a-z]*\),"zero":\([a-z]*\),"data":\([a-z]*\).*/\1 \2 \3\4\5\6/p' |
		awk '{ if (NR > 1 && $3 == k && s + l == $1) { l += $2 } else { if (NR > 1) print s, l, k; s = $1; l = $2; k = $3 } }
		     END { print s, l, k }'
}
if want zeroes; then
	qemu-img create -q -f qcow2 zb.qcow2 4M
	qemu-io -c 'write -q -P 7 0 64k' -c 'write -q -P 7 1M 64k' zb.qcow2
	for o in cluster_size=4k cluster_size=64k cluster_size=2M \
		 cluster_size=64k,extended_l2=on cluster_size=2M,extended_l2=on \
		 cluster_size=64k,compat=0.10; do
		for bk in no yes; do
			B=()
			[ $bk = yes ] && B=(-b zb.qcow2 -F qcow2)
			for cmd in "write -z 4k 60k" "write -z 1k 3k" "write -z -u 512 1M" \
				   "write -z 3k 2M" "write -z 0 4M"; do
				for t in q c; do
					rm -f $t.qcow2
					qemu-img create -q -f qcow2 -o $o "${B[@]}" $t.qcow2 4M
				done
				qemu-io -c "$cmd" q.qcow2 >/dev/null
				"$COWPOOL" io -c "$cmd" c.qcow2 >/dev/null || fail "$o: $cmd"
				expect_eq "$o backing=$bk '$cmd': allocation" "$(map_runs q.qcow2)" "$(map_runs c.qcow2)"
				qemu-img compare -q q.qcow2 c.qcow2 && ok || fail "$o '$cmd': content"
				qemu-img check -q c.qcow2 && ok || fail "$o '$cmd': check"
			done
		done
	done
fi

# ---- raw files of sizes off 512 --------------------------------------------------
if want raw512; then
	head -c 1000100 /dev/urandom >odd.raw
	for cmd in "info odd.raw" "info --output=json odd.raw" "map odd.raw" \
		   "map --output=json odd.raw" "measure -O qcow2 odd.raw" \
		   "measure -O raw odd.raw" "compare odd.raw odd.raw"; do
		# shellcheck disable=SC2086
		expect_eq "$cmd" "$(qemu-img $cmd 2>&1)" "$("$COWPOOL" $cmd 2>&1)"
	done
	for f in raw qcow2; do
		rm -f q.$f c.$f
		qemu-img convert -O $f odd.raw q.$f
		"$COWPOOL" convert -O $f odd.raw c.$f || fail "convert odd.raw to $f"
		qemu-img compare -q q.$f c.$f && ok || fail "convert odd.raw to $f: content"
		expect_eq "convert odd.raw to $f: virtual size" \
			"$(qemu-img info q.$f | grep 'virtual size')" "$(qemu-img info c.$f | grep 'virtual size')"
	done
	expect_eq "convert to raw: file length" "$(stat -c %s q.raw)" "$(stat -c %s c.raw)"
	rm -f q.raw c.raw
	qemu-img create -q -f raw q.raw 1000
	"$COWPOOL" create -q -f raw c.raw 1000
	expect_eq "create -f raw 1000: file length" "$(stat -c %s q.raw)" "$(stat -c %s c.raw)"
fi

cp_finish
