# SPDX-License-Identifier: GPL-2.0-or-later
# bash completion for cowpool.  It asks cowpool itself: the commands from
# `cowpool --help`, a command's options and verbs from `cowpool CMD --help`,
# so it never drifts from the program it completes.

_cowpool_commands()
{
	"$1" --help 2>/dev/null | awk '/^Command syntax:/ { on = 1; next }
		on && /^  [a-z]/ { print $1 } on && /^$/ { exit }'
}

# The options and verbs of a command (verbs: the word after the command
# in its usage lines, for the daemon commands).
_cowpool_words()
{
	local prog=$1 cmd=$2 verb=$3
	"$prog" "$cmd" --help 2>&1 | awk -v cmd="$cmd" -v verb="$verb" '
		{
			# a daemon verb line: only the verb being completed
			for (i = 1; i < NF; i++)
				if ($i == cmd && $(i + 1) ~ /^[a-z]/ && verb != "" &&
				    $(i + 1) != verb)
					next
			for (i = 1; i <= NF; i++) {
				w = $i
				if ($(i - 1) == cmd && w ~ /^[a-z][a-z-]*$/ && verb == "")
					print w
				gsub(/[][|,]/, " ", w)
				n = split(w, parts, " ")
				for (k = 1; k <= n; k++) {
					p = parts[k]
					sub(/=.*/, "=", p)
					if (p ~ /^--?[A-Za-z][A-Za-z0-9-]*=?$/)
						print p
				}
			}
		}' | sort -u
}

_cowpool()
{
	local cur prev cmd="" verb="" i prog=${COMP_WORDS[0]}
	COMPREPLY=()
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD - 1]}
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--socket) ((i++)) ;;
		-*) ;;
		*)
			if [ -z "$cmd" ]; then
				cmd=${COMP_WORDS[i]}
			elif [ -z "$verb" ]; then
				verb=${COMP_WORDS[i]}
			fi
			;;
		esac
	done
	case $prev in
	-f | -F | -O | --format)
		COMPREPLY=($(compgen -W "qcow2 raw" -- "$cur"))
		return
		;;
	-t | -T | --cache)
		COMPREPLY=($(compgen -W "none writeback writethrough directsync unsafe" -- "$cur"))
		return
		;;
	-i | --aio)
		COMPREPLY=($(compgen -W "io_uring native threads" -- "$cur"))
		return
		;;
	--output)
		COMPREPLY=($(compgen -W "human json" -- "$cur"))
		return
		;;
	--socket | -k | --pid-file | --tls-creds | --tls-psk | -b | -B)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	esac
	if [ -z "$cmd" ]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--help --version --socket" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$(_cowpool_commands "$prog")" -- "$cur"))
		fi
		return
	fi
	local words
	words=$(_cowpool_words "$prog" "$cmd" "$verb")
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(grep -- '^-' <<<"$words")" -- "$cur"))
		[[ ${COMPREPLY[0]-} == *= ]] && compopt -o nospace 2>/dev/null
		return
	fi
	if [ -z "$verb" ] && grep -q '^[a-z]' <<<"$words"; then
		COMPREPLY=($(compgen -W "$(grep '^[a-z]' <<<"$words")" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -f -- "$cur"))
}
complete -F _cowpool cowpool
