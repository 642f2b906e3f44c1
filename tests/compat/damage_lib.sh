# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers shared by damage.sh and damage-snap.sh (sourced after lib.sh).

# qcheck_counts IMG: "corruptions leaks" from qemu-img check --output=json
qcheck_counts()
{
	qemu-img check --output=json "$1" >qcc.json 2>/dev/null
	local c l
	c=$(json_member qcc.json corruptions)
	l=$(json_member qcc.json leaks)
	echo "${c:-0} ${l:-0}"
}

# expect_not_worse TAG BEFORE IMG QRC CAFTER: where qemu-img check -r all
# cannot repair a class, cowpool's repair of IMG must not make it worse:
# no more corruptions and leaks than BEFORE ("corruptions leaks" of the
# damaged image), and no failing check (CAFTER: qemu-img check's exit
# status on IMG) unless the damaged image failed it too (QRC).
expect_not_worse()
{
	local tag=$1 before=$2 after cb lb ca la
	after=$(qcheck_counts "$3")
	read -r cb lb <<<"$before"
	read -r ca la <<<"$after"
	if { [ "$5" -ne 1 ] || [ "$4" -eq 1 ]; } &&
		[ "$ca" -le "$cb" ] && [ "$la" -le "$lb" ]; then
		ok
	else
		fail "$tag: cowpool check -r all made it worse: qemu-img check exit $5, corruptions/leaks $before -> $after"
	fi
}

# repair_both IMG: repair a copy of IMG with qemu-img check -r all
# (q.qcow2) and one with cowpool check -r all (c.qcow2); sets BEFORE
# ("corruptions leaks" of IMG), QRRC and CRRC (their exit statuses),
# QAFTER and CAFTER (qemu-img check on each afterwards).
repair_both()
{
	cp "$1" q.qcow2
	cp "$1" c.qcow2
	BEFORE=$(qcheck_counts "$1")
	run_capture qr qemu-img check -r all -f qcow2 q.qcow2
	QRRC=$RC
	run_capture cr "$COWPOOL" check -r all -f qcow2 c.qcow2
	CRRC=$RC
	run_capture qafter qemu-img check -f qcow2 q.qcow2
	QAFTER=$RC
	run_capture cafter qemu-img check -f qcow2 c.qcow2
	CAFTER=$RC
}
