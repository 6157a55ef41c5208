#!/bin/sh
# Writes a Docker Compose file for the lottery server and N agencies.
# Usage: sh generar-compose.sh <output-file> <N>   (bash ... and ./... work too)
# Builds bin/compose from this repository (wherever the script is called from)
# and runs it; bad arguments exit 2 before anything is built or written.
# POSIX sh. The repository is found from the script's own path ($0), so run
# the script as a file (sh file, bash file, ./file), not sourced or piped
# into a shell.
set -eu
unset CDPATH

usage() {
	echo "usage: $0 <output-file> <agencies: integer from 0 to 252>" >&2
	if [ $# -gt 0 ]; then
		echo "error: $1" >&2
	fi
	exit 2
}

[ $# -eq 2 ] || usage "want 2 arguments, got $#"
output=$1
agencies=$2
[ -n "$output" ] || usage "output file is empty"
[ "$output" != "-" ] || usage "output file must be a path, not '-'"
# 0, or 1 to 9 digits without a leading zero.
case $agencies in
'' | *[!0-9]* | 0?*) usage "agencies must be a non-negative integer, got '$agencies'" ;;
esac
[ ${#agencies} -le 9 ] || usage "agencies must be a non-negative integer, got '$agencies'"
# compose.MaxAgencies: one address each on the Compose network's /24.
[ "$agencies" -le 252 ] || usage "agencies must be at most 252 (one address each on the Compose network), got '$agencies'"

case $0 in
*/*) dir=${0%/*} ;;
*) dir=. ;;
esac
root=$(cd -- "$dir" && pwd)
(cd -- "$root" && go build -o bin/compose ./compose/cmd/compose)
"$root/bin/compose" --agencies "$agencies" --output "$output"
echo "wrote $output for $agencies agencies"
