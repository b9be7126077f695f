#!/usr/bin/env bash
# Fetch the dev-set PDF corpus from Debian packages.
#
# Usage: benchmarks/devset/fetch.sh [OUTPUT_DIR]
#   OUTPUT_DIR defaults to <repo>/benchmarks/data/devset.
#
# Downloads the packages with `apt-get download` (needs root, or at least a
# readable apt cache), extracts them with `dpkg -x`, and copies only the chosen
# PDFs, flat, under stable names. Each PDF's page count is checked against the
# expected value below, since page labels in questions.jsonl depend on it.
# Idempotent: files that already exist with the right page count are kept.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
OUT_DIR="${1:-$REPO_ROOT/benchmarks/data/devset}"

# name|package|path inside the package|expected pages
# A path ending in .gz is decompressed (maxima-doc ships its book gzipped).
# Versions used when labelling (Debian bookworm): octave-doc 7.3.0-2,
# asymptote-doc 2.85+ds-1, r-cran-lme4 1.1-31-1, r-cran-xts 0.13.0-1,
# r-cran-survival 3.5-3-1, r-cran-aer 1.2-10-1, maxima-doc 5.46.0-11,
# auto-multiple-choice-doc-pdf 1.6.0-1.
DOCS=(
  "octave.pdf|octave-doc|usr/share/doc/octave/octave.pdf|1158"
  "asymptote.pdf|asymptote-doc|usr/share/doc/asymptote/asymptote.pdf|196"
  "lme4.pdf|r-cran-lme4|usr/lib/R/site-library/lme4/doc/lmer.pdf|51"
  "xts.pdf|r-cran-xts|usr/lib/R/site-library/xts/doc/xts.pdf|21"
  "survival.pdf|r-cran-survival|usr/lib/R/library/survival/doc/survival.pdf|98"
  "survival-timedep.pdf|r-cran-survival|usr/lib/R/library/survival/doc/timedep.pdf|30"
  "aer.pdf|r-cran-aer|usr/lib/R/site-library/AER/doc/AER.pdf|6"
  "maxima.pdf|maxima-doc|usr/share/doc/maxima-doc/maximabook-19-Sept-2004.pdf.gz|155"
  "amc.pdf|auto-multiple-choice-doc-pdf|usr/share/doc/auto-multiple-choice/auto-multiple-choice.en.pdf|101"
)

die() { echo "fetch.sh: error: $*" >&2; exit 1; }

command -v pdfinfo >/dev/null 2>&1 || die "pdfinfo not found (install poppler-utils)"

page_count() {
  pdfinfo "$1" 2>/dev/null | awk '/^Pages:/ {print $2}'
}

mkdir -p "$OUT_DIR"

# Which documents are missing (or have the wrong page count)?
missing_pkgs=()
for entry in "${DOCS[@]}"; do
  IFS='|' read -r name pkg _path expected <<<"$entry"
  dest="$OUT_DIR/$name"
  if [[ -f "$dest" ]]; then
    got="$(page_count "$dest")"
    if [[ "$got" == "$expected" ]]; then
      continue
    fi
    echo "fetch.sh: $dest has ${got:-unknown} pages, expected $expected; re-fetching" >&2
    rm -f "$dest"
  fi
  if [[ ! " ${missing_pkgs[*]-} " == *" $pkg "* ]]; then
    missing_pkgs+=("$pkg")
  fi
done

if [[ ${#missing_pkgs[@]} -eq 0 ]]; then
  echo "fetch.sh: all ${#DOCS[@]} PDFs present in $OUT_DIR"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; this script needs a Debian/Ubuntu system"
command -v dpkg >/dev/null 2>&1 || die "dpkg not found; this script needs a Debian/Ubuntu system"

TMP_DIR="$(mktemp -d)"
trap 'rm -rf "$TMP_DIR"' EXIT
# apt drops privileges to _apt when downloading; let it write into the temp dir.
chmod 0777 "$TMP_DIR"

echo "fetch.sh: downloading ${missing_pkgs[*]}"
if ! (cd "$TMP_DIR" && apt-get download "${missing_pkgs[@]}"); then
  if [[ "$(id -u)" -ne 0 ]]; then
    die "apt-get download failed and we are not root, so cannot run 'apt-get update'.
Run 'sudo apt-get update' (or re-run this script as root) and try again."
  fi
  echo "fetch.sh: apt-get download failed; running apt-get update and retrying" >&2
  apt-get update
  (cd "$TMP_DIR" && apt-get download "${missing_pkgs[@]}") \
    || die "apt-get download failed for: ${missing_pkgs[*]}"
fi

for pkg in "${missing_pkgs[@]}"; do
  deb=( "$TMP_DIR"/"${pkg}"_*.deb )
  [[ -f "${deb[0]}" ]] || die "no .deb downloaded for $pkg"
  echo "fetch.sh: extracting $(basename "${deb[0]}")"
  dpkg -x "${deb[0]}" "$TMP_DIR/root"
done

status=0
for entry in "${DOCS[@]}"; do
  IFS='|' read -r name pkg path expected <<<"$entry"
  dest="$OUT_DIR/$name"
  [[ -f "$dest" ]] && continue
  src="$TMP_DIR/root/$path"
  [[ -e "$src" ]] || die "$path not found in package $pkg (package layout changed?)"
  if [[ "$src" == *.gz ]]; then
    command -v gzip >/dev/null 2>&1 || die "gzip not found (needed to unpack $path)"
    gzip -dc "$src" >"$TMP_DIR/$name" || die "could not decompress $path from package $pkg"
    src="$TMP_DIR/$name"
  fi
  got="$(page_count "$src")"
  if [[ "$got" != "$expected" ]]; then
    echo "fetch.sh: error: $name from $pkg has ${got:-unknown} pages, expected $expected." >&2
    echo "  The package version probably changed; questions.jsonl page labels may be wrong." >&2
    status=1
    continue
  fi
  cp -L "$src" "$dest"
  echo "fetch.sh: $name ($got pages)"
done

[[ $status -eq 0 ]] || die "page-count mismatch (see above); not all PDFs were installed"
echo "fetch.sh: done; PDFs in $OUT_DIR"
