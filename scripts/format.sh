#!/usr/bin/env bash
# Formats snapledger's C++ sources in place with Debian's clang-format 14 and the repository's
# .clang-format (Google style, 100 columns).
# Usage: scripts/format.sh [--check]
#   --check  change nothing; list every file that is not formatted, show how it differs, and
#            exit 1 if there is one (the ctest test format_check runs this)
# The files: every *.h and *.cc under common/ primary/ replica/ cli/ bench/ tests/ that git
# tracks (or that is new and not ignored); without git, every such file found there.
# CLANG_FORMAT names the binary to use; it must be version 14, as other versions format
# differently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "format: unknown option $1" >&2; exit 2 ;;
esac

dirs=(common primary replica cli bench tests)

find_clang_format() {
  local candidate
  for candidate in ${CLANG_FORMAT:-} clang-format-14 clang-format; do
    if command -v "$candidate" >/dev/null &&
        "$candidate" --version | grep -qE 'clang-format version 14\.'; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
if ! clang_format=$(find_clang_format); then
  echo "format: clang-format 14 not found (Debian 12's package clang-format;" \
    "scripts/install-deps.sh installs it)" >&2
  exit 1
fi

# Tracked files and new ones git does not ignore, when this is a git checkout git will read
# (it refuses a checkout owned by another user); otherwise every such file in the folders.
list_sources() {
  local pathspecs=() dir
  for dir in "${dirs[@]}"; do pathspecs+=("$dir/*.h" "$dir/*.cc"); done
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- "${pathspecs[@]}"
  else
    for dir in "${dirs[@]}"; do
      [ -d "$dir" ] && find "$dir" -type f \( -name '*.h' -o -name '*.cc' \) -print0
    done
  fi
}

files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] && files+=("$f")  # a tracked file deleted from the work tree is not there
done < <(list_sources | sort -zu)
if [ ${#files[@]} -eq 0 ]; then
  echo "format: no sources found under ${dirs[*]}" >&2
  exit 1
fi

if [ "$check" = 0 ]; then
  "$clang_format" -i --style=file "${files[@]}"
  echo "format: formatted ${#files[@]} files with $("$clang_format" --version)"
  exit 0
fi

bad=()
for f in "${files[@]}"; do
  "$clang_format" --dry-run --Werror --style=file "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -eq 0 ]; then
  echo "format: all ${#files[@]} files are formatted"
  exit 0
fi
shown=5
for f in "${bad[@]:0:$shown}"; do
  "$clang_format" --style=file "$f" | diff -u --label "$f" --label "$f (formatted)" "$f" - ||
    true
done
[ ${#bad[@]} -gt $shown ] && echo "... and $((${#bad[@]} - shown)) more files differ"
echo "format: ${#bad[@]} of ${#files[@]} files are not formatted:"
printf '  %s\n' "${bad[@]}"
echo "format: run scripts/format.sh to format them in place"
exit 1
