#!/usr/bin/env bash
# Regenerates draw/fonts/DejaVuSans-subset.ttf: DejaVu Sans cut down to the characters siamlab's
# pictures draw (ASCII, Latin-1, Latin Extended-A, Greek, and a few signs: – — ‘ ’ “ ” • … ‰ → ≈
# ≠ ≤ ≥ − × ± µ ²). Needs fontTools (`pip install fonttools`) and the Debian package fonts-dejavu-core.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pyftsubset /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
  --unicodes="U+0020-007E,U+00A0-017F,U+0370-03FF,U+2013-2014,U+2018-201D,U+2022,U+2026,U+2030,U+2190-2193,U+2212,U+2248,U+2260,U+2264-2265,U+FFFD" \
  --layout-features='kern' --no-hinting --desubroutinize \
  --output-file="$here/draw/fonts/DejaVuSans-subset.ttf"
