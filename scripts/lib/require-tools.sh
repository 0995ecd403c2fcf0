# Sourced by the scripts that drive real programs. `require_tools cmd:package ...` exits 2
# (the scripts' "cannot run") naming every missing command and the Debian package that has
# it, so one run tells the user everything to install; nothing is installed from here.
require_tools() {
  local missing=() pkgs=() spec cmd pkg
  for spec in "$@"; do
    cmd="${spec%%:*}"; pkg="${spec#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1; then
      missing+=("$cmd"); pkgs+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$(basename "$0"): missing ${missing[*]}: apt-get install $(printf '%s\n' "${pkgs[@]}" | sort -u | tr '\n' ' ')" >&2
    exit 2
  fi
}
