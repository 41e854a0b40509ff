#!/usr/bin/env bash
# Install the real agent CLIs (Codex CLI, Claude Code) for the conformance tests, from npm, at pinned
# versions, into the project's own folder .agent-clis/ (never globally). Quick when already there.
# Never fails the caller: without npm or a reachable registry it says why on one line and exits 0,
# and tests/test_cli_conformance.py is then skipped with that reason (kept in .agent-clis/REASON).
set -u

CODEX_VERSION="0.171.0"
CLAUDE_VERSION="2.1.332"

# No dirname: the script must work with a bare PATH too.
HERE="${BASH_SOURCE[0]%/*}"
[ "$HERE" = "${BASH_SOURCE[0]}" ] && HERE=.
ROOT="$(cd "$HERE/.." && pwd)"
DEST="$ROOT/.agent-clis"
STAMP="$DEST/.installed-codex-$CODEX_VERSION-claude-$CLAUDE_VERSION"

say_skip() {
    mkdir -p "$DEST" 2>/dev/null && printf '%s\n' "$1" >"$DEST/REASON" 2>/dev/null
    echo "install-agent-clis: $1; the CLI conformance tests will be skipped" >&2
    exit 0
}

if [ -f "$STAMP" ] && [ -x "$DEST/node_modules/.bin/codex" ] && [ -x "$DEST/node_modules/.bin/claude" ]; then
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    say_skip "npm is not on PATH (install Node.js 18+ and npm)"
fi

mkdir -p "$DEST" || say_skip "cannot create $DEST"
rm -f "$DEST/REASON"
# A package.json of our own, so npm installs here and not into a parent project.
if [ ! -f "$DEST/package.json" ]; then
    printf '{\n  "name": "wvo-batch-agent-clis",\n  "private": true\n}\n' >"$DEST/package.json"
fi

echo "install-agent-clis: installing @openai/codex@$CODEX_VERSION and @anthropic-ai/claude-code@$CLAUDE_VERSION into .agent-clis/ (once)" >&2
# No audit/fund/update-notifier traffic; a short fetch timeout so an unreachable registry fails fast.
if ! (cd "$DEST" && npm install --no-audit --no-fund --no-update-notifier --loglevel=error \
        --fetch-retries=0 --fetch-timeout=30000 --save-exact \
        "@openai/codex@$CODEX_VERSION" "@anthropic-ai/claude-code@$CLAUDE_VERSION" \
        >"$DEST/npm-install.log" 2>&1); then
    say_skip "npm install failed (registry unreachable?), see .agent-clis/npm-install.log"
fi

if [ ! -x "$DEST/node_modules/.bin/codex" ] || [ ! -x "$DEST/node_modules/.bin/claude" ]; then
    say_skip "npm install finished but codex or claude is missing under .agent-clis/node_modules/.bin"
fi

rm -f "$DEST"/.installed-*
touch "$STAMP"
echo "install-agent-clis: installed" >&2
exit 0
