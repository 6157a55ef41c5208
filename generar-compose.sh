#!/usr/bin/env bash
# Writes a Docker Compose file for the lottery server and N agencies.
# Usage: ./generar-compose.sh <output-file> <N>
# Builds bin/compose from this repository (wherever the script is called from)
# and runs it; bad arguments exit 2 before anything is built or written.
set -euo pipefail

usage() {
	echo "usage: $0 <output-file> <agencies: integer >= 0>" >&2
	if [[ $# -gt 0 ]]; then
		echo "error: $1" >&2
	fi
	exit 2
}

[[ $# -eq 2 ]] || usage "want 2 arguments, got $#"
output=$1
agencies=$2
[[ -n $output ]] || usage "output file is empty"
[[ $output != "-" ]] || usage "output file must be a path, not '-'"
[[ $agencies =~ ^(0|[1-9][0-9]{0,8})$ ]] || usage "agencies must be a non-negative integer, got '$agencies'"

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
(cd -- "$root" && go build -o bin/compose ./compose/cmd/compose)
"$root/bin/compose" --agencies "$agencies" --output "$output"
echo "wrote $output for $agencies agencies"
