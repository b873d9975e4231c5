# Sourced by scripts/test: makes sure the page test (tests/page.rs) can drive
# a real browser: Debian's chromium and chromium-driver (installed with apt
# when missing) and the pinned Selenium from PyPI under .tools/.

# 4.50: the newest whose dependencies the registry this machine reaches can
# satisfy (4.53 wants a certifi it does not have).
SELENIUM_PIN="4.50.0"

ensure_browser() {
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        echo "Installing Debian's chromium and chromium-driver (apt) for the page test…" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        export DEBIAN_FRONTEND=noninteractive
        if ! "${sudo[@]}" apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; then
            "${sudo[@]}" apt-get update -q >/dev/null
            "${sudo[@]}" apt-get install -y -q chromium chromium-driver >/dev/null
        fi
    fi
    local dir=".tools/selenium-$SELENIUM_PIN"
    if ! PYTHONPATH="$dir" python3 -c "import selenium" 2>/dev/null; then
        echo "Installing Selenium $SELENIUM_PIN into .tools/ (PyPI)…" >&2
        # --target keeps it inside the checkout: no virtualenv, no system packages touched.
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --root-user-action=ignore --target "$dir" "selenium==$SELENIUM_PIN" >&2
    fi
    export ADCLICK_SELENIUM_PATH="$PWD/$dir"
    export ADCLICK_CHROMIUM="$(command -v chromium)"
    export ADCLICK_CHROMEDRIVER="$(command -v chromedriver)"
}
