# find_python VERSION: print the path of a working python$VERSION (e.g. 3.13), or fail. Sourced by the scripts.
# Looks on PATH, then in pyenv's and Homebrew's install folders (a pyenv shim that is not enabled does not count).
find_python() {
  local version="$1" candidate
  for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version" \
                   /opt/homebrew/bin/"python$version" /usr/local/bin/"python$version" /usr/bin/"python$version"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys' >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}
